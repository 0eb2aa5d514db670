"""Importing a submission's entry module: the one place in the harness that executes submission code.

Only the sandbox imports this module (an import-linter contract in pyproject.toml); in-process developer
tools outside the harness (bench/, docs/) use it too, knowing they run the code in their own process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ENTRY_MODULE = "submission_entry"


def import_entry(folder: str | Path, entry_file: str) -> ModuleType:
    """Import a submission's entry module as `submission_entry`, with its folder first on sys.path (so it can
    import its own helper modules)."""
    folder = str(folder)
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(ENTRY_MODULE, os.path.join(folder, entry_file))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {entry_file} from {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[ENTRY_MODULE] = module
    spec.loader.exec_module(module)
    return module
