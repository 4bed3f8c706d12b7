"""Tests for RunningStats, compute_norm_stats and the norm_stats.json format against the openpi reference files."""

import json
import pathlib

import numpy as np
import pytest

from openpi.shared import normalize
from shared import file_modes

REFERENCE = pathlib.Path(__file__).parents[1] / "fixtures"
KEYS = ("state", "actions")


def _reference_input() -> dict[str, np.ndarray]:
    with np.load(REFERENCE / "norm_stats_example_input.npz") as data:
        return {key: data[key] for key in KEYS}


def _regenerated_input() -> dict[str, np.ndarray]:
    """The documented seed: RandomState(4), normal(0.5, 2.0, (500, 14)) for state, then for actions."""
    rng = np.random.RandomState(4)
    state = rng.normal(0.5, 2.0, (500, 14)).astype(np.float32)
    actions = rng.normal(0.5, 2.0, (500, 14)).astype(np.float32)
    return {"state": state, "actions": actions}


def _stats_in_batches(data: dict[str, np.ndarray], num_batches: int) -> dict[str, normalize.NormStats]:
    # In row order: batch i holds rows [100 i, 100 (i + 1)).
    batches = [{key: np.split(data[key], num_batches)[i] for key in KEYS} for i in range(num_batches)]
    return normalize.compute_norm_stats(batches, KEYS, progress=False)


def test_documented_seed_regenerates_the_reference_input():
    regenerated, reference = _regenerated_input(), _reference_input()
    for key in KEYS:
        np.testing.assert_array_equal(regenerated[key], reference[key])


@pytest.mark.parametrize(
    ("filename", "num_batches"),
    [("norm_stats_example.json", 5), ("norm_stats_example_single_batch.json", 1)],
)
def test_running_stats_reproduce_reference_json_exactly(filename, num_batches):
    expected = normalize.deserialize_json((REFERENCE / filename).read_text())
    stats = _stats_in_batches(_regenerated_input(), num_batches)
    for key in KEYS:
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(
                np.asarray(getattr(stats[key], field), np.float64),
                getattr(expected[key], field),
                err_msg=f"{key}/{field}",
            )


@pytest.mark.parametrize(
    ("filename", "num_batches"),
    [("norm_stats_example.json", 5), ("norm_stats_example_single_batch.json", 1)],
)
def test_serialized_stats_are_byte_identical_to_reference_file(filename, num_batches):
    stats = _stats_in_batches(_reference_input(), num_batches)
    assert normalize.serialize_json(stats) == (REFERENCE / filename).read_text()


def test_batch_split_changes_quantiles_but_not_moments():
    data = _reference_input()
    five, one = _stats_in_batches(data, 5), _stats_in_batches(data, 1)
    np.testing.assert_allclose(five["state"].mean, one["state"].mean, atol=1e-6)
    np.testing.assert_allclose(five["state"].std, one["state"].std, atol=1e-6)
    assert not np.array_equal(five["state"].q01, one["state"].q01)


def test_stats_of_evenly_spaced_values_have_known_values():
    values = np.arange(10_000, dtype=np.float64)[:, None]
    running = normalize.RunningStats()
    running.update(values)
    stats = running.get_statistics()
    assert stats.mean == pytest.approx([4999.5])
    assert stats.std == pytest.approx([np.sqrt((10_000**2 - 1) / 12)])
    # 5000 bins of width ~2: the 100th value is reached at bin 49, whose left edge is 49 * 9999 / 5000.
    assert stats.q01 == pytest.approx([49 * 9999 / 5000])
    # The 9900th value is reached at bin 4949.
    assert stats.q99 == pytest.approx([4949 * 9999 / 5000])


def test_leading_axes_are_batch_axes():
    chunks = np.random.default_rng(0).normal(size=(4, 50, 3))
    batched, flat = normalize.RunningStats(), normalize.RunningStats()
    batched.update(chunks)
    flat.update(chunks.reshape(-1, 3))
    for field in ("mean", "std", "q01", "q99"):
        np.testing.assert_array_equal(getattr(batched.get_statistics(), field), getattr(flat.get_statistics(), field))


def test_constant_dimension_survives_rebinning():
    running = normalize.RunningStats()
    running.update(np.array([[1.0, 0.0], [1.0, 1.0]]))
    running.update(np.array([[1.0, 5.0], [1.0, -3.0]]))  # widens dim 1 only; dim 0 gets zero-width bins
    stats = running.get_statistics()
    assert stats.mean[0] == 1.0
    assert stats.std[0] == 0.0
    assert np.isfinite(stats.q01).all()
    assert np.isfinite(stats.q99).all()


def test_running_stats_reject_bad_input():
    running = normalize.RunningStats()
    running.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="fewer than 2"):
        running.get_statistics()
    with pytest.raises(ValueError, match="length 3, got 4"):
        running.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        running.update(np.array([[np.nan, 0.0, 0.0]]))


def test_compute_norm_stats_names_a_missing_key():
    with pytest.raises(KeyError, match="actions: missing"):
        normalize.compute_norm_stats([{"state": np.zeros((2, 3))}], progress=False)


def test_save_then_load_round_trips_and_leaves_no_temp_files(tmp_path):
    stats = _stats_in_batches(_reference_input(), 5)
    path = normalize.save(tmp_path / "assets" / "robot", stats)
    assert path == tmp_path / "assets" / "robot" / "norm_stats.json"
    assert [p.name for p in path.parent.iterdir()] == ["norm_stats.json"]
    loaded = normalize.load(path.parent)
    for key in KEYS:
        assert loaded[key].mean.dtype == np.float64
        np.testing.assert_array_equal(loaded[key].q99, stats[key].q99)


def test_saved_file_and_created_directories_are_as_readable_as_plain_writes_make_them(tmp_path):
    stats = {"state": normalize.NormStats(mean=np.zeros(2), std=np.ones(2))}
    with file_modes.umask():
        normalize.save(tmp_path / "assets" / "robot", stats)
    assert file_modes.unexpected_modes(tmp_path / "assets") == {}


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"norm_stats\.json"):
        normalize.load(tmp_path)


def test_quantiles_are_optional_in_the_json():
    text = json.dumps({"norm_stats": {"state": {"mean": [1.0, 2.0], "std": [3.0, 4.0], "q01": None}}})
    stats = normalize.deserialize_json(text)["state"]
    assert stats.q01 is None
    assert stats.q99 is None
    assert json.loads(normalize.serialize_json({"state": stats}))["norm_stats"]["state"]["q99"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"stats": {}}, '"norm_stats" object'),
        ({"norm_stats": {"state": {"std": [1.0]}}}, "norm_stats/state/mean: required"),
        ({"norm_stats": {"state": {"mean": [1.0], "std": [1.0, 2.0]}}}, r"norm_stats/state/std: expected shape \(1,\)"),
    ],
)
def test_malformed_json_is_rejected_naming_the_field(content, message):
    with pytest.raises(ValueError, match=message):
        normalize.deserialize_json(json.dumps(content))
