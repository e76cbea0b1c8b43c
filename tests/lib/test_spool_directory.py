"""loopwise.spool: the numbered files of the decision log's and the feedback service's
spools, on a real directory."""

from __future__ import annotations

import os
from pathlib import Path

from loopwise.spool import SpoolDirectory


def test_files_are_numbered_oldest_first_and_numbering_goes_on_after_a_reopen(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path, ".spool", 16)
    assert spool.next_seq == 1 and spool.files() == []
    for _ in range(3):
        spool.write(b"x", spool.take_seq())
    (tmp_path / "0000000000000009.invalid").write_bytes(b"kept")  # not part of the spool
    assert [p.name for p in spool.files()] == [f"{n:016d}.spool" for n in (1, 2, 3)]
    spool.remove(spool.files()[:2])
    reopened = SpoolDirectory(tmp_path, ".spool", 16)
    assert reopened.next_seq == 4
    assert [p.name for p in reopened.files()] == ["0000000000000003.spool"]


def test_appends_land_in_order_and_a_crashed_write_is_discarded(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path, ".req", 20, discard_temporary=True)
    path, fd = spool.create()
    try:
        SpoolDirectory.append(fd, b"first,")
        SpoolDirectory.append(fd, b"second")
    finally:
        os.close(fd)
    assert path.name == f"{1:020d}.req" and path.read_bytes() == b"first,second"
    (tmp_path / "00000000000000000002.req.123.tmp").write_bytes(b"torn")
    reopened = SpoolDirectory(tmp_path, ".req", 20, discard_temporary=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert reopened.create()[0].name == f"{2:020d}.req"


def test_files_set_aside_or_kept_beside_leave_the_spool(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path, ".spool", 16)
    first, second = spool.write(b"a", spool.take_seq()), spool.write(b"b", spool.take_seq())
    kept = spool.keep_beside(first, ".invalid", b"invalid records")
    damaged = spool.set_aside(second)
    assert kept.read_bytes() == b"invalid records" and damaged.read_bytes() == b"b"
    assert damaged.name == "0000000000000002.damaged" and not second.exists()
    assert spool.files() == [first]
