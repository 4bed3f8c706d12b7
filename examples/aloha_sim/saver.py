"""A runtime subscriber that writes each episode's `cam_high` view to `<out_dir>/episode_<i>.mp4`."""

from __future__ import annotations

import logging
import pathlib

import numpy as np

from openpi.lerobot import video as _video
from openpi.shared import fileio as _fileio
from openpi_client.runtime import subscriber as _subscriber

logger = logging.getLogger(__name__)


class VideoSaver(_subscriber.Subscriber):
    """Encodes frames as they arrive (H.264); a video appears under its final name only once complete."""

    def __init__(self, out_dir: pathlib.Path, fps: int = 50, camera: str = "cam_high") -> None:
        self._out_dir = pathlib.Path(out_dir)
        self._fps = fps
        self._camera = camera
        self._episode = -1
        self._encoder: _video.EpisodeVideoEncoder | None = None
        self.paths: list[pathlib.Path] = []

    def on_episode_start(self) -> None:
        self._episode += 1
        self._encoder = None

    def on_step(self, observation: dict, action: dict) -> None:
        chw = np.asarray(observation["images"][self._camera])
        # yuv420p needs even sides: drop a last odd row / column.
        hwc = chw.transpose(1, 2, 0)[: chw.shape[1] // 2 * 2, : chw.shape[2] // 2 * 2]
        if self._encoder is None:
            self._out_dir.mkdir(parents=True, exist_ok=True)
            path = self._out_dir / f".episode_{self._episode:03d}.mp4.partial"
            self._encoder = _video.EpisodeVideoEncoder(path, self._fps, hwc.shape[0], hwc.shape[1], "h264")
        self._encoder.add(hwc)

    def on_episode_end(self) -> None:
        if self._encoder is None:
            return
        self._encoder.close()
        path = self._out_dir / f"episode_{self._episode:03d}.mp4"
        _fileio.fsync_file(self._encoder.path)  # so that a crash after the rename cannot leave an empty video
        self._encoder.path.replace(path)
        self._encoder = None
        self.paths.append(path)
        logger.info("Saved video to %s", path)
