"""Benchmark sections of a Markdown file, each between its own start and end markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str, start: str, end: str) -> None:
    """Replace the text from ``start`` to ``end`` in ``path`` with ``section`` (which
    begins with ``start`` and ends with ``end``), or append it when the file has none."""
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
