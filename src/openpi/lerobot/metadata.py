"""LeRobotDatasetMetadata: info, tasks, episodes and stats of a local (or downloaded) LeRobot dataset, any version."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from openpi.lerobot import format as fmt
from openpi.lerobot import stats as stats_lib

logger = logging.getLogger(__name__)


def resolve_root(repo_id: str, root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else fmt.lerobot_home() / repo_id


def fetch_if_missing(repo_id: str, root: Path, revision: str | None, local_files_only: bool) -> None:
    """Downloads the dataset snapshot from the Hugging Face Hub when meta/info.json is absent locally."""
    if (root / fmt.INFO_PATH).is_file():
        return
    if local_files_only:
        raise FileNotFoundError(
            f"{repo_id}: no LeRobot dataset at {root} (missing {fmt.INFO_PATH}) and local_files_only=True"
        )
    from huggingface_hub import snapshot_download  # imported here: only the download path needs it

    logger.info("Downloading dataset %s to %s", repo_id, root)
    try:
        snapshot_download(repo_id, repo_type="dataset", revision=revision, local_dir=root)
    except Exception as e:  # network, auth, missing repo or offline mode: all mean "no dataset here"
        raise FileNotFoundError(
            f"{repo_id}: not at {root} and not downloadable from the Hugging Face Hub ({type(e).__name__}: {e})"
        ) from e
    if not (root / fmt.INFO_PATH).is_file():
        raise FileNotFoundError(f"{repo_id}: downloaded snapshot at {root} has no {fmt.INFO_PATH}")


def _read_v3_tasks(path: Path) -> dict[int, str]:
    """meta/tasks.parquet: column `task_index`, the task string in column `task` or the pandas index."""
    if not path.is_file():
        raise FileNotFoundError(f"{fmt.TASKS_PATH}: missing file {path}")
    table = pq.read_table(path)
    task_column = "task" if "task" in table.column_names else None
    if task_column is None:
        pandas_meta = table.schema.pandas_metadata or {}
        index_columns = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
        task_column = index_columns[0] if index_columns else "__index_level_0__"
    if task_column not in table.column_names or "task_index" not in table.column_names:
        raise ValueError(f"{path}: expected columns 'task_index' and the task strings, got {table.column_names}")
    indices = table.column("task_index").to_pylist()
    return {int(i): str(t) for i, t in zip(indices, table.column(task_column).to_pylist(), strict=True)}


def _read_v3_episodes(root: Path) -> list[dict]:
    paths = sorted((root / fmt.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"{fmt.EPISODES_DIR}: no episode metadata parquet under {root / fmt.EPISODES_DIR}")
    rows = []
    for path in paths:
        schema = pq.read_schema(path)
        columns = [name for name in schema.names if not name.startswith("stats/")]
        rows.extend(pq.read_table(path, columns=columns).to_pylist())
    return rows


class LeRobotDatasetMetadata:
    """Metadata of a LeRobot dataset: `info`, `fps`, `features`, `tasks`, `episodes`, `stats`, totals.

    `tasks` maps task_index -> task string. `episodes` maps episode_index -> that episode's metadata row
    (`length`, `tasks`, and for v3.0 the file and timestamp columns). Totals are counted from the episode
    metadata, which is the source of truth even when info.json lags behind (e.g. after a crash mid-save).
    """

    def __init__(
        self,
        repo_id: str,
        root: str | Path | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ):
        self.repo_id = repo_id
        self.root = resolve_root(repo_id, root)
        fetch_if_missing(repo_id, self.root, revision, local_files_only)
        self.info: dict[str, Any] = fmt.load_json(self.root / fmt.INFO_PATH, fmt.INFO_PATH)
        self._validate_info()
        self.codebase_version = fmt.check_version(self.info.get("codebase_version"), str(self.root / fmt.INFO_PATH))
        if fmt.is_v3(self.codebase_version):
            self.tasks = _read_v3_tasks(self.root / fmt.TASKS_PATH)
            rows = _read_v3_episodes(self.root)
        else:
            task_rows = fmt.load_jsonl(self.root / fmt.LEGACY_TASKS_PATH, fmt.LEGACY_TASKS_PATH)
            self.tasks = {int(row["task_index"]): str(row["task"]) for row in task_rows}
            rows = fmt.load_jsonl(self.root / fmt.LEGACY_EPISODES_PATH, fmt.LEGACY_EPISODES_PATH)
        self.episodes: dict[int, dict] = {}
        for row in rows:
            if "episode_index" not in row or "length" not in row:
                raise ValueError(f"{self.root}: episode metadata row lacks 'episode_index' or 'length': {row}")
            self.episodes[int(row["episode_index"])] = row
        self.episodes = dict(sorted(self.episodes.items()))
        self.stats = self._load_stats()

    def _validate_info(self) -> None:
        features = self.info.get("features")
        if not isinstance(features, dict) or not features:
            raise ValueError(f"{self.root / fmt.INFO_PATH}: features: expected a non-empty mapping")
        for key, ft in features.items():
            if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
                raise ValueError(f"{self.root / fmt.INFO_PATH}: features.{key}: expected keys 'dtype' and 'shape'")
        for field in ("fps", "data_path"):
            if field not in self.info:
                raise ValueError(f"{self.root / fmt.INFO_PATH}: missing field '{field}'")
        if self.video_keys and not self.info.get("video_path"):
            raise ValueError(f"{self.root / fmt.INFO_PATH}: video_path: expected a path template for video features")

    def _load_stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        per_episode_path = self.root / fmt.LEGACY_EPISODES_STATS_PATH
        if not fmt.is_v3(self.codebase_version) and per_episode_path.is_file():
            rows = fmt.load_jsonl(per_episode_path, fmt.LEGACY_EPISODES_STATS_PATH)
            return stats_lib.aggregate([stats_lib.from_json(row["stats"]) for row in rows]) if rows else None
        if (self.root / fmt.STATS_PATH).is_file():
            return stats_lib.from_json(fmt.load_json(self.root / fmt.STATS_PATH, fmt.STATS_PATH))
        return None

    @property
    def fps(self) -> int:
        return self.info["fps"]

    @property
    def features(self) -> dict[str, dict]:
        return self.info["features"]

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def total_episodes(self) -> int:
        return len(self.episodes)

    @property
    def total_frames(self) -> int:
        return sum(int(ep["length"]) for ep in self.episodes.values())

    @property
    def total_tasks(self) -> int:
        return len(self.tasks)

    @property
    def chunks_size(self) -> int:
        return int(self.info.get("chunks_size", fmt.DEFAULT_CHUNK_SIZE))

    @property
    def video_keys(self) -> list[str]:
        return [key for key, ft in self.features.items() if ft["dtype"] == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [key for key, ft in self.features.items() if ft["dtype"] == "image"]

    @property
    def camera_keys(self) -> list[str]:
        return [key for key, ft in self.features.items() if ft["dtype"] in fmt.CAMERA_DTYPES]

    @property
    def names(self) -> dict[str, Any]:
        return {key: ft.get("names") for key, ft in self.features.items()}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: fmt.feature_shape(ft) for key, ft in self.features.items()}

    def get_task_index(self, task: str) -> int | None:
        return next((index for index, text in self.tasks.items() if text == task), None)

    def _chunk_file(self, episode_index: int, prefix: str) -> dict[str, int]:
        row = self.episodes[episode_index]
        if fmt.is_v3(self.codebase_version):
            try:
                return {
                    "chunk_index": int(row[f"{prefix}/chunk_index"]),
                    "file_index": int(row[f"{prefix}/file_index"]),
                }
            except (KeyError, TypeError) as e:
                raise ValueError(f"{fmt.EPISODES_DIR}: episode {episode_index} lacks column {e}") from e
        chunk = episode_index // self.chunks_size
        return {"episode_chunk": chunk, "chunk_index": chunk, "episode_index": episode_index}

    def data_file(self, episode_index: int) -> Path:
        return self.root / self.info["data_path"].format(**self._chunk_file(episode_index, "data"))

    def video_file(self, episode_index: int, video_key: str) -> Path:
        template = self.info["video_path"]
        return self.root / template.format(
            video_key=video_key, **self._chunk_file(episode_index, f"videos/{video_key}")
        )

    def video_from_timestamp(self, episode_index: int, video_key: str) -> float:
        """Where the episode starts inside its mp4 (v3.0 concatenates episodes; v2.x files start at 0)."""
        if not fmt.is_v3(self.codebase_version):
            return 0.0
        return float(self.episodes[episode_index][f"videos/{video_key}/from_timestamp"])

    def __repr__(self) -> str:
        return (
            f"LeRobotDatasetMetadata(repo_id={self.repo_id!r}, version={self.codebase_version}, "
            f"episodes={self.total_episodes}, frames={self.total_frames}, features={list(self.features)})"
        )
