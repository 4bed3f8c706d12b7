"""On-disk facts of the LeRobot dataset format (v2.0, v2.1, v3.0): paths, info.json, features, atomic writes."""

import json
import os
from pathlib import Path
from typing import Any

from openpi.shared import fileio as _fileio

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
WRITABLE_VERSIONS = ("v2.1", "v3.0")

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"

# v2.x: one parquet file and one mp4 per camera for every episode; metadata as JSON lines.
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
LEGACY_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
LEGACY_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

# v3.0: many episodes per file; episode metadata in parquet.
EPISODES_DIR = "meta/episodes"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

DEFAULT_CHUNK_SIZE = 1000  # max files (v3.0) or episodes (v2.x) per chunk-XXX directory
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

# Columns every LeRobot dataset carries in its parquet data, besides the user's features.
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
CAMERA_DTYPES = ("image", "video")


def lerobot_home() -> Path:
    """Default parent of local datasets: `$HF_LEROBOT_HOME`, else `$HF_HOME/lerobot`, else ~/.cache/huggingface/lerobot."""
    if "HF_LEROBOT_HOME" in os.environ:
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    return hf_home / "lerobot"


def check_version(version: Any, where: str, allowed: tuple[str, ...] = SUPPORTED_VERSIONS) -> str:
    if version not in allowed:
        raise ValueError(f"{where}: codebase_version: expected one of {', '.join(allowed)}, got {version!r}")
    return version


def is_v3(version: str) -> bool:
    return version.startswith("v3.")


def camera_hwc(key: str, feature: dict) -> tuple[int, int, int]:
    """(height, width, channels) of an image/video feature; `names` tells the axis order, HWC when absent."""
    shape = tuple(int(d) for d in feature.get("shape", ()))
    if len(shape) != 3:
        raise ValueError(f"features.{key}.shape: expected 3 dims (height, width, channels), got {list(shape)}")
    names = feature.get("names")
    if isinstance(names, list) and len(names) == 3 and str(names[0]).startswith("channel"):
        return shape[1], shape[2], shape[0]
    if names is None and shape[0] in (1, 3) and shape[2] not in (1, 3):
        return shape[1], shape[2], shape[0]
    return shape


def feature_shape(feature: dict) -> tuple[int, ...]:
    return tuple(int(d) for d in feature.get("shape", (1,)))


def load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: missing file {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {path} is not valid JSON ({e})") from e


def load_jsonl(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: missing file {path}")
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: {path} line {line_number} is not valid JSON ({e})") from e
    return rows


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def atomic_write_json(path: Path, data: Any) -> None:
    _fileio.atomic_write_bytes(path, (json.dumps(data, indent=4, ensure_ascii=False) + "\n").encode())


def atomic_write_jsonl(path: Path, rows: list[dict]) -> None:
    _fileio.atomic_write_bytes(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())


def new_info(
    codebase_version: str, fps: int, features: dict, robot_type: str | None, use_videos: bool, chunks_size: int
) -> dict:
    """info.json for an empty dataset, with the fields the lerobot package writes for that version."""
    info: dict[str, Any] = {
        "codebase_version": codebase_version,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
    }
    if is_v3(codebase_version):
        info |= {
            "chunks_size": chunks_size,
            "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            "fps": fps,
            "splits": {},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if use_videos else None,
        }
        features = {k: ft if ft["dtype"] == "video" else {**ft, "fps": fps} for k, ft in features.items()}
    else:
        info |= {
            "total_videos": 0,
            "total_chunks": 0,
            "chunks_size": chunks_size,
            "fps": fps,
            "splits": {},
            "data_path": LEGACY_DATA_PATH,
            "video_path": LEGACY_VIDEO_PATH if use_videos else None,
        }
    info["features"] = features
    return info
