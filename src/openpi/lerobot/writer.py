"""DatasetWriter: records episodes frame by frame into a LeRobot dataset (v2.1 or v3.0), crash-safe per episode.

Every `save_episode()` leaves a complete, readable dataset on disk. The episode's data and video files are
written to temp paths and renamed into place first; metadata is rewritten (temp + rename) only afterwards,
tasks before episodes, info.json last, so metadata on disk never names an episode whose files are incomplete.
v3.0 appends an episode to the current `file-XXX` by writing the grown parquet / the stream-copied mp4
(previous episodes + the new one) to a temp path and renaming it over the old file: earlier episodes keep
their rows and timestamps, so the old metadata stays valid whichever side of the rename a crash falls on.
`finalize()` therefore only drops the writer's scratch directory and any unsaved frames.
"""

import io
import logging
import math
import os
from pathlib import Path
import shutil
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq

from openpi.lerobot import columns
from openpi.lerobot import format as fmt
from openpi.lerobot import stats as stats_lib
from openpi.lerobot import video
from openpi.shared import fileio as _fileio

logger = logging.getLogger(__name__)

_SCRATCH_PREFIX = ".openpi-writer-"


def _normalize_features(features: dict, use_videos: bool) -> dict:
    if not isinstance(features, dict) or not features:
        raise ValueError("features: expected a non-empty dict of {key: {'dtype', 'shape', 'names'}}")
    normalized = {}
    for key, ft in features.items():
        if key in fmt.DEFAULT_FEATURES:
            continue
        if "/" in key or key == "task":
            raise ValueError(f"features.{key}: names may not contain '/' and 'task' is reserved")
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise ValueError(f"features.{key}: expected a dict with 'dtype' and 'shape', got {ft!r}")
        dtype = ft["dtype"]
        if dtype in fmt.CAMERA_DTYPES:
            if dtype == "video" and not use_videos:
                raise ValueError(f"features.{key}: dtype 'video' needs use_videos=True (or use dtype 'image')")
            height, width, channels = fmt.camera_hwc(key, ft)
            if channels != 3:
                raise ValueError(f"features.{key}: expected 3 (RGB) channels, got {channels}")
            if dtype == "video" and (height % 2 or width % 2):
                raise ValueError(f"features.{key}: yuv420p video needs even height and width, got {height}x{width}")
            normalized[key] = {"dtype": dtype, "shape": [height, width, 3], "names": ["height", "width", "channels"]}
        else:
            if dtype != "string":
                try:
                    np.dtype(dtype)
                except TypeError as e:
                    raise ValueError(f"features.{key}.dtype: expected a numpy dtype name, got {dtype!r}") from e
            shape = [int(d) for d in ft["shape"]]
            if not shape or any(d <= 0 for d in shape):
                raise ValueError(f"features.{key}.shape: expected positive dims, got {ft['shape']}")
            normalized[key] = {"dtype": dtype, "shape": shape, "names": ft.get("names")}
    return normalized | {key: dict(ft) for key, ft in fmt.DEFAULT_FEATURES.items()}


def _to_hwc_uint8(key: str, value: Any, hwc: tuple[int, int, int]) -> np.ndarray:
    """Accepts HWC or CHW, uint8 in [0, 255] or float in [0, 1] (lerobot's conventions), or a PIL image."""
    if isinstance(value, PIL.Image.Image):
        value = np.asarray(value.convert("RGB"))
    array = np.asarray(value)
    height, width, channels = hwc
    if array.shape == (channels, height, width) and array.shape != hwc:
        array = array.transpose(1, 2, 0)
    if array.shape != hwc:
        raise ValueError(
            f"{key}: expected an image of shape {hwc} (HWC) or {(channels, height, width)} (CHW), got {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"{key}: float images must lie in [0, 1], got [{array.min():.3f}, {array.max():.3f}]")
        return np.round(array * 255.0).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ValueError(f"{key}: expected uint8 or float image, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy")
    return buffer.getvalue()


def _next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    return (chunk_index + 1, 0) if file_index + 1 >= chunks_size else (chunk_index, file_index + 1)


class DatasetWriter:
    """Writes a new LeRobot dataset at `root`; see the module docstring for the on-disk guarantees."""

    def __init__(
        self,
        root: Path,
        fps: int,
        features: dict,
        robot_type: str | None,
        use_videos: bool,
        codebase_version: str,
        vcodec: str,
        chunks_size: int = fmt.DEFAULT_CHUNK_SIZE,
    ):
        fmt.check_version(codebase_version, "create", fmt.WRITABLE_VERSIONS)
        if vcodec not in video.ENCODERS:
            raise ValueError(f"vcodec: expected one of {sorted(video.ENCODERS)}, got {vcodec!r}")
        if not isinstance(fps, int) or fps <= 0:
            raise ValueError(f"fps: expected a positive int, got {fps!r}")
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(f"create: {root} already exists and is not empty")
        self.root = root
        self.fps = fps
        self.vcodec = vcodec
        self.version = codebase_version
        self.features = _normalize_features(features, use_videos)
        self.info = fmt.new_info(codebase_version, fps, self.features, robot_type, use_videos, chunks_size)
        self.video_keys = [k for k, ft in self.features.items() if ft["dtype"] == "video"]
        self.image_keys = [k for k, ft in self.features.items() if ft["dtype"] == "image"]
        self.value_keys = [
            k
            for k, ft in self.features.items()
            if ft["dtype"] not in fmt.CAMERA_DTYPES and k not in fmt.DEFAULT_FEATURES
        ]
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict] = []
        self.episode_stats: list[dict] = []
        self.total_frames = 0
        self._current_data_table: pa.Table | None = None  # v3.0: rows of the data file being appended to
        root.mkdir(parents=True, exist_ok=True)
        self._scratch = _fileio.staging_dir(root, _SCRATCH_PREFIX)
        self._finalized = False
        fmt.atomic_write_json(root / fmt.INFO_PATH, self.info)
        self._reset_episode()

    # -- recording ----------------------------------------------------------------------------------------

    def _reset_episode(self) -> None:
        self._values: dict[str, list[np.ndarray]] = {key: [] for key in self.value_keys}
        self._timestamps: list[float] = []
        self._frame_tasks: list[str] = []
        self._encoders: dict[str, video.EpisodeVideoEncoder] = {}
        self._image_files: dict[str, list[Path]] = {key: [] for key in self.image_keys}
        self._camera_stats = {key: stats_lib.ImageStats() for key in self.video_keys + self.image_keys}
        self._episode_dir = _fileio.staging_dir(self._scratch, "episode-")

    @property
    def episode_size(self) -> int:
        return len(self._timestamps)

    def add_frame(self, frame: dict) -> None:
        if self._finalized:
            raise RuntimeError("add_frame: the dataset was finalized")
        if not isinstance(frame, dict):
            raise ValueError(f"add_frame: expected a dict, got {type(frame).__name__}")
        task = frame.get("task")
        if not isinstance(task, str) or not task:
            raise ValueError("add_frame: frame['task']: expected a non-empty task string")
        expected = set(self.value_keys + self.video_keys + self.image_keys)
        given = set(frame) - {"task", "timestamp"}
        if given != expected:
            raise ValueError(
                f"add_frame: feature mismatch; missing {sorted(expected - given)}, unexpected {sorted(given - expected)}"
            )
        values = {key: self._checked_value(key, frame[key]) for key in self.value_keys}
        cameras = {key: _to_hwc_uint8(key, frame[key], tuple(self.features[key]["shape"])) for key in self._camera_keys}
        frame_index = self.episode_size
        for key, hwc in cameras.items():
            self._camera_stats[key].add(hwc)
            if key in self.image_keys:
                path = self._episode_dir / f"{key}-{frame_index:06d}.png"
                PIL.Image.fromarray(hwc).save(path, format="PNG", compress_level=1)
                self._image_files[key].append(path)
            else:
                if key not in self._encoders:
                    height, width, _ = hwc.shape
                    path = self._episode_dir / f"{key}.mp4"
                    self._encoders[key] = video.EpisodeVideoEncoder(path, self.fps, height, width, self.vcodec)
                self._encoders[key].add(hwc)
        for key, value in values.items():
            self._values[key].append(value)
        self._timestamps.append(float(frame.get("timestamp", frame_index / self.fps)))
        self._frame_tasks.append(task)

    @property
    def _camera_keys(self) -> list[str]:
        return self.video_keys + self.image_keys

    def _checked_value(self, key: str, value: Any) -> np.ndarray:
        ft = self.features[key]
        shape = tuple(ft["shape"])
        if ft["dtype"] == "string":
            if not isinstance(value, str):
                raise ValueError(f"{key}: expected a string, got {type(value).__name__}")
            return np.asarray(value, dtype=object)
        array = np.asarray(value)
        target = np.dtype(ft["dtype"])
        if not np.can_cast(array.dtype, target, casting="same_kind"):
            raise ValueError(f"{key}: expected dtype {target}, got {array.dtype}")
        if array.shape != shape and not (shape == (1,) and array.shape == ()):
            raise ValueError(f"{key}: expected shape {shape}, got {array.shape}")
        return array.astype(target).reshape(shape)

    # -- saving -------------------------------------------------------------------------------------------

    def save_episode(self) -> None:
        if self._finalized:
            raise RuntimeError("save_episode: the dataset was finalized")
        length = self.episode_size
        if length == 0:
            raise ValueError("save_episode: the episode has no frames; call add_frame() first")
        episode_index = len(self.episode_rows)
        for task in self._frame_tasks:
            self.tasks.setdefault(task, len(self.tasks))
        episode_tasks = list(dict.fromkeys(self._frame_tasks))
        for encoder in self._encoders.values():
            encoder.close()
            _fileio.fsync_file(encoder.path)

        data = {key: np.stack(self._values[key]) for key in self.value_keys}
        data["timestamp"] = np.asarray(self._timestamps, dtype=np.float32)
        data["frame_index"] = np.arange(length, dtype=np.int64)
        data["episode_index"] = np.full(length, episode_index, dtype=np.int64)
        data["index"] = np.arange(self.total_frames, self.total_frames + length, dtype=np.int64)
        data["task_index"] = np.asarray([self.tasks[t] for t in self._frame_tasks], dtype=np.int64)

        episode_stats = {
            k: stats_lib.numeric_stats(v) for k, v in data.items() if self.features[k]["dtype"] != "string"
        }
        episode_stats |= {key: acc.result() for key, acc in self._camera_stats.items()}

        arrays = {key: columns.array_from_numpy(key, self.features[key], data[key]) for key in data}
        for key in self.image_keys:
            arrays[key] = columns.image_array([path.read_bytes() for path in self._image_files[key]])
        ordered = [k for k in self.features if k in arrays]
        table = columns.table_with_hf_metadata({k: arrays[k] for k in ordered}, self.features)

        row = {"episode_index": episode_index, "tasks": episode_tasks, "length": length}
        if fmt.is_v3(self.version):
            self._commit_v3(row, table, episode_stats)
        else:
            self._commit_v2(row, table, episode_stats)
        self.total_frames += length
        shutil.rmtree(self._episode_dir, ignore_errors=True)
        self._reset_episode()

    def _place_episode_video(self, key: str, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._encoders[key].path, destination)

    def _commit_v2(self, row: dict, table: pa.Table, episode_stats: dict) -> None:
        episode_index = row["episode_index"]
        chunk = episode_index // self.info["chunks_size"]
        place = {"episode_chunk": chunk, "episode_index": episode_index}
        _fileio.atomic_write_bytes(self.root / self.info["data_path"].format(**place), _parquet_bytes(table))
        for key in self.video_keys:
            self._place_episode_video(key, self.root / self.info["video_path"].format(video_key=key, **place))
        self.episode_rows.append(row)
        self.episode_stats.append({"episode_index": episode_index, "stats": stats_lib.to_json(episode_stats)})
        tasks = [{"task_index": index, "task": task} for task, index in self.tasks.items()]
        fmt.atomic_write_jsonl(self.root / fmt.LEGACY_TASKS_PATH, tasks)
        fmt.atomic_write_jsonl(self.root / fmt.LEGACY_EPISODES_STATS_PATH, self.episode_stats)
        fmt.atomic_write_jsonl(self.root / fmt.LEGACY_EPISODES_PATH, self.episode_rows)
        episodes = len(self.episode_rows)
        self.info["total_videos"] = episodes * len(self.video_keys)
        self.info["total_chunks"] = math.ceil(episodes / self.info["chunks_size"])
        self._write_info(row["length"])

    def _commit_v3(self, row: dict, table: pa.Table, episode_stats: dict) -> None:
        previous = self.episode_rows[-1] if self.episode_rows else None
        chunks_size = self.info["chunks_size"]
        row |= self._append_data_v3(previous, table, chunks_size)
        for key in self.video_keys:
            row |= self._append_video_v3(key, previous, row["length"], chunks_size)
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        row |= stats_lib.flatten(episode_stats)
        self.episode_rows.append(row)
        self.episode_stats.append(episode_stats)
        task_table = pa.table(
            {"task_index": pa.array(list(self.tasks.values()), pa.int64()), "__index_level_0__": list(self.tasks)}
        )
        pandas_index = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [],
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
        }
        task_table = task_table.replace_schema_metadata({b"pandas": fmt.json_bytes(pandas_index)})
        _fileio.atomic_write_bytes(self.root / fmt.TASKS_PATH, _parquet_bytes(task_table))
        episodes_path = self.root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
        _fileio.atomic_write_bytes(episodes_path, _parquet_bytes(pa.Table.from_pylist(self.episode_rows)))
        fmt.atomic_write_json(self.root / fmt.STATS_PATH, stats_lib.to_json(stats_lib.aggregate(self.episode_stats)))
        self._write_info(row["length"])

    def _append_data_v3(self, previous: dict | None, table: pa.Table, chunks_size: int) -> dict:
        if previous is None:
            chunk_index, file_index = 0, 0
            self._current_data_table = table
        else:
            chunk_index, file_index = previous["data/chunk_index"], previous["data/file_index"]
            current = self.root / fmt.DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
            current_mb = current.stat().st_size / 2**20
            per_frame_mb = current_mb / max(1, self._current_data_table.num_rows)
            if current_mb + per_frame_mb * table.num_rows >= self.info["data_files_size_in_mb"]:
                chunk_index, file_index = _next_file(chunk_index, file_index, chunks_size)
                self._current_data_table = table
            else:
                self._current_data_table = pa.concat_tables([self._current_data_table, table])
        path = self.root / fmt.DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        _fileio.atomic_write_bytes(path, _parquet_bytes(self._current_data_table))
        return {
            "data/chunk_index": chunk_index,
            "data/file_index": file_index,
            "dataset_from_index": self.total_frames,
            "dataset_to_index": self.total_frames + table.num_rows,
        }

    def _append_video_v3(self, key: str, previous: dict | None, length: int, chunks_size: int) -> dict:
        prefix = f"videos/{key}"
        episode_mp4 = self._encoders[key].path
        duration = length / self.fps
        if previous is None:
            chunk_index, file_index, start = 0, 0, 0.0
        else:
            chunk_index, file_index = previous[f"{prefix}/chunk_index"], previous[f"{prefix}/file_index"]
            start = previous[f"{prefix}/to_timestamp"]
            current = self.root / fmt.VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
            if (current.stat().st_size + episode_mp4.stat().st_size) / 2**20 >= self.info["video_files_size_in_mb"]:
                chunk_index, file_index, start = *_next_file(chunk_index, file_index, chunks_size), 0.0
        path = self.root / fmt.VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
        if start == 0.0:
            self._place_episode_video(key, path)
        else:
            with _fileio.atomic_path(path) as grown:
                video.concat_videos([(path, start), (episode_mp4, duration)], grown)
        return {
            f"{prefix}/chunk_index": chunk_index,
            f"{prefix}/file_index": file_index,
            f"{prefix}/from_timestamp": start,
            f"{prefix}/to_timestamp": start + duration,
        }

    def _write_info(self, episode_length: int) -> None:
        episodes = len(self.episode_rows)
        for key in self.video_keys:
            if "info" not in self.info["features"][key]:
                first = self.root / self.info["video_path"].format(
                    video_key=key, episode_chunk=0, episode_index=0, chunk_index=0, file_index=0
                )
                self.info["features"][key]["info"] = video.video_info(first, self.fps)
        self.info["total_episodes"] = episodes
        self.info["total_frames"] = self.total_frames + episode_length
        self.info["total_tasks"] = len(self.tasks)
        self.info["splits"] = {"train": f"0:{episodes}"}
        fmt.atomic_write_json(self.root / fmt.INFO_PATH, self.info)

    def finalize(self) -> None:
        """Drops unsaved frames and the scratch directory; saved episodes are already complete on disk."""
        if self._finalized:
            return
        if self.episode_size:
            logger.warning("finalize: discarding %d frames added since the last save_episode()", self.episode_size)
        for encoder in self._encoders.values():
            try:
                encoder.close()
            except Exception:  # the unsaved episode is thrown away anyway
                logger.debug("closing the encoder of an unsaved episode failed", exc_info=True)
        shutil.rmtree(self._scratch, ignore_errors=True)
        self._finalized = True
