"""Per-episode feature statistics (min, max, mean, std, count) as LeRobot stores them, and their aggregation."""

import numpy as np

STAT_NAMES = ("min", "max", "mean", "std", "count")


def numeric_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats over frames (axis 0); a scalar column gives shape-(1,) stats like lerobot's `keepdims`."""
    values = np.asarray(values, dtype=np.float64)
    keepdims = values.ndim == 1
    return {
        "min": np.min(values, axis=0, keepdims=keepdims),
        "max": np.max(values, axis=0, keepdims=keepdims),
        "mean": np.mean(values, axis=0, keepdims=keepdims),
        "std": np.std(values, axis=0, keepdims=keepdims),
        "count": np.array([len(values)]),
    }


class ImageStats:
    """Running per-channel stats of uint8 HWC frames, reported in [0, 1] with shape (C, 1, 1) like lerobot."""

    _MAX_SIDE = 150  # frames are strided down to about this size before accumulating

    def __init__(self):
        self._sum = self._sum_sq = self._min = self._max = None
        self._pixels = 0
        self._frames = 0

    def add(self, hwc: np.ndarray) -> None:
        stride = max(1, max(hwc.shape[:2]) // self._MAX_SIDE)
        pixels = hwc[::stride, ::stride].reshape(-1, hwc.shape[-1]).astype(np.float64) / 255.0
        if self._sum is None:
            self._sum = np.zeros(pixels.shape[1])
            self._sum_sq = np.zeros(pixels.shape[1])
            self._min = np.full(pixels.shape[1], np.inf)
            self._max = np.full(pixels.shape[1], -np.inf)
        self._sum += pixels.sum(axis=0)
        self._sum_sq += (pixels**2).sum(axis=0)
        self._min = np.minimum(self._min, pixels.min(axis=0))
        self._max = np.maximum(self._max, pixels.max(axis=0))
        self._pixels += len(pixels)
        self._frames += 1

    def result(self) -> dict[str, np.ndarray]:
        mean = self._sum / self._pixels
        std = np.sqrt(np.maximum(self._sum_sq / self._pixels - mean**2, 0.0))
        per_channel = {"min": self._min, "max": self._max, "mean": mean, "std": std}
        return {name: value.reshape(-1, 1, 1) for name, value in per_channel.items()} | {
            "count": np.array([self._frames])
        }


def aggregate(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Combines per-episode stats: min of mins, max of maxes, count-weighted mean and pooled std."""
    keys = {key for stats in stats_list for key in stats}
    result = {}
    for key in sorted(keys):
        parts = [stats[key] for stats in stats_list if key in stats]
        counts = np.array([float(np.asarray(p["count"]).reshape(-1)[0]) for p in parts])
        means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])
        variances = np.stack([np.asarray(p["std"], dtype=np.float64) ** 2 for p in parts])
        weights = (counts / counts.sum()).reshape(-1, *([1] * (means.ndim - 1)))
        mean = (weights * means).sum(axis=0)
        variance = (weights * (variances + (means - mean) ** 2)).sum(axis=0)
        result[key] = {
            "min": np.min(np.stack([np.asarray(p["min"]) for p in parts]), axis=0),
            "max": np.max(np.stack([np.asarray(p["max"]) for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(variance),
            "count": np.array([int(counts.sum())]),
        }
    return result


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {key: {name: np.asarray(value).tolist() for name, value in ft.items()} for key, ft in stats.items()}


def from_json(stats: dict) -> dict[str, dict[str, np.ndarray]]:
    return {key: {name: np.asarray(value) for name, value in ft.items()} for key, ft in stats.items()}


def flatten(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, list]:
    """Columns `stats/<feature>/<stat>` of v3.0's meta/episodes parquet."""
    return {
        f"stats/{key}/{name}": np.asarray(value).tolist() for key, ft in stats.items() for name, value in ft.items()
    }


def unflatten(row: dict) -> dict[str, dict[str, np.ndarray]]:
    stats: dict[str, dict[str, np.ndarray]] = {}
    for column, value in row.items():
        if column.startswith("stats/") and value is not None:
            key, _, name = column.removeprefix("stats/").rpartition("/")
            stats.setdefault(key, {})[name] = np.asarray(value)
    return stats
