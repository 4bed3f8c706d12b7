"""Imports the modules of one example (examples/<name>/*.py, which import their siblings by bare name)."""

from __future__ import annotations

import importlib
import pathlib
import sys
import types

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load(example: str, *modules: str) -> list[types.ModuleType]:
    """Imports `modules` of `examples/<example>` as their scripts see them, without leaving bare names behind.

    Examples are scripts whose modules import each other as `import env`; several examples have an `env`, so
    the bare names are dropped from `sys.modules` afterwards (the loaded modules keep their references).
    """
    directory = EXAMPLES_DIR / example
    sibling_names = {path.stem for path in directory.glob("*.py")}
    saved = {name: sys.modules.pop(name) for name in sibling_names if name in sys.modules}
    sys.path.insert(0, str(directory))
    try:
        return [importlib.import_module(name) for name in modules]
    finally:
        sys.path.remove(str(directory))
        for name in sibling_names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
