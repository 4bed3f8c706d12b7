"""The published openpi-client 0.1.2, installed from the package index into a venv shared by the whole test session."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import filelock
import pytest

VERSION = "0.1.2"


def python(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The interpreter of a venv holding openpi-client 0.1.2 (+ typing_extensions, which it imports without
    declaring), made once per session; skips the test when the package index cannot be reached."""
    venv = tmp_path_factory.getbasetemp() / f"openpi_client_{VERSION}"
    interpreter = venv / "bin" / "python"
    with filelock.FileLock(f"{venv}.lock"):
        if (venv / "installed").is_file():
            return interpreter
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = subprocess.run(
            [str(interpreter), "-m", "pip", "install", "-q", f"openpi-client=={VERSION}", "typing_extensions"],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            pytest.skip(f"cannot install openpi-client {VERSION} from the package index: {install.stderr[-2000:]}")
        (venv / "installed").touch()
    return interpreter
