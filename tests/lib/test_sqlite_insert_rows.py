"""``insert_rows`` stores what ``executemany`` stores, in the same order, with the same
change count (duplicate keys in a batch and keys already stored ignored the same way)."""

from __future__ import annotations

import sqlite3

import pytest

from loopwise.store.sqlite import MAX_ROWS_PER_INSERT, insert_rows

SCHEMA = "CREATE TABLE t (k TEXT, n INTEGER, x REAL, note TEXT, PRIMARY KEY (k, n))"
INSERT = "INSERT OR IGNORE INTO t (k, n, x, note) VALUES (?,?,?,?)"


def _rows(count: int, start: int) -> list[tuple]:
    # Row i with i % 7 == 6 repeats the key of the row before it, with other values.
    return [(f"k{i - 1 if i % 7 == 6 else i}", 0, i / 10, None if i % 5 == 0 else f"row {i}")
            for i in range(start, start + count)]


@pytest.mark.parametrize("count", [0, 1, 3, MAX_ROWS_PER_INSERT - 1, MAX_ROWS_PER_INSERT,
                                   MAX_ROWS_PER_INSERT + 1, 3 * MAX_ROWS_PER_INSERT + 7])
@pytest.mark.parametrize("variables", [999, 32766])
def test_insert_rows_stores_what_executemany_stores(count: int, variables: int) -> None:
    connections = [sqlite3.connect(":memory:", isolation_level=None) for _ in range(2)]
    changes = []
    for conn, write in zip(connections, (insert_rows, lambda c, sql, rows: c.executemany(sql, rows)), strict=True):
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        conn.execute(SCHEMA)
        conn.execute(INSERT, ("k0", 0, -1.0, "stored before"))
        before = conn.total_changes
        write(conn, INSERT, _rows(count, 0))
        changes.append(conn.total_changes - before)
    assert changes[0] == changes[1]
    tables = [conn.execute("SELECT rowid, k, n, x, note FROM t ORDER BY rowid").fetchall() for conn in connections]
    assert tables[0] == tables[1]
    if count > 7:
        assert changes[0] < count  # the batch had keys twice, and one stored before


def test_a_low_parameter_limit_still_inserts_wide_rows() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 5)  # one 4-column row per statement
    conn.execute(SCHEMA)
    insert_rows(conn, INSERT, _rows(20, 100))
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == conn.total_changes
