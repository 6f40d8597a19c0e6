"""Output folders that appear whole or not at all.

``new_output_dir(path)`` stages everything in a hidden sibling folder and renames it to ``path`` only when the
block finishes without an exception: a failed or killed command leaves no half-written output under ``path``
(at most a ``.<name>.partial-<pid>`` folder beside it, removed on failure).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def check_new_output(path: str | Path, flag: str) -> Path:
    """``path`` as an absolute ``Path`` if it does not exist or is an empty folder; else ``ValueError`` naming
    ``flag`` (an existing output is never overwritten or mixed with new files)."""
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{flag} {str(path)!r} already exists and is not empty; choose a new folder")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: its parent is a file, not a folder")
    return path


@contextlib.contextmanager
def new_output_dir(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Yields a staging folder; on success it becomes ``path`` (which must be new or empty, see
    ``check_new_output``). On an exception the staging folder is removed and ``path`` is untouched."""
    path = check_new_output(path, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        path.rmdir()  # empty (checked above)
    staging.rename(path)
