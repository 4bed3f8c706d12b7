"""Datasets laid out by hand exactly as the lerobot package writes them (v2.1 and v3.0) read correctly.

Nothing here uses our writer: parquet, JSON lines, pandas-style task tables and mp4 files are produced
directly with pyarrow and PyAV, following lerobot's column names, path templates and codecs.
"""

from fractions import Fraction
import io
import json
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openpi.lerobot.lerobot_dataset import LeRobotDataset

FPS = 50
HEIGHT, WIDTH = 48, 64
LENGTHS = (12, 18)  # two episodes of different lengths
STATE_DIM = 3


def level(global_index: int) -> int:
    return 20 + 7 * global_index


def flat_frame(global_index: int) -> np.ndarray:
    """A uniform frame whose colour identifies its global index (survives lossy coding within a few levels)."""
    value = level(global_index)
    return np.broadcast_to(np.array([value, 255 - value, 128], np.uint8), (HEIGHT, WIDTH, 3)).copy()


def encode_mp4(path: Path, frames: list[np.ndarray], codec: str, options: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = options
        for pts, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = pts
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def episode_columns(episode: int, list_type) -> dict[str, pa.Array]:
    start = sum(LENGTHS[:episode])
    length = LENGTHS[episode]
    states = [[float(start + i) * 10 + d for d in range(STATE_DIM)] for i in range(length)]
    return {
        "observation.state": pa.array(states, type=list_type),
        "action": pa.array([[-v for v in s] for s in states], type=list_type),
        "timestamp": pa.array([i / FPS for i in range(length)], pa.float32()),
        "frame_index": pa.array(range(length), pa.int64()),
        "episode_index": pa.array([episode] * length, pa.int64()),
        "index": pa.array(range(start, start + length), pa.int64()),
        "next.done": pa.array([i == length - 1 for i in range(length)], pa.bool_()),
        "task_index": pa.array([episode] * length, pa.int64()),
    }


HF_FEATURES = {
    "observation.state": {"feature": {"dtype": "float32", "_type": "Value"}, "length": STATE_DIM, "_type": "Sequence"},
    "action": {"feature": {"dtype": "float32", "_type": "Value"}, "length": STATE_DIM, "_type": "Sequence"},
    "timestamp": {"dtype": "float32", "_type": "Value"},
    "frame_index": {"dtype": "int64", "_type": "Value"},
    "episode_index": {"dtype": "int64", "_type": "Value"},
    "index": {"dtype": "int64", "_type": "Value"},
    "next.done": {"dtype": "bool", "_type": "Value"},
    "task_index": {"dtype": "int64", "_type": "Value"},
}


def write_parquet(path: Path, columns: dict[str, pa.Array], hf_features: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": hf_features}})})
    pq.write_table(table, path)


def features(camera_dtype: str, camera_key: str) -> dict:
    camera = {"dtype": camera_dtype, "shape": [HEIGHT, WIDTH, 3], "names": ["height", "width", "channels"]}
    if camera_dtype == "video":
        camera["info"] = {
            "video.fps": float(FPS),
            "video.height": HEIGHT,
            "video.width": WIDTH,
            "video.channels": 3,
            "video.codec": "av1",
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "has_audio": False,
        }
    return {
        "observation.state": {"dtype": "float32", "shape": [STATE_DIM], "names": {"motors": ["x", "y", "z"]}},
        "action": {"dtype": "float32", "shape": [STATE_DIM], "names": {"motors": ["x", "y", "z"]}},
        camera_key: camera,
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def stats_of(values: np.ndarray) -> dict:
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [len(values)],
    }


def write_lerobot_v21(root: Path) -> None:
    """v2.1 as lerobot 0.2/0.3 writes it: per-episode parquet (list<float>), AV1 mp4s, JSON-lines metadata."""
    key = "observation.images.top"
    info = {
        "codebase_version": "v2.1",
        "robot_type": "aloha",
        "total_episodes": 2,
        "total_frames": sum(LENGTHS),
        "total_tasks": 2,
        "total_videos": 2,
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": "0:2"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": features("video", key),
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    tasks = ["pick the cube", "place the cube"]
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
    )
    episodes, episode_stats = [], []
    for episode, length in enumerate(LENGTHS):
        columns = episode_columns(episode, pa.list_(pa.float32()))
        write_parquet(root / f"data/chunk-000/episode_{episode:06d}.parquet", columns, HF_FEATURES)
        start = sum(LENGTHS[:episode])
        frames = [flat_frame(start + i) for i in range(length)]
        encode_mp4(
            root / f"videos/chunk-000/{key}/episode_{episode:06d}.mp4", frames, "libsvtav1", {"g": "2", "crf": "30"}
        )
        episodes.append({"episode_index": episode, "tasks": [tasks[episode]], "length": length})
        state = np.asarray(columns["observation.state"].to_pylist())
        episode_stats.append({"episode_index": episode, "stats": {"observation.state": stats_of(state)}})
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episode_stats))


def write_lerobot_v30(root: Path) -> None:
    """v3.0 as lerobot writes it: one data file and one concatenated mp4 for both episodes, parquet metadata."""
    video_key, image_key = "observation.images.top", "observation.images.wrist"
    info_features = features("video", video_key)
    info_features[video_key]["info"]["video.codec"] = "h264"
    info_features[image_key] = {"dtype": "image", "shape": [HEIGHT, WIDTH, 3], "names": ["height", "width", "channels"]}
    for ft in info_features.values():
        if ft["dtype"] != "video":
            ft["fps"] = FPS
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100",
        "total_episodes": 2,
        "total_frames": sum(LENGTHS),
        "total_tasks": 2,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": FPS,
        "splits": {"train": "0:2"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": info_features,
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))

    # meta/tasks.parquet as pandas writes DataFrame({"task_index": [...]}, index=[task strings]).
    pandas_metadata = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    tasks = pa.table(
        {"task_index": pa.array([1, 0], pa.int64()), "__index_level_0__": ["place the cube", "pick the cube"]}
    )
    pq.write_table(tasks.replace_schema_metadata({"pandas": json.dumps(pandas_metadata)}), root / "meta/tasks.parquet")

    fixed = pa.list_(pa.float32(), STATE_DIM)
    episodes = [episode_columns(e, fixed) for e in range(2)]
    data = {name: pa.concat_arrays([ep[name] for ep in episodes]) for name in episodes[0]}
    pngs = []
    for g in range(sum(LENGTHS)):
        buffer = io.BytesIO()
        PIL.Image.fromarray(flat_frame(g)[::-1].copy()).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    data[image_key] = pa.StructArray.from_arrays(
        [pa.array(pngs, pa.binary()), pa.array([f"frame_{g:06d}.png" for g in range(sum(LENGTHS))])],
        names=["bytes", "path"],
    )
    write_parquet(root / "data/chunk-000/file-000.parquet", data, {**HF_FEATURES, image_key: {"_type": "Image"}})
    frames = [flat_frame(g) for g in range(sum(LENGTHS))]
    encode_mp4(root / f"videos/{video_key}/chunk-000/file-000.mp4", frames, "libx264", {"g": "2", "crf": "18"})

    rows = []
    for episode, length in enumerate(LENGTHS):
        start = sum(LENGTHS[:episode])
        state = np.asarray(episodes[episode]["observation.state"].to_pylist())
        rows.append(
            {
                "episode_index": episode,
                "tasks": [["pick the cube", "place the cube"][episode]],
                "length": length,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
                f"videos/{video_key}/chunk_index": 0,
                f"videos/{video_key}/file_index": 0,
                f"videos/{video_key}/from_timestamp": start / FPS,
                f"videos/{video_key}/to_timestamp": (start + length) / FPS,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                **{f"stats/observation.state/{name}": value for name, value in stats_of(state).items()},
            }
        )
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    all_states = np.concatenate([np.asarray(ep["observation.state"].to_pylist()) for ep in episodes])
    (root / "meta/stats.json").write_text(json.dumps({"observation.state": stats_of(all_states)}))


def assert_frame_is(decoded: np.ndarray, global_index: int) -> None:
    """The decoded CHW float frame shows `global_index`'s colour (neighbouring frames differ by 7 levels)."""
    assert decoded.shape == (3, HEIGHT, WIDTH)
    assert decoded.dtype == np.float32
    red = float(np.median(decoded[0])) * 255
    assert abs(red - level(global_index)) < 3.0, (red, level(global_index))


@pytest.mark.parametrize("writer", [write_lerobot_v21, write_lerobot_v30], ids=["v2.1", "v3.0"])
def test_lerobot_written_dataset_reads_frames_tasks_and_videos(tmp_path, writer):
    writer(tmp_path / "ds")
    dataset = LeRobotDataset(
        "lerobot/handmade",
        root=tmp_path / "ds",
        delta_timestamps={"action": [t / FPS for t in range(4)]},
        local_files_only=True,
    )
    assert len(dataset) == sum(LENGTHS)
    assert dataset.meta.total_episodes == 2
    assert dataset.meta.tasks[0] == "pick the cube"
    assert dataset.meta.tasks[1] == "place the cube"
    np.testing.assert_array_equal(dataset.episode_data_index["to"], np.cumsum(LENGTHS))
    for g in range(sum(LENGTHS)):
        episode = int(g >= LENGTHS[0])
        item = dataset[g]
        np.testing.assert_array_equal(item["observation.state"], np.arange(STATE_DIM, dtype=np.float32) + 10 * g)
        assert int(item["episode_index"]) == episode
        assert item["task"] == ["pick the cube", "place the cube"][episode]
        assert bool(item["next.done"]) == (g + 1 == np.cumsum(LENGTHS)[episode])
        assert_frame_is(item["observation.images.top"], g)
        last = np.cumsum(LENGTHS)[episode] - 1
        expected = [-(np.arange(STATE_DIM) + 10 * min(g + t, last)) for t in range(4)]
        np.testing.assert_array_equal(item["action"], np.asarray(expected, np.float32))
        np.testing.assert_array_equal(item["action_is_pad"], [g + t > last for t in range(4)])
        if "observation.images.wrist" in item:  # v3.0 also stores a PNG camera inside the parquet file
            wrist = np.round(item["observation.images.wrist"] * 255).astype(np.uint8)
            np.testing.assert_array_equal(wrist, flat_frame(g)[::-1].transpose(2, 0, 1))


@pytest.mark.parametrize("writer", [write_lerobot_v21, write_lerobot_v30], ids=["v2.1", "v3.0"])
def test_lerobot_written_stats_and_episode_subset(tmp_path, writer):
    writer(tmp_path / "ds")
    dataset = LeRobotDataset("lerobot/handmade", root=tmp_path / "ds", episodes=[1], local_files_only=True)
    assert len(dataset) == LENGTHS[1]
    first = dataset[0]
    assert int(first["index"]) == LENGTHS[0]
    assert_frame_is(first["observation.images.top"], LENGTHS[0])
    all_states = np.stack([np.arange(STATE_DIM) + 10.0 * g for g in range(sum(LENGTHS))])
    np.testing.assert_allclose(dataset.meta.stats["observation.state"]["mean"], all_states.mean(0))
    np.testing.assert_allclose(dataset.meta.stats["observation.state"]["std"], all_states.std(0))
