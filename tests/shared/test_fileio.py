"""openpi.shared.fileio: atomic replacement of files, and the permissions of what it renames into place."""

import signal
import subprocess
import sys

import pytest

from openpi.shared import fileio
from shared import file_modes


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_written_file_gets_the_mode_open_would_give_under_the_umask(tmp_path, mask):
    target = tmp_path / "out.json"
    with file_modes.umask(mask):
        fileio.atomic_write_bytes(target, b"{}")
        (tmp_path / "plain.json").write_bytes(b"{}")
    assert file_modes.mode(target) == 0o666 & ~mask == file_modes.mode(tmp_path / "plain.json")


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_staging_dir_gets_the_mode_mkdir_would_give_under_the_umask(tmp_path, mask):
    with file_modes.umask(mask):
        staging = fileio.staging_dir(tmp_path / "parent", ".export.tmp-")
    assert staging.parent == tmp_path / "parent"
    assert staging.name.startswith(".export.tmp-")
    assert list(staging.iterdir()) == []
    assert file_modes.mode(staging) == 0o777 & ~mask
    assert file_modes.mode(staging.parent) == 0o777 & ~mask


def test_staging_dirs_with_the_same_prefix_are_distinct(tmp_path):
    assert fileio.staging_dir(tmp_path, "s-") != fileio.staging_dir(tmp_path, "s-")


def test_atomic_write_replaces_an_existing_file_and_creates_missing_parents(tmp_path):
    target = tmp_path / "a" / "b" / "norm_stats.json"
    with fileio.atomic_write(target, "w", encoding="utf-8") as f:
        f.write("first ✓")
    with fileio.atomic_write(target) as f:
        f.write(b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["norm_stats.json"]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "data.parquet"
    target.write_bytes(b"old")

    def write_then_fail() -> None:
        with fileio.atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_then_fail()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.parquet"]


def test_atomic_path_hands_a_library_a_path_and_renames_only_on_success(tmp_path):
    target = tmp_path / "video.mp4"
    with fileio.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".video.mp4.")
        assert tmp.suffix == ".tmp"
        assert not target.exists()
        # A library that opens the path itself, truncating the (already created) temp file.
        subprocess.run([sys.executable, "-c", f"open({str(tmp)!r}, 'wb').write(b'frames')"], check=True)
    assert target.read_bytes() == b"frames"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


def test_atomic_path_deletes_the_temp_file_when_the_library_fails(tmp_path):
    target = tmp_path / "video.mp4"
    with pytest.raises(subprocess.CalledProcessError), fileio.atomic_path(target) as tmp:
        subprocess.run([sys.executable, "-c", f"open({str(tmp)!r}, 'wb').write(b'x'); raise SystemExit(3)"], check=True)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "info.json"
    target.write_text("complete")
    script = (
        "import os, signal\nfrom openpi.shared import fileio\n"
        f"with fileio.atomic_write({str(target)!r}) as f:\n"
        "    f.write(b'partial')\n    f.flush()\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    assert target.read_text() == "complete"


def test_append_and_read_modes_are_refused_naming_the_mode(tmp_path):
    with (
        pytest.raises(ValueError, match="mode: expected 'w' or 'wb', got 'a'"),
        fileio.atomic_write(tmp_path / "x", "a"),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps_deletes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    target = tmp_path / "loss_curve.png"
    target.write_bytes(b"earlier curve")
    (tmp_path / ".other.png.abc.tmp").write_bytes(b"another file's temp")
    killed_mid_write = (
        "import os, signal\n"
        "from openpi.shared import fileio\n"
        f"with fileio.atomic_write({str(target)!r}) as f:\n"
        "    f.write(b'half a curve')\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", killed_mid_write]).returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".loss_curve.png.*.tmp"))
    assert len(left) == 1
    assert target.read_bytes() == b"earlier curve"

    assert fileio.remove_stale_temps(target) == left
    assert not left[0].exists()
    assert target.read_bytes() == b"earlier curve"
    assert (tmp_path / ".other.png.abc.tmp").exists()
    assert fileio.remove_stale_temps(tmp_path / "missing_dir" / "x.json") == []
