"""The README's settings table is the one rendered from ``Settings``; every field is described."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from loopwise.settings import Settings, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"README.md needs {START} and {END}"
    start, end = text.index(START) + len(START), text.index(END)
    assert start < end, f"{START} must come before {END} in README.md"
    return text[start:end].strip()


def test_readme_settings_table_matches_the_settings_class() -> None:
    assert _readme_table() == settings_table().strip(), (
        "README.md's settings table differs from lib/loopwise/settings.py; "
        "run `make settings-table`")


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_has_a_description(name: str) -> None:
    description = Settings.model_fields[name].description
    assert description and description.strip(), f"Settings.{name} needs a description="


def test_table_has_one_row_per_field_and_readable_defaults() -> None:
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")[1]
            for line in settings_table().splitlines()[2:]}
    assert list(rows) == [f"LOOPWISE_{name.upper()}" for name in Settings.model_fields]
    assert rows["LOOPWISE_DATA_DIR"] == "`var`"
    assert rows["LOOPWISE_TLS_CA_FILE"] == ""
    assert rows["LOOPWISE_DECISION_LOG_ENABLED"] == "`true`"
    assert rows["LOOPWISE_ALLOW_PLAINTEXT"] == "`false`"
    assert rows["LOOPWISE_DECISION_LOG_FLUSH_INTERVAL_S"] == "`0.2`"
    assert rows["LOOPWISE_MAX_MESSAGE_BYTES"] == "`16777216`"


def test_secret_defaults_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = [n for n, f in Settings.model_fields.items() if f.annotation is SecretStr]
    assert secrets
    for name in secrets:
        monkeypatch.setattr(Settings.model_fields[name], "default", SecretStr("s3cret"))
    table = settings_table()
    assert "s3cret" not in table
    for name in secrets:
        assert f"| `LOOPWISE_{name.upper()}` |  |" in table
