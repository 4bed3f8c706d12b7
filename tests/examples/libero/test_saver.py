"""The LIBERO example's episode videos: complete mp4s under their final names, as readable as plain writes."""

from __future__ import annotations

import av
import numpy as np
import pytest

from shared import file_modes

from .. import example_modules

(saver,) = example_modules.load("libero", "saver")


def _frames(count: int) -> list[np.ndarray]:
    return [np.full((32, 48, 3), 10 * index, np.uint8) for index in range(count)]


def test_video_is_complete_and_as_readable_as_plain_writes_make_it(tmp_path):
    with file_modes.umask():
        saver.write_mp4(tmp_path / "videos" / "task00_trial000.mp4", _frames(5), fps=10)
    assert file_modes.unexpected_modes(tmp_path / "videos") == {}
    assert [p.name for p in (tmp_path / "videos").iterdir()] == ["task00_trial000.mp4"]
    with av.open(str(tmp_path / "videos" / "task00_trial000.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


def test_a_failed_encode_leaves_neither_a_video_nor_a_temp_file(tmp_path):
    with pytest.raises(av.error.FFmpegError, match="libx264"):  # yuv420p needs an even height
        saver.write_mp4(tmp_path / "odd.mp4", [np.zeros((31, 48, 3), np.uint8)], fps=10)
    assert list(tmp_path.iterdir()) == []
