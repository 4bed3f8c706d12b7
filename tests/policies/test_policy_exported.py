"""Exported models (openpi.policies.exported): same actions as the live model, batch polymorphism, integrity checks,
processor selection, and loading from s3://."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

# The tiny pi0 helpers live with the model tests (tests/ is on pytest's pythonpath).
from models import test_pi0
from openpi.models import model as _model
from openpi.policies import exported as _exported
from openpi.shared import normalize as _normalize
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
    changed_model = _exported.ExportedModel(loaded.exported, doubled, dict(loaded.metadata), {}, source="in-memory")
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
    with pytest.raises(_exported.ExportedModelError, match=r"format version 2, but this openpi reads version 1"):
        _exported.ExportedModel.load(newer)


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
