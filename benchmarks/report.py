"""What every JSON benchmark script prints about the machine, how it prints its result, and how
it loads a module as it was at another git revision (a baseline measured in the same run)."""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def machine(**extra) -> dict:
    """CPU count and Python version, then ``extra`` (library versions and the like)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), **extra}


def emit(result: dict, out: str | None) -> None:
    """Print ``result`` as indented JSON and, when ``out`` names a file, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def module_at(rev: str, path: str) -> ModuleType:
    """The module in ``path`` (from the repository's root) as it was at git revision ``rev``,
    imported apart from the current one (needs the clone's history, not a shallow one)."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    stem = Path(path).stem
    file = Path(tempfile.mkdtemp()) / f"{stem}_at_rev.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(f"{stem}_at_{rev}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
