"""docs/operations.md: every alert is listed with a runbook entry, every alert's runbook
link resolves, and the files the document points operators to exist. The repository
stands on its own: references to its architecture point at docs/architecture.md
sections that exist, and LICENSE holds the Apache License 2.0."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.tools import ROOT

OPERATIONS = ROOT / "docs" / "operations.md"
ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yaml"


def _rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _anchors(text: str) -> set[str]:
    """Explicit ``<a id>`` anchors and heading slugs of a markdown text."""
    slugs = {re.sub(r"[^\w -]", "", h).strip().lower().replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    return set(re.findall(r'<a id="([\w-]+)"></a>', text)) | slugs


def test_every_alert_has_a_runbook_entry() -> None:
    text = OPERATIONS.read_text()
    anchors = _anchors(text)
    rules = _rules()
    assert len(rules) >= 10
    table = dict(re.findall(r"^\| (Loopwise[\w, ]+) \| \[[^]]+\]\(#([\w-]+)\) \|$", text, flags=re.MULTILINE))
    listed = {name.strip(): anchor for names, anchor in table.items() for name in names.split(",")}
    for rule in rules:
        assert rule["alert"] in listed, f"{rule['alert']} missing from the alerts table"
        assert listed[rule["alert"]] in anchors, rule["alert"]
        assert rule["annotations"].get("description") and rule["annotations"].get("summary"), rule["alert"]
        # The rule's own runbook link resolves too.
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert anchor in _anchors((ROOT / path).read_text()), rule["annotations"]["runbook_url"]
    for target in re.findall(r"\]\(#([\w-]+)\)", text):
        assert target in anchors, target


def test_paths_named_in_the_document_exist() -> None:
    text = OPERATIONS.read_text()
    paths = set(re.findall(r"`((?:deploy|services|clients|scripts|protos|docs|tests)/[\w./<>-]+)`", text))
    assert "deploy/monitoring/grafana-dashboard.json" in paths
    for path in paths:
        if "<" in path:
            continue
        assert (ROOT / path).exists(), path


def _tracked_files() -> list[str]:
    """Every file git tracks, relative to the repository root."""
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [name for name in done.stdout.decode().split("\0") if name]


# Built from parts so that this file does not match itself.
_STALE = ("DESIGN" + " §", "DESIGN" + ".md")


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for name in _tracked_files():
        if name.startswith("protos/baseline/"):
            continue
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree
            continue
        for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
            if any(stale in line for stale in _STALE):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "references to a document outside the repository (use docs/architecture.md):\n" + \
        "\n".join(found)


def test_architecture_sections_referenced_exist() -> None:
    headings = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "architecture.md").read_text(),
                              flags=re.MULTILINE))
    assert {str(n) for n in range(1, 13)} <= headings
    missing = []
    for name in _tracked_files():
        path = ROOT / name
        if name.startswith("protos/baseline/") or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        missing += [f"{name}: §{n}" for n in re.findall(r"docs/architecture\.md §(\d+)", text)
                    if n not in headings]
    assert not missing, missing


def test_license_is_apache_2() -> None:
    license_file = ROOT / "LICENSE"
    assert license_file.is_file()
    text = license_file.read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert "END OF TERMS AND CONDITIONS" in text
