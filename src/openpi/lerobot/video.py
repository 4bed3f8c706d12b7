"""MP4 video for LeRobot datasets with PyAV: frame decoding by timestamp, episode encoding, lossless concatenation."""

import collections
from collections.abc import Sequence
from fractions import Fraction
import os
from pathlib import Path
import threading

import av
from av.video.reformatter import VideoReformatter
import numpy as np

# Codec names accepted by the writer (lerobot's names and the encoder names) -> PyAV encoder and its options.
# g=2 (a keyframe every 2 frames) like lerobot: a random frame never needs more than 2 decodes after a seek.
ENCODERS = {
    "h264": ("libx264", {"g": "2", "bf": "0", "crf": "23"}),
    "libx264": ("libx264", {"g": "2", "bf": "0", "crf": "23"}),
    "av1": ("libsvtav1", {"g": "2", "crf": "30", "preset": "10"}),
    "libsvtav1": ("libsvtav1", {"g": "2", "crf": "30", "preset": "10"}),
}
_MP4_OPTIONS = {"movflags": "faststart"}


class VideoDecodeError(RuntimeError):
    """A video file is missing frames, truncated or otherwise unreadable."""


class VideoDecoder:
    """Returns RGB frames at given timestamps; keeps a few containers open per thread (never shared across fork)."""

    def __init__(self, max_open_files: int = 16):
        self._max_open_files = max_open_files
        self._local = threading.local()

    def _open(self, path: Path):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # a forked worker must not reuse its parent's containers
            local.pid, local.cache = os.getpid(), collections.OrderedDict()
            local.reformatter = VideoReformatter()  # reused: a fresh conversion context per frame costs ~5x more
        if path in local.cache:
            local.cache.move_to_end(path)
            return local.cache[path]
        if not path.is_file():
            raise FileNotFoundError(f"video file missing: {path}")
        try:
            container = av.open(str(path))
            stream = container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as e:
            raise VideoDecodeError(f"{path}: cannot open video ({e}); the file may be truncated or corrupt") from e
        local.cache[path] = (container, stream)
        if len(local.cache) > self._max_open_files:
            _, (old, _) = local.cache.popitem(last=False)
            old.close()
        return container, stream

    def _forget(self, path: Path) -> None:
        entry = self._local.cache.pop(path, None)
        if entry is not None:
            entry[0].close()

    def frames_at(self, path: Path, timestamps: Sequence[float], tolerance_s: float) -> np.ndarray:
        """uint8 frames (T, H, W, 3) whose presentation times are within `tolerance_s` of `timestamps`."""
        container, stream = self._open(path)
        first, last = min(timestamps), max(timestamps)
        time_base = stream.time_base
        decoded: list[tuple[float, av.VideoFrame]] = []
        try:
            container.seek(
                max(0, int((first - tolerance_s) / time_base)), stream=stream, backward=True, any_frame=False
            )
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                time = float(frame.pts * time_base)
                if time >= first - tolerance_s:
                    decoded.append((time, frame))
                if time >= last - tolerance_s:
                    break
        except av.error.FFmpegError as e:
            self._forget(path)
            raise VideoDecodeError(
                f"{path}: decoding failed near t={first:.4f}s ({e}); the file may be truncated"
            ) from e
        if not decoded:
            raise VideoDecodeError(f"{path}: no frame at t={first:.4f}s (video ends earlier; truncated?)")
        times = np.array([t for t, _ in decoded])
        frames = []
        for ts in timestamps:
            nearest = int(np.argmin(np.abs(times - ts)))
            if abs(times[nearest] - ts) > tolerance_s:
                raise VideoDecodeError(
                    f"{path}: no frame within {tolerance_s}s of t={ts:.4f}s (nearest at {times[nearest]:.4f}s); "
                    "the video may be truncated or out of sync with the parquet timestamps"
                )
            frames.append(self._local.reformatter.reformat(decoded[nearest][1], format="rgb24").to_ndarray())
        return np.stack(frames)


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class EpisodeVideoEncoder:
    """Encodes one episode's frames (uint8 HWC RGB) to an mp4 in yuv420p as they arrive, so they never pile up in RAM."""

    def __init__(self, path: Path, fps: float, height: int, width: int, vcodec: str):
        encoder, options = ENCODERS[vcodec]
        self.path = path
        self.num_frames = 0
        self._container = av.open(str(path), "w", format="mp4", options=_MP4_OPTIONS)
        self._stream = self._container.add_stream(encoder, rate=_rate(fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = 1 / _rate(fps)
        self._stream.options = dict(options)

    def add(self, hwc: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(hwc), format="rgb24")
        frame.pts = self.num_frames
        self._container.mux(self._stream.encode(frame))
        self.num_frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


def concat_videos(inputs: Sequence[tuple[Path, float]], output: Path) -> None:
    """Stream-copies videos (same codec and size) one after another; each input is (path, duration in seconds)."""
    with av.open(str(inputs[0][0])) as template:
        out = av.open(str(output), "w", format="mp4", options=_MP4_OPTIONS)
        out_stream = out.add_stream_from_template(template.streams.video[0])
    with out:
        offset_s = 0.0
        for path, duration_s in inputs:
            with av.open(str(path)) as source:
                stream = source.streams.video[0]
                offset = round(offset_s / stream.time_base)
                for packet in source.demux(stream):
                    if packet.dts is None:  # demuxer's end-of-stream marker
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    out.mux(packet)
            offset_s += duration_s


def video_info(path: Path, fps: float) -> dict:
    """The `info` entry lerobot stores for a video feature in info.json."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        }
