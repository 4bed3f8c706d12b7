"""LeRobot datasets (codebase v2.0, v2.1, v3.0) read and written without torch or the lerobot package.

Reading keeps the lerobot API::

    ds = LeRobotDataset("lerobot/aloha_sim_transfer_cube_human", delta_timestamps={"action": [t / 50 for t in range(50)]})
    len(ds)            # total frames (of the selected `episodes`)
    item = ds[i]       # numpy: "observation.state", "action" (50, D) + "action_is_pad" (50,), each camera key
                       # as float32 CHW in [0, 1], "timestamp", "frame_index", "episode_index", "index",
                       # "task_index", "task" (the prompt string)
    ds.meta.fps, ds.meta.total_frames, ds.meta.total_episodes, ds.meta.features, ds.meta.tasks, ds.meta.info

The dataset lives in `root`, default `$HF_LEROBOT_HOME/<repo_id>`; when it is absent and `local_files_only`
is false it is fetched with `huggingface_hub.snapshot_download`. Non-video columns are loaded once into numpy,
so an item without cameras costs microseconds. Video frames are decoded with PyAV by seeking to the keyframe
before the frame's timestamp and decoding forward; open containers are cached per process and thread.
`delta_timestamps[key]` (seconds, multiples of 1/fps) stacks frames around each item, clamped to its episode,
with `<key>_is_pad` True where clamped, exactly like lerobot.

Fast path for whole columns (never decodes video), e.g. for norm stats::

    columns = ds.hf_columns(["observation.state", "action"])  # {key: np.ndarray (num_frames, *shape)}

Writing (`codebase_version` "v2.1" or "v3.0"; videos in mp4, H.264 via libx264 or AV1 via libsvtav1, yuv420p)::

    ds = LeRobotDataset.create("me/my_data", fps=50, features={
        "observation.state": {"dtype": "float32", "shape": (14,), "names": None},
        "action": {"dtype": "float32", "shape": (14,), "names": None},
        "observation.images.top": {"dtype": "video", "shape": (480, 640, 3), "names": ["height", "width", "channels"]},
    }, codebase_version="v3.0")
    for frame in episode:
        ds.add_frame({"observation.state": ..., "action": ..., "observation.images.top": hwc_uint8, "task": "..."})
    ds.save_episode()   # the episode is on disk, complete, and readable from here on (even if we crash later)
    ds.finalize()
"""

from collections.abc import Callable, Sequence
import concurrent.futures
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from openpi.lerobot import columns as columns_lib
from openpi.lerobot import format as fmt
from openpi.lerobot import metadata as metadata_lib
from openpi.lerobot import video as video_lib
from openpi.lerobot import writer as writer_lib

LeRobotDatasetMetadata = metadata_lib.LeRobotDatasetMetadata
VideoDecodeError = video_lib.VideoDecodeError
CODEBASE_VERSIONS = fmt.SUPPORTED_VERSIONS


def hf_lerobot_home() -> Path:
    """Where datasets live by default: `$HF_LEROBOT_HOME` (else `$HF_HOME/lerobot`, else ~/.cache/huggingface/lerobot)."""
    return fmt.lerobot_home()


def _delta_indices(delta_timestamps: dict[str, Sequence[float]], fps: int, tolerance_s: float) -> dict[str, np.ndarray]:
    indices = {}
    for key, deltas in delta_timestamps.items():
        frames = np.asarray(deltas, dtype=np.float64) * fps
        off_grid = np.abs(frames - np.round(frames)) / fps > tolerance_s
        if off_grid.any():
            raise ValueError(
                f"delta_timestamps.{key}: expected multiples of 1/fps (1/{fps}s), got {np.asarray(deltas)[off_grid].tolist()}"
            )
        indices[key] = np.round(frames).astype(np.int64)
    return indices


class LeRobotDataset:
    """Random access to the frames of a LeRobot dataset; `create()` starts a new one for writing."""

    def __init__(
        self,
        repo_id: str,
        root: str | Path | None = None,
        episodes: Sequence[int] | None = None,
        delta_timestamps: dict[str, Sequence[float]] | None = None,
        tolerance_s: float = 1e-4,
        revision: str | None = None,
        local_files_only: bool = False,
        image_transforms: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.repo_id = repo_id
        self.root = metadata_lib.resolve_root(repo_id, root)
        self.episodes = None if episodes is None else [int(e) for e in episodes]
        self.delta_timestamps = delta_timestamps
        self.tolerance_s = tolerance_s
        self.image_transforms = image_transforms
        self._revision = revision
        self._local_files_only = local_files_only
        self._writer: writer_lib.DatasetWriter | None = None
        self._decoder = video_lib.VideoDecoder()
        self._load()

    @classmethod
    def create(
        cls,
        repo_id: str,
        fps: int,
        features: dict[str, dict],
        root: str | Path | None = None,
        robot_type: str | None = None,
        use_videos: bool = True,
        codebase_version: str = "v2.1",
        vcodec: str = "h264",
        tolerance_s: float = 1e-4,
    ) -> "LeRobotDataset":
        """A new, empty dataset at `root` (default `$HF_LEROBOT_HOME/<repo_id>`), which must not hold files yet."""
        dataset = cls.__new__(cls)
        dataset.repo_id = repo_id
        dataset.root = metadata_lib.resolve_root(repo_id, root)
        dataset.episodes = None
        dataset.delta_timestamps = None
        dataset.tolerance_s = tolerance_s
        dataset.image_transforms = None
        dataset._revision = None
        dataset._local_files_only = True
        dataset._decoder = video_lib.VideoDecoder()
        dataset._writer = writer_lib.DatasetWriter(
            dataset.root, fps, features, robot_type, use_videos, codebase_version, vcodec
        )
        dataset._loaded = False
        return dataset

    # -- writing ------------------------------------------------------------------------------------------

    def _require_writer(self) -> writer_lib.DatasetWriter:
        if self._writer is None:
            raise RuntimeError(f"{self.repo_id}: opened for reading; use LeRobotDataset.create() to write")
        return self._writer

    def add_frame(self, frame: dict[str, Any]) -> None:
        """Buffers one frame: every feature (images HWC uint8 or CHW float), "task", optionally "timestamp"."""
        self._require_writer().add_frame(frame)

    def save_episode(self) -> None:
        """Writes the buffered frames as the next episode (files first, then metadata; see module docstring)."""
        self._require_writer().save_episode()
        self._loaded = False

    def finalize(self) -> None:
        """Ends writing: discards frames added after the last save_episode() and the writer's scratch files."""
        self._require_writer().finalize()

    # -- reading ------------------------------------------------------------------------------------------

    def _load(self) -> None:
        self.meta = LeRobotDatasetMetadata(self.repo_id, self.root, self._revision, self._local_files_only)
        available = self.meta.episodes
        selected = list(available) if self.episodes is None else sorted(set(self.episodes))
        missing = [e for e in selected if e not in available]
        if missing:
            raise ValueError(f"episodes: {missing} not in {self.repo_id} (it has {len(available)} episodes)")
        self._selected = selected
        lengths = np.asarray([int(available[e]["length"]) for e in selected], dtype=np.int64)
        self._episode_to = np.cumsum(lengths)
        self._episode_from = self._episode_to - lengths
        for episode in selected:
            for key in self.meta.video_keys:
                path = self.meta.video_file(episode, key)
                if not path.is_file():
                    raise FileNotFoundError(f"episode {episode}: video file for {key} missing: {path}")
        self._columns = self._read_columns(lengths)
        self._delta_indices = (
            None
            if self.delta_timestamps is None
            else _delta_indices(self.delta_timestamps, self.meta.fps, self.tolerance_s)
        )
        if self._delta_indices is not None:
            unknown = set(self._delta_indices) - set(self._columns) - set(self.meta.video_keys)
            if unknown:
                raise ValueError(f"delta_timestamps: keys {sorted(unknown)} are not features of {self.repo_id}")
        self._loaded = True

    def _read_columns(self, lengths: np.ndarray) -> dict[str, np.ndarray | columns_lib.ImageColumn]:
        """Non-video columns of the selected episodes, in episode order, read from their files in parallel."""
        features = self.meta.features
        wanted = [k for k, ft in features.items() if ft["dtype"] != "video"]
        files: dict[Path, list[tuple[int, int]]] = {}
        for episode, length in zip(self._selected, lengths, strict=True):
            files.setdefault(self.meta.data_file(episode), []).append((episode, int(length)))
        for path, episodes in files.items():
            if not path.is_file():
                raise FileNotFoundError(f"episode {episodes[0][0]}: data file missing: {path}")

        def read(path: Path) -> pa.Table:
            table = pq.read_table(path, memory_map=True)
            absent = [k for k in wanted if k not in table.column_names]
            if absent:
                raise ValueError(f"{path}: lacks columns {absent} declared in {fmt.INFO_PATH} features")
            episode_of_row = table.column("episode_index").to_numpy()
            order = np.argsort(episode_of_row, kind="stable")  # rows grouped by episode, file order kept within
            bounds = np.searchsorted(episode_of_row[order], [e for e, _ in files[path]], side="left")
            ends = np.searchsorted(episode_of_row[order], [e for e, _ in files[path]], side="right")
            for (episode, length), begin, end in zip(files[path], bounds, ends, strict=True):
                if end - begin != length:
                    raise ValueError(f"{path}: episode {episode} has {end - begin} frames, metadata says {length}")
            rows = np.concatenate([order[begin:end] for begin, end in zip(bounds, ends, strict=True)])
            return table.select(wanted).take(rows)

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
            pieces = list(pool.map(read, files))
        if not pieces:
            return {k: np.zeros((0, *fmt.feature_shape(features[k]))) for k in wanted}
        combined = pa.concat_tables(pieces, promote_options="permissive")
        shapes = self.meta.shapes
        return {k: columns_lib.column_to_numpy(k, combined.column(k), shapes[k]) for k in wanted}

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._load()

    @property
    def fps(self) -> int:
        self._ensure_loaded()
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict]:
        self._ensure_loaded()
        return self.meta.features

    @property
    def num_frames(self) -> int:
        self._ensure_loaded()
        return int(self._episode_to[-1]) if len(self._episode_to) else 0

    @property
    def num_episodes(self) -> int:
        self._ensure_loaded()
        return len(self._selected)

    @property
    def episode_data_index(self) -> dict[str, np.ndarray]:
        """Per selected episode, the [from, to) range of its frames in this dataset's indexing."""
        self._ensure_loaded()
        return {"from": self._episode_from.copy(), "to": self._episode_to.copy()}

    def __len__(self) -> int:
        return self.num_frames

    def hf_columns(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Whole non-camera columns as numpy arrays over all selected frames (no video decoding)."""
        self._ensure_loaded()
        keys = [k for k in self._columns if k not in self.meta.camera_keys] if keys is None else list(keys)
        result = {}
        for key in keys:
            column = self._columns.get(key)
            if column is None or isinstance(column, columns_lib.ImageColumn):
                raise ValueError(f"hf_columns: {key!r} is not a non-camera column; have {sorted(self._columns)}")
            result[key] = column
        return result

    def _camera(self, key: str, positions: np.ndarray, episode: int) -> np.ndarray:
        """float32 (T, C, H, W) in [0, 1] for the frames at `positions` (all inside `episode`)."""
        if key in self.meta.video_keys:
            offset = self.meta.video_from_timestamp(episode, key)
            timestamps = [float(t) + offset for t in self._columns["timestamp"][positions]]
            hwc = self._decoder.frames_at(self.meta.video_file(episode, key), timestamps, self.tolerance_s)
        else:
            hwc = np.stack([self._columns[key].hwc_uint8(int(p)) for p in positions])
        chw = np.multiply(hwc.transpose(0, 3, 1, 2), np.float32(1 / 255), dtype=np.float32)
        if self.image_transforms is not None:
            chw = np.stack([self.image_transforms(image) for image in chw])
        return chw

    def __getitem__(self, idx: int) -> dict[str, Any]:
        self._ensure_loaded()
        size = self.num_frames
        idx = int(idx)
        if idx < 0:
            idx += size
        if not 0 <= idx < size:
            raise IndexError(f"index {idx} out of range for {size} frames")
        slot = int(np.searchsorted(self._episode_to, idx, side="right"))
        episode = self._selected[slot]
        start, stop = int(self._episode_from[slot]), int(self._episode_to[slot])
        item: dict[str, Any] = {}
        for key, column in self._columns.items():
            if isinstance(column, np.ndarray):
                item[key] = column[idx] if column.dtype == object else np.array(column[idx])
        stacked: dict[str, np.ndarray] = {}
        for key, deltas in (self._delta_indices or {}).items():
            wanted = idx + deltas
            stacked[key] = np.clip(wanted, start, stop - 1)
            item[f"{key}_is_pad"] = (wanted < start) | (wanted >= stop)
            if key in self._columns and key not in self.meta.camera_keys:
                item[key] = self._columns[key][stacked[key]]
        for key in self.meta.camera_keys:
            if key in stacked:
                item[key] = self._camera(key, stacked[key], episode)
            else:
                item[key] = self._camera(key, np.array([idx]), episode)[0]
        item["task"] = self.meta.tasks[int(item["task_index"])]
        return item

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset(repo_id={self.repo_id!r}, root={str(self.root)!r}, "
            f"episodes={self.num_episodes}, frames={self.num_frames}, features={list(self.features)})"
        )
