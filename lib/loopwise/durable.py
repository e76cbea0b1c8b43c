"""Writing files so that they survive a crash: the one way spools and caches do it."""

from __future__ import annotations

import os
from pathlib import Path


def sync_directory(directory: Path) -> None:
    """fsync a directory, so that file creations, renames and deletions in it persist."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, *chunks: bytes) -> None:
    """Write ``chunks`` to ``path`` atomically and durably.

    The bytes go to a temporary file in the same directory (named by process id, so
    that two processes never share it, and ending in ``.tmp`` so that readers can
    remove leftovers of a crash), which is fsync'd and renamed into place; then the
    directory is fsync'd."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_directory(path.parent)
