"""Rewrite the settings table of README.md from ``loopwise.settings.Settings``.

The table sits between ``<!-- settings-table:start -->`` and
``<!-- settings-table:end -->`` (``make settings-table``)::

    python scripts/settings_table.py            # rewrite README.md in place
    python scripts/settings_table.py --check    # exit 1 when README.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loopwise.settings import settings_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


def table_span(text: str) -> tuple[int, int]:
    """Offsets of the text between the two markers (exclusive of them)."""
    start = text.find(START)
    end = text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs {START} and then {END}")
    return start + len(START), end


def with_table(text: str, table: str) -> str:
    """``text`` with ``table`` between the markers (one blank line each side)."""
    start, end = table_span(text)
    return f"{text[:start]}\n\n{table.strip()}\n\n{text[end:]}"


def main() -> None:
    """Command line: ``python scripts/settings_table.py [--check] [--readme README.md]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true",
                        help="only report whether the table is up to date")
    args = parser.parse_args()
    text = args.readme.read_text(encoding="utf-8")
    new = with_table(text, settings_table())
    if new == text:
        print(f"{args.readme}: settings table up to date")
        return
    if args.check:
        sys.exit(f"{args.readme}: settings table out of date; run `make settings-table`")
    args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: settings table rewritten")


if __name__ == "__main__":
    main()
