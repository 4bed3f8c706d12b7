"""Exported models in the original openpi's layout (`graph` + orbax params + msgpack processors, as the README's
`s3://openpi-assets/exported/<name>/model`): built here with `jax.export` from a tiny pi0 wrapped to the original's
calling convention, then loaded through `ExportedModel.load`; same actions as the model itself, processor rules,
both norm-stats layouts, clear errors for incomplete directories, and loading from s3://."""

from __future__ import annotations

from collections.abc import Mapping
import pathlib
import shutil

import flax.nnx as nnx
import flax.serialization
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

# The tiny pi0 helpers live with the model tests (tests/ is on pytest's pythonpath).
from models import test_pi0
from openpi.models import model as _model
from openpi.models import pi0
from openpi.policies import exported as _exported
from openpi.policies import exported_original
from openpi.training import debug_data

# Float32 models; the exported computation is the same XLA program up to fusion choices.
ATOL = 1e-5
NUM_STEPS = 3
# The ALOHA_SIM env's default processor (serve_policy.DEFAULT_EXPORTED), stored in the `input_norms` layout.
ENV_DEFAULT_PROCESSOR = "huggingface_aloha_sim_transfer_cube"
# Stored as plain per-key files (`mean` / `std` / `q01` / `q99`, actions first in sorted order).
PLAIN_PROCESSOR = "trossen_biarm_single_base_cam_24dim"
OTHER_PROCESSOR = "openx_droid"
ALOHA_DIM = 14


def tiny_config() -> pi0.Pi0Config:
    """A tiny pi0 that reads the debug tokenizer's ids and a padded 14-d ALOHA state."""
    return test_pi0.tiny_config(action_dim=16, max_token_len=16, vocab_size=debug_data.TOKENIZER_VOCAB_SIZE)


def tiny_params(config: pi0.Pi0Config) -> dict:
    """The params of `test_pi0.tiny_model(config)`, made in one compiled call."""
    return jax.jit(lambda: nnx.to_pure_dict(nnx.state(test_pi0.tiny_model(config), nnx.Param)))()


def _stats_dict(dim: int, offset: float) -> dict[str, np.ndarray]:
    return {
        "mean": np.full(dim, offset, np.float32),
        "std": np.full(dim, 2.0 + offset, np.float32),
        "q01": np.full(dim, offset - 1.0, np.float32),
        "q99": np.full(dim, offset + 1.0, np.float32),
    }


# Each processor's files (`<sub>` → content); actions and state stats differ so that their roles can be told apart.
PROCESSORS: dict[str, dict[str, dict]] = {
    ENV_DEFAULT_PROCESSOR: {
        "normalize": {
            "input_norms": {"state": _stats_dict(ALOHA_DIM, 0.5)},
            "output_norms": {"actions": _stats_dict(ALOHA_DIM, 0.25)},
        }
    },
    PLAIN_PROCESSOR: {
        "normalize_actions": _stats_dict(ALOHA_DIM, 1.0),
        "normalize_state": {key: value for key, value in _stats_dict(ALOHA_DIM, 3.0).items() if key in ("mean", "std")},
    },
    OTHER_PROCESSOR: {
        "normalize": {"input_norms": {"state": _stats_dict(8, 0.0)}, "output_norms": {"actions": _stats_dict(8, 0.0)}}
    },
}


def _original_sampler(config: pi0.Pi0Config, params: dict) -> jax_export.Exported:
    """`config`'s sampling in the original's calling convention: `(params, rng_key_data, example, sample_kwargs) ->
    {"actions": [horizon, dim]}` on one unbatched example, the pi0 params under `decoder`."""
    cameras = list(_model.IMAGE_KEYS)
    height, width = config.image_resolution
    length = config.max_token_len

    def sample(params: dict, key_data: jax.Array, example: dict, sample_kwargs: dict) -> dict:
        model = config.load(params["decoder"], remove_extra_params=False)
        batch = jax.tree.map(lambda leaf: leaf[None], example)
        observation = _model.Observation.from_dict(
            {
                "image": {camera: batch["image"][camera] for camera in cameras},
                "image_mask": {camera: batch["image"][f"{camera}_mask"] for camera in cameras},
                "state": batch["state"],
                "tokenized_prompt": batch["prompt_tokens"],
                "tokenized_prompt_mask": batch["mask_input"].astype(bool),
            }
        )
        rng = jax.random.wrap_key_data(key_data)
        return {"actions": model.sample_actions(rng, observation, num_steps=sample_kwargs["num_steps"])[0]}

    spec = jax.ShapeDtypeStruct
    example = {
        "image": {
            **{camera: spec((height, width, 3), jnp.uint8) for camera in cameras},
            **{f"{camera}_mask": spec((), jnp.bool_) for camera in cameras},
        },
        "state": spec((config.action_dim,), jnp.float32),
        "prompt_tokens": spec((length,), jnp.int32),
        "mask_input": spec((length,), jnp.int32),
    }
    params_spec = jax.tree.map(lambda leaf: spec(leaf.shape, leaf.dtype), {"decoder": params})
    key_data = jax.random.key_data(jax.random.key(0))
    return jax_export.export(jax.jit(sample), platforms=("cpu", "cuda"))(
        params_spec, spec(key_data.shape, key_data.dtype), example, {"num_steps": spec((), jnp.int32)}
    )


def write_original_export(
    out: pathlib.Path, config: pi0.Pi0Config, params: dict, processors: Mapping[str, Mapping[str, dict]] = PROCESSORS
) -> pathlib.Path:
    """Writes a model directory in the original's layout: the orbax checkpoint `{"params": {"decoder": params}}`,
    `graph` beside it and `processors/<name>/<sub>/norm_stats.msgpack`."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(out, {"params": {"decoder": params}})
    (out / exported_original.GRAPH_FILE).write_bytes(_original_sampler(config, params).serialize())
    for name, files in processors.items():
        for sub, content in files.items():
            path = out / exported_original.PROCESSORS_DIR / name / sub / exported_original.NORM_STATS_FILE
            path.parent.mkdir(parents=True)
            path.write_bytes(flax.serialization.msgpack_serialize(content))
    return out


@pytest.fixture(scope="module")
def tiny() -> tuple[pi0.Pi0Config, dict]:
    config = tiny_config()
    return config, tiny_params(config)


@pytest.fixture(scope="module")
def original_dir(tiny, tmp_path_factory) -> pathlib.Path:
    return write_original_export(tmp_path_factory.mktemp("original") / "model", *tiny)


@pytest.fixture(scope="module")
def loaded(original_dir) -> _exported.ExportedModel:
    return _exported.ExportedModel.load(original_dir)


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def _observation(config: pi0.Pi0Config, batch_size: int, seed: int) -> _model.Observation:
    """A batch as the policy gives it to the model: images made from uint8 pixels, a state, prompt tokens."""
    rng = np.random.default_rng(seed)
    height, width = config.image_resolution
    length = config.max_token_len
    return _model.Observation.from_dict(
        {
            "image": {
                camera: jnp.asarray(rng.integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8))
                for camera in _model.IMAGE_KEYS
            },
            "image_mask": {camera: jnp.ones((batch_size,), bool) for camera in _model.IMAGE_KEYS},
            "state": jnp.asarray(rng.standard_normal((batch_size, config.action_dim)), jnp.float32),
            "tokenized_prompt": jnp.asarray(rng.integers(1, config.vocab_size, (batch_size, length)), jnp.int32),
            "tokenized_prompt_mask": jnp.asarray(np.arange(length) < length - 3 + np.arange(batch_size)[:, None]),
        }
    )


def _sample(model: _model.BaseModel, observation: _model.Observation, rng: jax.Array) -> np.ndarray:
    graphdef, state = nnx.split(model)

    @jax.jit
    def sample(state, observation, rng):
        return nnx.merge(graphdef, state).sample_actions(rng, observation, num_steps=NUM_STEPS)

    return np.asarray(sample(state, observation, rng))


def _row(observation: _model.Observation, index: int) -> _model.Observation:
    return jax.tree.map(lambda leaf: leaf[index : index + 1], observation)


@pytest.mark.slow
def test_original_export_samples_the_actions_of_the_model_it_was_exported_from(tiny, loaded):
    config, params = tiny
    assert isinstance(loaded, exported_original.OriginalExportedModel)
    live = config.load(params)
    observation = _observation(config, 2, seed=1)
    rng = jax.random.key(5)
    # A batch runs the unbatched graph once per observation, each with its own key.
    actual = _sample(loaded, observation, rng)
    assert actual.shape == (2, config.action_horizon, config.action_dim)
    for index, key in enumerate(jax.random.split(rng, 2)):
        np.testing.assert_allclose(actual[index], _sample(live, _row(observation, index), key)[0], atol=ATOL)
    # A single observation uses the key itself, as the original's model did.
    np.testing.assert_allclose(
        _sample(loaded, _row(observation, 1), rng), _sample(live, _row(observation, 1), rng), atol=ATOL
    )


def test_original_export_reads_its_facts_from_the_graph(tiny, loaded):
    config, _ = tiny
    assert loaded.model_type == _model.ModelType.PI0
    assert (loaded.action_horizon, loaded.action_dim, loaded.max_token_len) == (4, 16, 16)
    assert loaded.metadata["image_keys"] == list(_model.IMAGE_KEYS)
    assert loaded.metadata["image_resolution"] == list(config.image_resolution)
    assert loaded.use_quantile_norm is False


def test_both_norm_stats_layouts_give_the_actions_and_state_stats(loaded):
    nested = loaded.norm_stats(ENV_DEFAULT_PROCESSOR)
    np.testing.assert_array_equal(nested["state"].mean, np.full(ALOHA_DIM, 0.5))
    np.testing.assert_array_equal(nested["actions"].q99, np.full(ALOHA_DIM, 1.25))
    plain = loaded.norm_stats(PLAIN_PROCESSOR)
    np.testing.assert_array_equal(plain["actions"].std, np.full(ALOHA_DIM, 3.0))
    np.testing.assert_array_equal(plain["state"].mean, np.full(ALOHA_DIM, 3.0))
    assert plain["state"].q01 is None


def test_processor_rules_explicit_then_env_default_then_the_only_one(loaded, original_dir, tmp_path):
    assert loaded.processor_names() == sorted(PROCESSORS)
    assert loaded.select_processor(PLAIN_PROCESSOR, env_default=ENV_DEFAULT_PROCESSOR) == PLAIN_PROCESSOR
    assert loaded.select_processor(None, env_default=ENV_DEFAULT_PROCESSOR) == ENV_DEFAULT_PROCESSOR
    single = _copy(original_dir, tmp_path / "single")
    for name in (ENV_DEFAULT_PROCESSOR, OTHER_PROCESSOR):
        shutil.rmtree(single / "processors" / name)
    assert _exported.ExportedModel.load(single).select_processor(None, ENV_DEFAULT_PROCESSOR) == PLAIN_PROCESSOR


def test_several_processors_and_none_chosen_is_an_error_listing_them(loaded):
    listed = r"\['huggingface_aloha_sim_transfer_cube', 'openx_droid', 'trossen_biarm_single_base_cam_24dim'\]"
    with pytest.raises(_exported.ExportedModelError, match=rf"--policy.processor from: {listed}"):
        loaded.select_processor(None, env_default="libero")
    with pytest.raises(_exported.ExportedModelError, match=rf"'libero' not found .*available: {listed}"):
        loaded.select_processor("libero")


def test_directory_without_its_graph_is_named_as_the_original_layout_missing_graph(original_dir, tmp_path):
    broken = _copy(original_dir, tmp_path / "broken")
    (broken / "graph").unlink()
    with pytest.raises(_exported.ExportedModelError, match=r"broken: graph is missing"):
        _exported.ExportedModel.load(broken)


def test_undeserializable_graph_is_refused_naming_it(original_dir, tmp_path):
    broken = _copy(original_dir, tmp_path / "broken")
    (broken / "graph").write_bytes(b"not a flatbuffer")
    with pytest.raises(_exported.ExportedModelError, match=r"broken/graph: cannot be deserialized by jax"):
        _exported.ExportedModel.load(broken)


def test_graph_without_its_checkpoint_is_refused_naming_the_checkpoint(original_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(original_dir / "graph", broken / "graph")
    with pytest.raises(_exported.ExportedModelError, match=r"orbax checkpoint .* no checkpoint found"):
        _exported.ExportedModel.load(broken)


def test_params_that_do_not_fit_the_graph_are_refused_naming_the_path(tiny, original_dir, tmp_path):
    _, params = tiny
    broken = tmp_path / "broken"
    wrong = {**params, "action_out_proj": {**params["action_out_proj"], "bias": np.zeros(3, np.float32)}}
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(broken, {"params": {"decoder": wrong}})
    shutil.copy(original_dir / "graph", broken / "graph")
    with pytest.raises(_exported.ExportedModelError, match=r"shape of decoder/action_out_proj/bias: expected \(16,\)"):
        _exported.ExportedModel.load(broken)


def test_checkpoint_entries_the_graph_does_not_take_are_left_unread(tiny, original_dir, tmp_path):
    _, params = tiny
    richer = tmp_path / "richer"
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(richer, {"params": {"decoder": params, "ema": {"w": np.ones(3)}}, "step": np.int32(7)})
    shutil.copytree(original_dir / "processors", richer / "processors")
    shutil.copy(original_dir / "graph", richer / "graph")
    model = _exported.ExportedModel.load(richer)
    assert set(model.params.get_value()) == {"decoder"}


def test_damaged_checkpoint_is_refused_naming_it(original_dir, tmp_path):
    broken = _copy(original_dir, tmp_path / "broken")
    (broken / "_METADATA").write_text("{not json")
    with pytest.raises(_exported.ExportedModelError, match=r"broken \(orbax checkpoint .*\): cannot be read"):
        _exported.ExportedModel.load(broken)


def test_images_reach_the_graph_as_the_pixels_they_were_made_from():
    pixels = np.arange(256, dtype=np.uint8)
    as_model_input = _model.Observation.from_dict(
        {"image": {"cam": pixels}, "image_mask": {}, "state": np.zeros(1)}
    ).images["cam"]
    np.testing.assert_array_equal(exported_original._to_uint8(jnp.asarray(as_model_input)), pixels)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_file", r"trossen_biarm_single_base_cam_24dim: no <sub>/norm_stats.msgpack found"),
        ("one_file", r"trossen_biarm_single_base_cam_24dim: expected the norm stats of actions and state"),
        ("no_std", r"normalize_state/norm_stats.msgpack: expected 'mean' and 'std' .*got \['mean'\]"),
        ("garbage", r"normalize_state/norm_stats.msgpack: not flax msgpack"),
    ],
)
def test_damaged_processor_is_refused_naming_its_file(original_dir, tmp_path, damage, message):
    broken = _copy(original_dir, tmp_path / "broken")
    processor = broken / "processors" / PLAIN_PROCESSOR
    state_file = processor / "normalize_state" / "norm_stats.msgpack"
    match damage:
        case "no_file":
            for path in processor.glob("*/norm_stats.msgpack"):
                path.unlink()
        case "one_file":
            state_file.unlink()
        case "no_std":
            state_file.write_bytes(flax.serialization.msgpack_serialize({"mean": np.zeros(ALOHA_DIM)}))
        case "garbage":
            state_file.write_bytes(b"\xc1\xc1\xc1")
    model = _exported.ExportedModel.load(broken)
    with pytest.raises(_exported.ExportedModelError, match=message):
        model.norm_stats(PLAIN_PROCESSOR)
    # The other processors still serve.
    assert model.norm_stats(ENV_DEFAULT_PROCESSOR)["state"].mean.shape == (ALOHA_DIM,)


def test_pi0_fast_graph_of_the_original_is_refused_by_name(tmp_path):
    spec = jax.ShapeDtypeStruct
    vector = spec((4,), jnp.int32)
    example = {
        "image": {"base_0_rgb": spec((8, 8, 3), jnp.uint8), "base_0_rgb_mask": spec((), jnp.bool_)},
        "state": spec((2,), jnp.float32),
        **dict.fromkeys(("prompt_tokens", "mask_input", "tokens", "mask_ar", "mask_prompt_input"), vector),
    }
    exported = jax_export.export(
        jax.jit(lambda params, key_data, example, kwargs: {"output_tokens": example["tokens"] + params["w"]}),
        platforms=("cpu", "cuda"),
    )({"w": spec((), jnp.int32)}, spec((2,), jnp.uint32), example, {})
    (tmp_path / "graph").write_bytes(exported.serialize())
    with pytest.raises(_exported.ExportedModelError, match=r"pi0-FAST graphs are not supported"):
        _exported.ExportedModel.load(tmp_path)


def test_original_export_loads_from_s3(original_dir, loaded, anonymous_s3):
    url = anonymous_s3.publish_directory(original_dir, "openpi-assets", "exported/pi0_tiny/model")
    remote = _exported.ExportedModel.load(url)
    assert isinstance(remote, exported_original.OriginalExportedModel)
    assert remote.processor_names() == loaded.processor_names()
    jax.tree.map(np.testing.assert_array_equal, remote.params.get_value(), loaded.params.get_value())
    np.testing.assert_array_equal(
        remote.norm_stats(PLAIN_PROCESSOR)["actions"].mean, loaded.norm_stats(PLAIN_PROCESSOR)["actions"].mean
    )
