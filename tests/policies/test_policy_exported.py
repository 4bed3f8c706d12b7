"""Exported models (openpi.policies.exported): same outputs as the live pi0 / pi0.5 / pi0-FAST model, batch
polymorphism, integrity checks, processor selection, shipped tokenizers, and loading from s3://."""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import shutil

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

# The tiny pi0 helpers live with the model tests (tests/ is on pytest's pythonpath).
from models import test_pi0
from openpi.models import model as _model
from openpi.models import pi0_fast
from openpi.models import tokenizer
from openpi.policies import exported as _exported
from openpi.policies import policy as _policy
from openpi.shared import normalize as _normalize
from openpi.training import debug_data
from shared import file_modes

# Float32 models; the exported computation is the same XLA program up to fusion choices.
ATOL = 1e-5


def _stats(dim: int, offset: float) -> dict[str, _normalize.NormStats]:
    stats = _normalize.NormStats(mean=np.full(dim, offset), std=np.ones(dim), q01=np.full(dim, -1.0), q99=np.ones(dim))
    return {"state": stats, "actions": stats}


@pytest.fixture(scope="module")
def tiny() -> tuple:
    config = test_pi0.tiny_config()
    model = test_pi0.tiny_model(config)
    return config, model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.fixture(scope="module")
def exported_dir(tiny, tmp_path_factory) -> pathlib.Path:
    config, _, params = tiny
    out = tmp_path_factory.mktemp("exported") / "model"
    processors = {"robot_a": _stats(config.action_dim, 0.0), "robot_b": _stats(config.action_dim, 1.0)}
    with file_modes.umask():
        return _exported.export_model(config, params, out, processors=processors, num_steps=3)


@pytest.fixture(scope="module")
def loaded(exported_dir) -> _exported.ExportedModel:
    return _exported.ExportedModel.load(exported_dir)


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def _live_sample(model, observation, rng, **kwargs) -> np.ndarray:
    graphdef, state = nnx.split(model)

    @jax.jit
    def sample(state, observation, rng):
        return nnx.merge(graphdef, state).sample_actions(rng, observation, num_steps=3, **kwargs)

    return np.asarray(sample(state, observation, rng))


def _exported_sample(loaded, observation, rng, **kwargs) -> np.ndarray:
    graphdef, state = nnx.split(loaded)

    @jax.jit
    def sample(state, observation, rng):
        return nnx.merge(graphdef, state).sample_actions(rng, observation, **kwargs)

    return np.asarray(sample(state, observation, rng))


@pytest.mark.parametrize("batch_size", [1, 4])
def test_exported_sampling_matches_the_live_model_for_the_same_rng(tiny, loaded, batch_size):
    config, model, _ = tiny
    observation = test_pi0._random_observation(config, batch_size, seed=batch_size)
    rng = jax.random.key(7)
    expected = _live_sample(model, observation, rng)
    actual = _exported_sample(loaded, observation, rng)
    assert actual.shape == (batch_size, config.action_horizon, config.action_dim)
    np.testing.assert_allclose(actual, expected, atol=ATOL)


def test_exported_sampling_matches_the_live_model_for_the_same_noise(tiny, loaded):
    config, model, _ = tiny
    observation = test_pi0._random_observation(config, 2, seed=3)
    noise = jax.random.normal(jax.random.key(3), (2, config.action_horizon, config.action_dim))
    expected = _live_sample(model, observation, jax.random.key(0), noise=noise)
    actual = _exported_sample(loaded, observation, jax.random.key(99), noise=noise)
    np.testing.assert_allclose(actual, expected, atol=ATOL)
    assert not np.allclose(actual, _exported_sample(loaded, observation, jax.random.key(99)), atol=1e-3)


def test_artefact_holds_the_serialized_sampler_weights_metadata_and_processors(tiny, exported_dir):
    config, _, _ = tiny
    metadata = json.loads((exported_dir / _exported.METADATA_FILE).read_text())
    assert metadata["format"] == _exported.FORMAT_NAME
    assert metadata["format_version"] == _exported.FORMAT_VERSION
    assert metadata["model_type"] == "pi0"
    assert (metadata["action_horizon"], metadata["action_dim"], metadata["max_token_len"]) == (4, 8, 6)
    assert metadata["image_keys"] == list(_model.IMAGE_KEYS)
    assert metadata["image_resolution"] == list(config.image_resolution)
    assert metadata["platforms"] == ["cpu", "cuda"]
    assert (metadata["num_steps"], metadata["discrete_state_input"], metadata["use_quantile_norm"]) == (3, False, False)
    assert metadata["versions"]["jax"] == jax.__version__
    assert sorted(path.name for path in (exported_dir / "processors").iterdir()) == ["robot_a", "robot_b"]
    params = _model.restore_params(exported_dir / "params", restore_type=np.ndarray)
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == sum(
        leaf.size for leaf in jax.tree.leaves(nnx.state(test_pi0.tiny_model(config), nnx.Param))
    )


def test_artefact_files_and_directories_are_as_readable_as_plain_writes_make_them(exported_dir):
    # Exported under file_modes.UMASK; the artefact directory itself was the staging directory renamed into place.
    assert file_modes.unexpected_modes(exported_dir) == {}


def test_weights_are_arguments_not_constants_of_the_serialized_computation(tiny, exported_dir, loaded):
    _, _, params = tiny
    params_avals, _, noise_aval = _exported.input_avals(loaded.exported)
    assert jax.tree.structure(params_avals) == jax.tree.structure(params)
    assert noise_aval.shape[1:] == (4, 8)
    doubled = jax.tree.map(lambda leaf: leaf * 2, loaded.params.get_value())
    observation = test_pi0._random_observation(test_pi0.tiny_config(), 1)
    changed_model = type(loaded)(loaded.exported, doubled, dict(loaded.metadata), {}, source="in-memory")
    rng = jax.random.key(0)
    assert not np.allclose(
        _exported_sample(changed_model, observation, rng), _exported_sample(loaded, observation, rng)
    )


def test_loaded_norm_stats_equal_the_exported_ones(loaded, tiny):
    config, _, _ = tiny
    assert loaded.processor_names() == ["robot_a", "robot_b"]
    np.testing.assert_array_equal(loaded.norm_stats("robot_b")["state"].mean, np.ones(config.action_dim))


def test_processor_given_by_name_wins(loaded):
    assert loaded.select_processor("robot_b", env_default="robot_a") == "robot_b"


def test_unknown_processor_name_is_an_error_listing_the_available_ones(loaded):
    with pytest.raises(_exported.ExportedModelError, match=r"'robot_c' not found.*\['robot_a', 'robot_b'\]"):
        loaded.select_processor("robot_c")


def test_env_default_processor_is_used_when_none_is_given(loaded):
    assert loaded.select_processor(None, env_default="robot_b") == "robot_b"


def test_several_processors_without_a_usable_default_is_an_error_listing_them(loaded):
    with pytest.raises(_exported.ExportedModelError, match=r"--policy.processor.*\['robot_a', 'robot_b'\]"):
        loaded.select_processor(None, env_default="robot_z")
    with pytest.raises(_exported.ExportedModelError, match=r"none was chosen"):
        loaded.select_processor()


def test_the_only_processor_is_used_when_the_env_default_is_absent(tiny, exported_dir, tmp_path):
    single = _copy(exported_dir, tmp_path / "single")
    shutil.rmtree(single / "processors" / "robot_b")
    model = _exported.ExportedModel.load(single)
    assert model.select_processor(None, env_default="robot_z") == "robot_a"


def test_corrupt_sampler_is_refused_with_a_clear_error(exported_dir, tmp_path):
    broken = _copy(exported_dir, tmp_path / "broken")
    data = bytearray((broken / _exported.SAMPLER_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / _exported.SAMPLER_FILE).write_bytes(bytes(data))
    with pytest.raises(_exported.ExportedModelError, match=r"sample_actions.jax_export: corrupt"):
        _exported.ExportedModel.load(broken)


def test_undeserializable_sampler_is_refused_with_a_clear_error(exported_dir, tmp_path):
    broken = _copy(exported_dir, tmp_path / "broken")
    garbage = b"not a flatbuffer"
    (broken / _exported.SAMPLER_FILE).write_bytes(garbage)
    metadata = json.loads((broken / _exported.METADATA_FILE).read_text())
    metadata["sampler_sha256"] = hashlib.sha256(garbage).hexdigest()
    (broken / _exported.METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(_exported.ExportedModelError, match=r"cannot be deserialized by jax"):
        _exported.ExportedModel.load(broken)


def test_newer_format_version_is_refused_naming_both_versions(exported_dir, tmp_path):
    newer = _copy(exported_dir, tmp_path / "newer")
    metadata = json.loads((newer / _exported.METADATA_FILE).read_text())
    metadata["format_version"] = _exported.FORMAT_VERSION + 1
    (newer / _exported.METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(_exported.ExportedModelError, match=r"format version 3, but this openpi reads versions 1, 2"):
        _exported.ExportedModel.load(newer)


def test_format_version_1_pi0_models_still_load_and_serve_the_same(exported_dir, loaded, tmp_path):
    old = _copy(exported_dir, tmp_path / "old")
    metadata = json.loads((old / _exported.METADATA_FILE).read_text())
    for field in ("discrete_state_input", "use_quantile_norm"):
        del metadata[field]
    (old / _exported.METADATA_FILE).write_text(json.dumps({**metadata, "format_version": 1}))
    model = _exported.ExportedModel.load(old)
    assert (model.model_type, model.use_quantile_norm) == (_model.ModelType.PI0, False)
    observation = test_pi0._random_observation(test_pi0.tiny_config(), 1)
    rng = jax.random.key(2)
    np.testing.assert_array_equal(_exported_sample(model, observation, rng), _exported_sample(loaded, observation, rng))


@pytest.mark.parametrize(("version", "model_type"), [(1, "pi05"), (2, "pi1")])
def test_model_types_the_format_version_does_not_have_are_refused(exported_dir, tmp_path, version, model_type):
    other = _copy(exported_dir, tmp_path / "other")
    metadata = json.loads((other / _exported.METADATA_FILE).read_text())
    (other / _exported.METADATA_FILE).write_text(
        json.dumps({**metadata, "format_version": version, "model_type": model_type})
    )
    with pytest.raises(_exported.ExportedModelError, match=rf"field 'model_type' expected one of .*got '{model_type}'"):
        _exported.ExportedModel.load(other)


def test_directory_without_metadata_is_not_an_exported_model(tmp_path):
    (tmp_path / "params").mkdir()
    with pytest.raises(_exported.ExportedModelError, match=r"not an exported openpi model"):
        _exported.ExportedModel.load(tmp_path)


def test_missing_metadata_field_is_named(exported_dir, tmp_path):
    damaged = _copy(exported_dir, tmp_path / "damaged")
    metadata = json.loads((damaged / _exported.METADATA_FILE).read_text())
    del metadata["action_horizon"]
    (damaged / _exported.METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(_exported.ExportedModelError, match=r"field 'action_horizon' expected a int"):
        _exported.ExportedModel.load(damaged)


def test_weights_that_do_not_fit_the_computation_are_refused(exported_dir, tmp_path):
    mixed = _copy(exported_dir, tmp_path / "mixed")
    params = _model.restore_params(mixed / "params", restore_type=np.ndarray)
    params["state_proj"]["kernel"] = params["state_proj"]["kernel"][:5]
    shutil.rmtree(mixed / "params")
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(mixed / "params", {"params": params})
    with pytest.raises(_exported.ExportedModelError, match=r"(?s)params: params do not match.*state_proj/kernel"):
        _exported.ExportedModel.load(mixed)


def test_observation_of_the_wrong_shape_is_refused_naming_the_field(loaded):
    observation = test_pi0._random_observation(test_pi0.tiny_config(action_dim=5), 1)
    with pytest.raises(_exported.ExportedModelError, match=r"observation\['state'\]: expected shape \(batch, 8\)"):
        _exported_sample(loaded, observation, jax.random.key(0))


def test_other_num_steps_than_exported_is_refused(loaded):
    observation = test_pi0._random_observation(test_pi0.tiny_config(), 1)
    with pytest.raises(_exported.ExportedModelError, match=r"exported with 3 steps, got 10"):
        _exported_sample(loaded, observation, jax.random.key(0), num_steps=10)


def test_export_refuses_to_overwrite_an_existing_directory(tiny, exported_dir):
    config, _, params = tiny
    with pytest.raises(FileExistsError, match=r"already exists"):
        _exported.export_model(config, params, exported_dir, processors={})


def test_exported_model_loads_from_s3(exported_dir, loaded, anonymous_s3):
    url = anonymous_s3.publish_directory(exported_dir, "openpi-assets", "exported/tiny/model")
    remote = _exported.ExportedModel.load(url)
    observation = test_pi0._random_observation(test_pi0.tiny_config(), 1)
    rng = jax.random.key(1)
    np.testing.assert_array_equal(
        _exported_sample(remote, observation, rng), _exported_sample(loaded, observation, rng)
    )
    assert remote.processor_names() == loaded.processor_names()


# pi0.5: the flow sampler of pi0 with the state read from the prompt.


@pytest.mark.slow
def test_pi05_exported_sampling_matches_the_live_model(tmp_path):
    config = test_pi0.tiny_config(pi05=True)
    model = test_pi0.tiny_model(config)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    out = _exported.export_model(
        config, params, tmp_path / "pi05", processors={"robot": _stats(config.action_dim, 0.0)}, num_steps=3
    )
    metadata = json.loads((out / _exported.METADATA_FILE).read_text())
    assert (metadata["model_type"], metadata["discrete_state_input"], metadata["use_quantile_norm"]) == (
        "pi05",
        True,
        True,
    )
    loaded = _exported.ExportedModel.load(out)
    assert isinstance(loaded, _exported.ExportedFlowModel)
    observation = test_pi0._random_observation(config, 2, seed=5)
    rng = jax.random.key(4)
    np.testing.assert_allclose(
        _exported_sample(loaded, observation, rng), _live_sample(model, observation, rng), atol=ATOL
    )


# pi0-FAST: token decoding, with the tokenizers shipped beside the weights.

FAST_HORIZON, FAST_DIM, FAST_TOKENS, FAST_STEPS = 4, 3, 64, 6


def _tiny_fast_config() -> pi0_fast.Pi0FASTConfig:
    return pi0_fast.Pi0FASTConfig(
        dtype="float32",
        paligemma_variant=test_pi0.TINY_GEMMA,
        vision_variant=test_pi0.TINY_VISION,
        vocab_size=debug_data.FAST_TOKENIZER_VOCAB_SIZE,
        image_resolution=(64, 64),
        action_dim=FAST_DIM,
        action_horizon=FAST_HORIZON,
        max_token_len=FAST_TOKENS,
        remat=False,
    )


@pytest.fixture(scope="module")
def fast_tokenizer(tmp_path_factory) -> tokenizer.FASTTokenizer:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path_factory.mktemp("openpi_data")))
        return debug_data.make_fast_tokenizer(FAST_TOKENS, FAST_HORIZON, FAST_DIM)


@pytest.fixture(scope="module")
def fast(tmp_path_factory, fast_tokenizer) -> tuple:
    """A tiny pi0-FAST, its params, its exported directory and the loaded exported model."""
    config = _tiny_fast_config()
    model = test_pi0.tiny_model(config)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    out = _exported.export_model(
        config,
        params,
        tmp_path_factory.mktemp("exported_fast") / "model",
        processors={"robot": _stats(FAST_DIM, 0.0)},
        max_decoding_steps=FAST_STEPS,
        tokenizer_model=fast_tokenizer.model_proto(),
        fast_action_tokenizer=fast_tokenizer.action_tokenizer,
    )
    return config, model, params, out, _exported.ExportedModel.load(out)


def _fast_observation(config, prompt_lengths, seed: int) -> _model.Observation:
    rng = np.random.default_rng(seed)
    batch_size = len(prompt_lengths)
    mask = np.arange(config.max_token_len)[None, :] < np.asarray(prompt_lengths)[:, None]
    tokens = np.where(mask, rng.integers(2, config.vocab_size, (batch_size, config.max_token_len)), 0)
    height, width = config.image_resolution
    return _model.Observation(
        images={
            k: jnp.asarray(rng.uniform(-1, 1, (batch_size, height, width, 3)), jnp.float32) for k in config.image_keys
        },
        image_masks={k: jnp.ones((batch_size,), bool) for k in config.image_keys},
        state=jnp.zeros((batch_size, config.action_dim)),
        tokenized_prompt=jnp.asarray(tokens, jnp.int32),
        tokenized_prompt_mask=jnp.asarray(mask),
        token_ar_mask=jnp.zeros((batch_size, config.max_token_len), jnp.int32),
        token_loss_mask=jnp.zeros((batch_size, config.max_token_len), bool),
    )


@pytest.mark.parametrize(("prompt_lengths", "temperature"), [((7,), 0.0), ((5, 12, 9), 0.0), ((5, 12, 9), 0.8)])
def test_fast_exported_decoding_gives_the_live_model_tokens_for_the_same_rng(fast, prompt_lengths, temperature):
    config, model, _, _, loaded = fast
    observation = _fast_observation(config, prompt_lengths, seed=len(prompt_lengths))
    rng = jax.random.key(3)
    kwargs = {"max_decoding_steps": FAST_STEPS, "temperature": temperature}
    graphdef, state = nnx.split(model)
    expected = jax.jit(lambda state, obs, rng: nnx.merge(graphdef, state).sample_actions(rng, obs, **kwargs))(
        state, observation, rng
    )
    actual = _exported_sample(loaded, observation, rng, temperature=temperature)
    assert actual.shape == (len(prompt_lengths), FAST_STEPS)
    np.testing.assert_array_equal(actual, expected)


def test_fast_artefact_records_its_type_and_ships_both_tokenizers(fast, fast_tokenizer):
    _, _, _, out, loaded = fast
    metadata = json.loads((out / _exported.METADATA_FILE).read_text())
    assert (metadata["model_type"], metadata["max_decoding_steps"], metadata["use_quantile_norm"]) == (
        "pi0_fast",
        FAST_STEPS,
        True,
    )
    assert "num_steps" not in metadata
    assert isinstance(loaded, _exported.ExportedFASTModel)
    assert (out / _exported.TOKENIZER_FILE).read_bytes() == fast_tokenizer.model_proto()
    assert sorted(path.name for path in (out / _exported.FAST_TOKENIZER_DIR).iterdir()) == [
        "processor_config.json",
        "tokenizer.json",
    ]
    # No state in the computation: pi0-FAST reads it from the prompt.
    assert sorted(_exported.input_avals(loaded.exported)[1]) == [
        "image",
        "image_mask",
        "token_ar_mask",
        "tokenized_prompt",
        "tokenized_prompt_mask",
    ]


def test_fast_exported_model_reads_actions_from_tokens_offline(fast, fast_tokenizer, monkeypatch, tmp_path):
    _, _, _, out, _ = fast
    chunk = np.linspace(-1, 1, FAST_HORIZON * FAST_DIM).reshape(FAST_HORIZON, FAST_DIM)
    tokens, _, ar_mask, _ = fast_tokenizer.tokenize("pick", np.zeros(FAST_DIM), chunk)
    generated = tokens[ar_mask.astype(bool)]
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "empty_cache"))
    outputs = _exported.ExportedModel.load(out).model_transforms().outputs
    (extract,) = outputs
    actions = extract({"actions": generated.astype(np.float32)})["actions"]
    np.testing.assert_allclose(actions, chunk, atol=0.1)


def test_fast_tokens_that_encode_no_actions_give_zeros_and_a_warning(fast, caplog):
    (extract,) = fast[4].model_transforms().outputs
    with caplog.at_level(logging.WARNING):
        actions = extract({"actions": np.full(FAST_STEPS, 5.0, np.float32)})["actions"]
    np.testing.assert_array_equal(actions, np.zeros((FAST_HORIZON, FAST_DIM)))
    assert "returning zero actions" in caplog.text


def test_fast_exported_model_takes_only_its_own_decoding_options(fast):
    config, _, _, _, loaded = fast
    observation = _fast_observation(config, (4,), seed=0)
    with pytest.raises(_exported.ExportedModelError, match=r"exported with 6 steps, got 9"):
        _exported_sample(loaded, observation, jax.random.key(0), max_decoding_steps=9)
    with pytest.raises(ValueError, match=r"sample_kwargs: \['num_steps'\] are not options of ExportedFASTModel"):
        _policy.Policy(loaded, sample_kwargs={"num_steps": 10})


def test_fast_export_needs_both_tokenizers(fast, tmp_path, fast_tokenizer):
    config, _, params, _, _ = fast
    with pytest.raises(ValueError, match=r"tokenizer_model, fast_action_tokenizer: both required"):
        _exported.export_model(
            config, params, tmp_path / "m", processors={}, tokenizer_model=fast_tokenizer.model_proto()
        )
    assert not (tmp_path / "m").exists()


def test_fast_model_without_its_action_vocabulary_is_refused(fast, tmp_path):
    damaged = _copy(fast[3], tmp_path / "damaged")
    shutil.rmtree(damaged / _exported.FAST_TOKENIZER_DIR)
    with pytest.raises(_exported.ExportedModelError, match=r"fast_tokenizer/ is missing"):
        _exported.ExportedModel.load(damaged)
