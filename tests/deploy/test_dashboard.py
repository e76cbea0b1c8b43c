"""The Grafana dashboard (deploy/monitoring/grafana-dashboard.json): namespace, job and
use-case variables; every query over a loopwise metric filters by namespace and job, and
by use case wherever the metric has a use_case label (deploy/monitoring/README.md lists
the labels); the pods' CPU, memory, restarts and autoscaling have panels; the layout has
no overlapping panels. (tests/observability/test_metrics.py checks that the loopwise
metrics it names are exposed.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.tools import ROOT

MONITORING = ROOT / "deploy" / "monitoring"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _metrics_with_use_case() -> set[str]:
    """Metric names whose README row lists a use_case label (histograms: their series)."""
    found = set()
    for row in re.findall(r"^\| (`loopwise_.+)$", (MONITORING / "README.md").read_text(), flags=re.MULTILINE):
        names, _, labels = row.split(" | ")[:3]
        if "use_case" in labels:
            for name in re.findall(r"`(loopwise_\w+)`", names):
                found |= {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    assert {"loopwise_decisions_total", "loopwise_feedback_decisions_logged_total"} <= found
    return found


def _selectors(expr: str) -> list[tuple[str, str]]:
    return re.findall(r"\b([a-z_]+)\{([^}]*)\}", expr)


def test_variables_filter_namespace_job_and_use_case(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "use_case"]
    for name in ("namespace", "job", "use_case"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    assert '$namespace' in variables["job"]["query"]
    assert '$namespace' in variables["use_case"]["query"] and '$job' in variables["use_case"]["query"]


def test_every_query_honours_the_filters(dashboard: dict[str, Any]) -> None:
    with_use_case = _metrics_with_use_case()
    checked_use_case = 0
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            selectors = _selectors(target["expr"])
            assert selectors, (panel["title"], target["expr"])
            for metric, matchers in selectors:
                assert 'namespace=~"$namespace"' in matchers, (panel["title"], metric)
                if metric.startswith("loopwise_"):
                    assert 'job=~"$job"' in matchers, (panel["title"], metric)
                    if metric in with_use_case:
                        assert 'use_case=~"$use_case"' in matchers, (panel["title"], metric)
                        checked_use_case += 1
                    else:
                        assert "no use_case label" in panel["description"], panel["title"]
    assert checked_use_case >= 20
    served = next(p for p in dashboard["panels"] if p["title"].startswith("Decisions served"))
    assert all('use_case=~"$use_case"' in t["expr"] for t in served["targets"])


def test_pod_resources_restarts_and_autoscaling_panels(dashboard: dict[str, Any]) -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    wanted = {"CPU by pod": "container_cpu_usage_seconds_total",
              "Memory (working set) by pod": "container_memory_working_set_bytes",
              "Container restarts (1h)": "kube_pod_container_status_restarts_total",
              "Autoscaling: replicas (HPA)": "kube_horizontalpodautoscaler_status_desired_replicas"}
    for title, metric in wanted.items():
        assert metric in exprs[title], title
    # The chart's container names and HPA names are what the panels select.
    assert 'container=~"decision|feedback|trainer|evaluator|console"' in exprs["CPU by pod"]
    assert 'horizontalpodautoscaler=~".*-(decision|feedback)"' in exprs["Autoscaling: replicas (HPA)"]


def test_layout_has_unique_ids_and_no_overlaps(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
