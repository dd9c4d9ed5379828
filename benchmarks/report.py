"""What every JSON benchmark script prints about the machine, and how it prints its result."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine(**extra) -> dict:
    """CPU count and Python version, then ``extra`` (library versions and the like)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), **extra}


def emit(result: dict, out: str | None) -> None:
    """Print ``result`` as indented JSON and, when ``out`` names a file, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
