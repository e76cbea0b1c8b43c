"""Spool directories: the local, fsync'd queues of the decision log and of the feedback
service's acknowledged writes.

A spool is one folder of numbered files, ``<sequence><suffix>`` (zero-padded, so that
names sort oldest first), each holding what its owner framed. What a file holds is
the owner's format (the decision log's segments of frames, the feedback service's one
request per file); this module is how both lay out, write, append to, remove and set
aside those files:

- :meth:`SpoolDirectory.write`: a whole file at once, atomically and durably
  (temporary file, fsync, rename, directory fsync);
- :meth:`SpoolDirectory.create` and :meth:`SpoolDirectory.append`: a file that grows
  by appends, each fdatasync'd (its creation is made durable first);
- :meth:`SpoolDirectory.remove`: files whose contents were delivered;
- :meth:`SpoolDirectory.keep_beside` and :meth:`SpoolDirectory.set_aside`: files kept
  next to the spool under another suffix (invalid, rejected or damaged contents),
  never read again by the spool itself.

Blocking I/O throughout: call from a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from loopwise.durable import sync_directory, write_file_durably


class SpoolDirectory:
    """The numbered files of one spool (``<sequence><suffix>``, ``digits`` wide), oldest
    first. With ``discard_temporary``, leftovers of a crash during a write (``*.tmp``,
    never acknowledged) are deleted when it opens."""

    def __init__(self, directory: Path, suffix: str, digits: int, discard_temporary: bool = False) -> None:
        self.dir = Path(directory)
        self.suffix = suffix
        self.digits = digits
        self.dir.mkdir(parents=True, exist_ok=True)
        if discard_temporary:
            for tmp in self.dir.glob("*.tmp"):
                tmp.unlink()
        # The sequence number of the next file (one past the newest there is).
        self.next_seq = max((int(p.stem) for p in self.files()), default=0) + 1

    def files(self) -> list[Path]:
        """The spool's files, oldest first."""
        return sorted(self.dir.glob(f"*{self.suffix}"))

    def path(self, seq: int) -> Path:
        """The file of sequence number ``seq``."""
        return self.dir / f"{seq:0{self.digits}d}{self.suffix}"

    def take_seq(self) -> int:
        """The next sequence number (and count it as used)."""
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def write(self, data: bytes, seq: int) -> Path:
        """Write file ``seq`` whole, atomically and durably (file and directory fsync'd)."""
        path = self.path(seq)
        write_file_durably(path, data)
        return path

    def create(self) -> tuple[Path, int]:
        """A new, empty file for appends (its directory entry fsync'd): path and open
        descriptor (write-only, appending)."""
        path = self.path(self.take_seq())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            sync_directory(self.dir)
        except BaseException:
            os.close(fd)
            raise
        return path, fd

    @staticmethod
    def append(fd: int, data: bytes) -> None:
        """Append bytes to a file opened by :meth:`create` and fdatasync it."""
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)

    def remove(self, paths: Sequence[Path], sync: bool = True) -> None:
        """Delete delivered files (then one directory sync, unless ``sync`` is false:
        a file that comes back after a crash is delivered again, which its owner
        tolerates)."""
        for path in paths:
            path.unlink(missing_ok=True)
        if sync:
            sync_directory(self.dir)

    def keep_beside(self, path: Path, suffix: str, data: bytes) -> Path:
        """Keep ``data`` durably next to ``path`` as ``<name><suffix>`` (outside the spool)."""
        kept = path.with_suffix(suffix)
        write_file_durably(kept, data)
        return kept

    def set_aside(self, path: Path, suffix: str = ".damaged", sync: bool = True) -> Path:
        """Take a file out of the spool, renamed ``<name><suffix>`` (directory fsync'd
        unless ``sync`` is false)."""
        aside = path.with_suffix(suffix)
        os.replace(path, aside)
        if sync:
            sync_directory(self.dir)
        return aside
