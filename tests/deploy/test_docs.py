"""docs/operations.md: every alert is listed with a runbook entry, every alert's runbook
link resolves, and the files the document points operators to exist."""

from __future__ import annotations

import re

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
        # The rule's own runbook link resolves too.
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert anchor in _anchors((ROOT / path).read_text()), rule["annotations"]["runbook"]
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
