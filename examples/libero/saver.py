"""Saves each episode's agent-view frames as an mp4 (written to a temp file, then renamed)."""

from __future__ import annotations

from collections.abc import Callable
import os
import pathlib
import uuid

import av
import numpy as np

from openpi_client.runtime import subscriber as _subscriber


class VideoSaver(_subscriber.Subscriber):
    """Writes `<out_dir>/<name()>.mp4` at the end of every episode from the observations' `image_key` frames."""

    def __init__(self, out_dir: pathlib.Path, name: Callable[[], str], image_key: str, fps: int = 10) -> None:
        self._out_dir = pathlib.Path(out_dir)
        self._name = name
        self._image_key = image_key
        self._fps = fps
        self._frames: list[np.ndarray] = []

    def on_episode_start(self) -> None:
        self._frames = []

    def on_step(self, observation: dict, action: dict) -> None:
        self._frames.append(np.asarray(observation[self._image_key]))

    def on_episode_end(self) -> None:
        if self._frames:
            write_mp4(self._out_dir / f"{self._name()}.mp4", self._frames, self._fps)


def write_mp4(path: pathlib.Path, frames: list[np.ndarray], fps: int) -> None:
    """H.264 mp4 of HWC uint8 RGB frames (even height and width)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name that av creates like any other file (mode 0o666 minus the umask); tempfile.mkstemp would
    # create it 0o600 and the finished video would stay unreadable to other users.
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with av.open(str(temp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
