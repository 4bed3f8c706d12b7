"""Round trips through our LeRobot writer and reader (v2.1 and v3.0), delta timestamps, and clear errors."""

import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from openpi.lerobot import lerobot_dataset
from openpi.lerobot.lerobot_dataset import LeRobotDataset
from shared import file_modes

FPS = 10
HEIGHT, WIDTH = 48, 64
EPISODES, FRAMES = 3, 20
# libx264 (crf 23, yuv420p) on these smooth frames measured max 31/255, mean 3.0/255 absolute error per pixel.
VIDEO_MAX_ABS_ERROR = 48 / 255
VIDEO_MEAN_ABS_ERROR = 6 / 255

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": (4,), "names": ["a", "b", "c", "d"]},
    "action": {"dtype": "float32", "shape": (4,), "names": None},
    "observation.images.top": {"dtype": "video", "shape": (HEIGHT, WIDTH, 3), "names": ["height", "width", "channels"]},
    "observation.images.wrist": {
        "dtype": "video",
        "shape": (3, HEIGHT, WIDTH),
        "names": ["channels", "height", "width"],
    },
    "observation.images.png": {"dtype": "image", "shape": (HEIGHT, WIDTH, 3), "names": ["height", "width", "channels"]},
}


def smooth_frame(global_index: int, camera: int) -> np.ndarray:
    """A distinct, smooth (video-friendly) HWC uint8 frame per (frame, camera)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    red = 255 * x / (WIDTH - 1)
    green = 255 * y / (HEIGHT - 1)
    blue = 127.5 + 100 * np.sin(x / 8 + global_index / 5 + camera) * np.cos(y / 9)
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def state(global_index: int) -> np.ndarray:
    return np.arange(4, dtype=np.float32) + 10 * global_index


def write_dataset(root: Path, version: str) -> None:
    dataset = LeRobotDataset.create("test/roundtrip", fps=FPS, features=FEATURES, root=root, codebase_version=version)
    for episode in range(EPISODES):
        for frame in range(FRAMES):
            g = episode * FRAMES + frame
            dataset.add_frame(
                {
                    "observation.state": state(g),
                    "action": -state(g),
                    "observation.images.top": smooth_frame(g, 0),
                    # CHW float in [0, 1], as lerobot also accepts
                    "observation.images.wrist": smooth_frame(g, 1).transpose(2, 0, 1).astype(np.float32) / 255,
                    "observation.images.png": smooth_frame(g, 2),
                    "task": f"task {episode % 2}",
                }
            )
        dataset.save_episode()
    dataset.finalize()


@pytest.fixture(scope="module", params=["v2.1", "v3.0"])
def written(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param.replace(".", "_")) / "ds"
    with file_modes.umask():
        write_dataset(root, request.param)
    return request.param, root


def test_written_layout_matches_the_codebase_version(written):
    version, root = written
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == version
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"]) == (3, 60, 2, FPS)
    assert info["chunks_size"] == 1000
    assert info["features"]["observation.images.top"]["info"]["video.codec"] == "h264"
    assert info["features"]["observation.images.top"]["info"]["video.pix_fmt"] == "yuv420p"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    if version == "v2.1":
        assert {
            "meta/episodes.jsonl",
            "meta/tasks.jsonl",
            "meta/episodes_stats.jsonl",
            "data/chunk-000/episode_000002.parquet",
            "videos/chunk-000/observation.images.wrist/episode_000002.mp4",
        } <= files
        episodes = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
        assert episodes[1] == {"episode_index": 1, "tasks": ["task 1"], "length": FRAMES}
    else:
        assert files == {
            "meta/info.json",
            "meta/stats.json",
            "meta/tasks.parquet",
            "meta/episodes/chunk-000/file-000.parquet",
            "data/chunk-000/file-000.parquet",
            "videos/observation.images.top/chunk-000/file-000.mp4",
            "videos/observation.images.wrist/chunk-000/file-000.mp4",
        }
        rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 20), (20, 40), (40, 60)]
        assert [r["videos/observation.images.top/from_timestamp"] for r in rows] == pytest.approx([0.0, 2.0, 4.0])
        last_episode_actions = np.stack([-state(g) for g in range(2 * FRAMES, 3 * FRAMES)])
        assert rows[2]["stats/action/mean"] == pytest.approx(last_episode_actions.mean(0).tolist())


def test_every_file_and_directory_written_is_as_readable_as_plain_writes_make_it(written):
    # Written under file_modes.UMASK: parquet, JSON and mp4 files (placed or grown by stream copy) and their folders.
    _, root = written
    assert file_modes.unexpected_modes(root) == {}


def test_round_trip_returns_the_written_values(written):
    _, root = written
    dataset = LeRobotDataset("test/roundtrip", root=root, local_files_only=True)
    assert len(dataset) == EPISODES * FRAMES
    assert dataset.meta.total_episodes == EPISODES
    assert dataset.meta.total_frames == EPISODES * FRAMES
    assert dataset.meta.fps == FPS
    assert dataset.meta.tasks == {0: "task 0", 1: "task 1"}
    assert set(dataset.meta.features) >= set(FEATURES) | {"timestamp", "frame_index", "index"}
    video_errors = []
    for g in range(len(dataset)):
        item = dataset[g]
        np.testing.assert_array_equal(item["observation.state"], state(g))
        np.testing.assert_array_equal(item["action"], -state(g))
        episode, frame = divmod(g, FRAMES)
        assert (int(item["episode_index"]), int(item["frame_index"]), int(item["index"])) == (episode, frame, g)
        assert item["timestamp"] == pytest.approx(frame / FPS)
        assert item["task"] == f"task {episode % 2}"
        assert int(item["task_index"]) == episode % 2
        png = item["observation.images.png"]
        assert png.dtype == np.float32
        assert png.shape == (3, HEIGHT, WIDTH)
        np.testing.assert_array_equal(np.round(png * 255).astype(np.uint8), smooth_frame(g, 2).transpose(2, 0, 1))
        for camera, key in enumerate(["observation.images.top", "observation.images.wrist"]):
            decoded = item[key]
            assert decoded.dtype == np.float32
            assert decoded.shape == (3, HEIGHT, WIDTH)
            assert decoded.min() >= 0.0
            assert decoded.max() <= 1.0
            video_errors.append(np.abs(decoded - smooth_frame(g, camera).transpose(2, 0, 1) / 255.0))
    assert max(e.max() for e in video_errors) <= VIDEO_MAX_ABS_ERROR
    assert np.mean([e.mean() for e in video_errors]) <= VIDEO_MEAN_ABS_ERROR


def test_stats_cover_numeric_and_camera_features(written):
    _, root = written
    stats = LeRobotDataset("test/roundtrip", root=root, local_files_only=True).meta.stats
    all_states = np.stack([state(g) for g in range(EPISODES * FRAMES)])
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_states.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], all_states.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], -all_states.max(0))
    assert int(stats["action"]["count"][0]) == EPISODES * FRAMES
    assert stats["observation.images.top"]["mean"].shape == (3, 1, 1)
    red_mean = np.mean([smooth_frame(g, 0)[..., 0].mean() for g in range(EPISODES * FRAMES)]) / 255
    assert stats["observation.images.top"]["mean"][0, 0, 0] == pytest.approx(red_mean, rel=1e-6)


def test_delta_timestamps_stack_chunks_clamped_to_the_episode(written):
    _, root = written
    horizon = 5
    dataset = LeRobotDataset(
        "test/roundtrip",
        root=root,
        delta_timestamps={"action": [t / FPS for t in range(horizon)], "observation.images.top": [-1 / FPS, 0.0]},
        local_files_only=True,
    )
    middle = dataset[FRAMES + 3]
    assert middle["action"].shape == (horizon, 4)
    assert middle["action_is_pad"].dtype == bool
    np.testing.assert_array_equal(middle["action"], np.stack([-state(FRAMES + 3 + t) for t in range(horizon)]))
    assert not middle["action_is_pad"].any()
    end = dataset[2 * FRAMES - 2]  # second to last frame of episode 1
    np.testing.assert_array_equal(end["action"][:2], np.stack([-state(2 * FRAMES - 2), -state(2 * FRAMES - 1)]))
    np.testing.assert_array_equal(end["action"][2:], np.stack([-state(2 * FRAMES - 1)] * 3))
    np.testing.assert_array_equal(end["action_is_pad"], [False, False, True, True, True])
    start = dataset[FRAMES]  # first frame of episode 1: the previous camera frame is clamped to itself
    assert start["observation.images.top"].shape == (2, 3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(start["observation.images.top_is_pad"], [True, False])
    np.testing.assert_array_equal(start["observation.images.top"][0], start["observation.images.top"][1])


def test_episode_subset_indexes_only_selected_episodes(written):
    _, root = written
    dataset = LeRobotDataset("test/roundtrip", root=root, episodes=[2, 0], local_files_only=True)
    assert len(dataset) == 2 * FRAMES
    assert dataset.num_episodes == 2
    np.testing.assert_array_equal(dataset.episode_data_index["from"], [0, FRAMES])
    assert int(dataset[FRAMES]["episode_index"]) == 2
    assert int(dataset[FRAMES]["index"]) == 2 * FRAMES
    np.testing.assert_array_equal(dataset[-1]["observation.state"], state(3 * FRAMES - 1))
    with pytest.raises(IndexError, match="out of range"):
        dataset[2 * FRAMES]


def test_hf_columns_return_whole_columns_without_cameras(written):
    _, root = written
    dataset = LeRobotDataset("test/roundtrip", root=root, episodes=[1], local_files_only=True)
    columns = dataset.hf_columns(["observation.state", "action"])
    np.testing.assert_array_equal(columns["observation.state"], np.stack([state(g) for g in range(FRAMES, 2 * FRAMES)]))
    assert columns["action"].shape == (FRAMES, 4)
    assert "observation.images.top" not in dataset.hf_columns()
    with pytest.raises(ValueError, match=r"observation\.images\.png"):
        dataset.hf_columns(["observation.images.png"])


def test_default_root_is_under_hf_lerobot_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path))
    features = {"action": {"dtype": "float32", "shape": (2,), "names": None}}
    writer = LeRobotDataset.create("org/name", fps=5, features=features)
    writer.add_frame({"action": np.ones(2, np.float32), "task": "t"})
    writer.save_episode()
    writer.finalize()
    assert (tmp_path / "org/name/meta/info.json").is_file()
    assert lerobot_dataset.hf_lerobot_home() == tmp_path
    assert len(LeRobotDataset("org/name", local_files_only=True)) == 1
    assert len(writer) == 1  # the writing handle reads what it saved


def test_av1_video_and_string_features_round_trip(tmp_path):
    features = {
        "observation.images.top": FEATURES["observation.images.top"],
        "language": {"dtype": "string", "shape": (1,), "names": None},
    }
    writer = LeRobotDataset.create("test/av1", fps=FPS, features=features, root=tmp_path / "ds", vcodec="av1")
    for frame in range(4):
        writer.add_frame({"observation.images.top": smooth_frame(frame, 0), "language": f"say {frame}", "task": "t"})
    writer.save_episode()
    writer.finalize()
    dataset = LeRobotDataset("test/av1", root=tmp_path / "ds", local_files_only=True)
    assert dataset.meta.features["observation.images.top"]["info"]["video.codec"] == "av1"
    assert dataset[2]["language"] == "say 2"
    error = np.abs(dataset[3]["observation.images.top"] - smooth_frame(3, 0).transpose(2, 0, 1) / 255.0)
    assert error.mean() <= VIDEO_MEAN_ABS_ERROR


def test_image_transforms_apply_to_every_camera_frame(written):
    _, root = written

    def flip(chw: np.ndarray) -> np.ndarray:
        return chw[:, ::-1, :]

    plain = LeRobotDataset("test/roundtrip", root=root, local_files_only=True)[7]
    flipped = LeRobotDataset("test/roundtrip", root=root, image_transforms=flip, local_files_only=True)[7]
    for key in ["observation.images.top", "observation.images.png"]:
        np.testing.assert_array_equal(flipped[key], plain[key][:, ::-1, :])


def _one_frame_dataset(root: Path, version: str = "v2.1") -> None:
    dataset = LeRobotDataset.create(
        "test/bad",
        fps=FPS,
        features={k: FEATURES[k] for k in ["action", "observation.images.top"]},
        root=root,
        codebase_version=version,
    )
    for frame in range(4):
        dataset.add_frame({"action": state(frame), "observation.images.top": smooth_frame(frame, 0), "task": "t"})
    dataset.save_episode()
    dataset.finalize()


def test_missing_info_json_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meta/info\.json.*local_files_only"):
        LeRobotDataset("test/absent", root=tmp_path / "absent", local_files_only=True)


def test_absent_dataset_goes_through_the_hub_download_and_fails_clearly_offline(tmp_path):
    script = "from openpi.lerobot.lerobot_dataset import LeRobotDataset; LeRobotDataset('nobody/absent', root=__import__('sys').argv[1])"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ds")], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "nobody/absent: not at" in result.stderr
    assert "not downloadable from the Hugging Face Hub" in result.stderr


def test_unknown_codebase_version_is_rejected(tmp_path):
    _one_frame_dataset(tmp_path / "ds")
    info_path = tmp_path / "ds/meta/info.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "codebase_version": "v1.6"}))
    with pytest.raises(ValueError, match=r"codebase_version: expected one of v2\.0, v2\.1, v3\.0, got 'v1\.6'"):
        LeRobotDataset("test/bad", root=tmp_path / "ds", local_files_only=True)


def test_missing_episode_metadata_is_a_clear_error(tmp_path):
    _one_frame_dataset(tmp_path / "ds")
    (tmp_path / "ds/meta/episodes.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta/episodes\.jsonl"):
        LeRobotDataset("test/bad", root=tmp_path / "ds", local_files_only=True)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_truncated_video_is_a_clear_error(tmp_path, version):
    _one_frame_dataset(tmp_path / "ds", version)
    (video,) = (tmp_path / "ds/videos").rglob("*.mp4")
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    dataset = LeRobotDataset("test/bad", root=tmp_path / "ds", local_files_only=True)
    assert len(dataset) == 4  # metadata and parquet still load; the damage shows when frames are decoded
    with pytest.raises(lerobot_dataset.VideoDecodeError, match=r"truncated"):
        [dataset[index] for index in range(len(dataset))]


def test_frame_with_wrong_shape_is_rejected_naming_the_feature(tmp_path):
    features = {k: FEATURES[k] for k in ["action", "observation.images.top"]}
    dataset = LeRobotDataset.create("test/bad", fps=FPS, features=features, root=tmp_path / "ds")
    good = {"action": state(0), "observation.images.top": smooth_frame(0, 0), "task": "t"}
    with pytest.raises(ValueError, match=r"observation\.images\.top: expected an image of shape \(48, 64, 3\)"):
        dataset.add_frame({**good, "observation.images.top": np.zeros((32, 32, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"action: expected shape \(4,\), got \(3,\)"):
        dataset.add_frame({**good, "action": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"task"):
        dataset.add_frame({k: v for k, v in good.items() if k != "task"})
    with pytest.raises(ValueError, match=r"missing \['action'\]"):
        dataset.add_frame({k: v for k, v in good.items() if k != "action"})
    with pytest.raises(ValueError, match=r"no frames"):
        dataset.save_episode()
    dataset.finalize()


def test_create_refuses_a_non_empty_root_and_unknown_versions(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds/file").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        LeRobotDataset.create("test/bad", fps=FPS, features=FEATURES, root=tmp_path / "ds")
    with pytest.raises(ValueError, match=r"codebase_version: expected one of v2\.1, v3\.0"):
        LeRobotDataset.create("test/bad", fps=FPS, features=FEATURES, root=tmp_path / "new", codebase_version="v2.0")


def test_delta_timestamps_off_the_frame_grid_are_rejected(tmp_path):
    _one_frame_dataset(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"delta_timestamps\.action: expected multiples of 1/fps"):
        LeRobotDataset("test/bad", root=tmp_path / "ds", delta_timestamps={"action": [0.05]}, local_files_only=True)
    with pytest.raises(ValueError, match=r"not features"):
        LeRobotDataset("test/bad", root=tmp_path / "ds", delta_timestamps={"actions": [0.0]}, local_files_only=True)
