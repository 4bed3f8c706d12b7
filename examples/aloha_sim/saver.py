"""Runtime subscribers that film episodes: `VideoSaver` (the policy's `cam_high` input as it is) and `EpisodeFilm`
(the scene rendered for viewing, with seed, step and outcome written on it)."""

from __future__ import annotations

import logging
import pathlib

import env as _env
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import sim as _sim

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


def caption(frame: np.ndarray, lines: tuple[str, str], colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """`frame` (HWC uint8) with `lines` (left, right) written on a dark band across its top."""
    image = PIL.Image.fromarray(frame)
    draw = PIL.ImageDraw.Draw(image)
    size = max(10, image.height // 16)
    font = PIL.ImageFont.load_default(size=size)
    draw.rectangle([0, 0, image.width, size + 6], fill=(0, 0, 0))
    draw.text((4, 3), lines[0], fill=colour, font=font)
    draw.text((image.width - 4, 3), lines[1], fill=colour, font=font, anchor="ra")
    return np.asarray(image)


SUCCESS_COLOUR = (80, 220, 80)
FAILURE_COLOUR = (240, 70, 70)


class EpisodeFilm(_subscriber.Subscriber):
    """Films each episode of an `AlohaSimEnvironment` for people to watch, apart from what the policy sees.

    Every `stride`-th step renders the top camera at `resolution` (height, width) with the episode's seed, step and
    task reward written on it; the video plays at 50 / `stride` frames per second and ends on the last frame held for
    a second, marked success (green) or failure (red). Episode `i` of the environment is saved as
    `<out_dir>/episode_<names[i]>.mp4` (default: `i` on three digits); `last_frames[i]` is its marked last frame.
    """

    def __init__(
        self,
        environment: _env.AlohaSimEnvironment,
        out_dir: pathlib.Path,
        resolution: tuple[int, int] = (240, 320),
        stride: int = 2,
        names: list[str] | None = None,
    ) -> None:
        if len(resolution) != 2 or min(resolution) < 2:
            raise ValueError(f"resolution: expected (height, width) >= 2, got {resolution}")
        if stride < 1:
            raise ValueError(f"stride: expected >= 1, got {stride}")
        self._environment = environment
        self._out_dir = pathlib.Path(out_dir)
        # yuv420p needs even sides.
        self._resolution = (resolution[0] // 2 * 2, resolution[1] // 2 * 2)
        self._stride = stride
        self._names = names
        self._episode = -1
        self._encoder: _video.EpisodeVideoEncoder | None = None
        self.paths: list[pathlib.Path] = []
        self.last_frames: list[np.ndarray] = []

    @property
    def fps(self) -> float:
        return _sim.FPS / self._stride

    def _name(self) -> str:
        return self._names[self._episode] if self._names is not None else f"{self._episode:03d}"

    def _film(self) -> None:
        environment = self._environment
        status = f"step {environment.episode_steps}/{environment.max_steps}"
        captioned = caption(
            environment.render_view(*self._resolution),
            (f"seed {environment.episode_seed}", f"{status}  reward {environment.episode_max_reward}/4"),
        )
        if self._encoder is None:
            self._out_dir.mkdir(parents=True, exist_ok=True)
            path = self._out_dir / f".episode_{self._name()}.mp4.partial"
            self._encoder = _video.EpisodeVideoEncoder(path, self.fps, *self._resolution, "h264")
        self._encoder.add(captioned)

    def on_episode_start(self) -> None:
        self._episode += 1
        self._encoder = None
        self._film()  # the start pose

    def on_step(self, observation: dict, action: dict) -> None:
        # Called after the action is applied: the frame shows the scene after `episode_steps` actions.
        if self._environment.episode_steps % self._stride == 0:
            self._film()

    def on_episode_end(self) -> None:
        environment = self._environment
        if self._encoder is None:
            return
        succeeded = environment.episode_succeeded
        final = caption(
            environment.render_view(*self._resolution),
            (
                f"seed {environment.episode_seed}",
                f"{'SUCCESS' if succeeded else 'FAILURE'} at step {environment.episode_steps}",
            ),
            SUCCESS_COLOUR if succeeded else FAILURE_COLOUR,
        )
        for _ in range(round(self.fps)):
            self._encoder.add(final)
        self._encoder.close()
        path = self._out_dir / f"episode_{self._name()}.mp4"
        _fileio.fsync_file(self._encoder.path)
        self._encoder.path.replace(path)
        self._encoder = None
        self.paths.append(path)
        self.last_frames.append(final)
        logger.info("Saved video to %s", path)
