"""The Grafana dashboard (helm/payment-gateway/files/grafana) reads only metrics the services
register: every metric name in its PromQL is one of the code's Prometheus metrics."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway_core.services import REPO_ROOT

DASHBOARD = REPO_ROOT / "helm" / "payment-gateway" / "files" / "grafana" / "payment-gateway.json"
# PromQL's functions, aggregations and keywords: every other bare name in an expression is a
# metric (label names only appear inside {…} and by (…), which are removed first).
PROMQL_WORDS = frozenset(
    {
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "clamp_min",
        "clamp_max",
    }
)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\b\d+(\.\d+)?\b", "", text)  # numbers
    return {name for name in _NAME.findall(text) if name not in PROMQL_WORDS}


def registered_metrics() -> set[str]:
    """Every series name the code's metrics expose, once every module that defines one is
    imported (each service's package is on the path, as in the services' own tests)."""
    for path in sorted((REPO_ROOT / "libs").rglob("*.py")) + sorted(
        (REPO_ROOT / "services").rglob("*.py")
    ):
        if "prometheus_client" in path.read_text():
            importlib.import_module(_module(path))
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def _module(path: Path) -> str:
    """libs/gateway_core/server.py -> gateway_core.server; services/x/pkg/a.py -> pkg.a."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[1:] if parts[0] == "libs" else parts[2:])


def test_the_dashboard_parses_and_every_panel_has_a_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert graphs
    assert all(p.get("targets") and p["datasource"]["uid"] == "${datasource}" for p in graphs)
    assert len({p["id"] for p in panels(dashboard)}) == len(panels(dashboard))


def test_every_metric_the_dashboard_reads_is_registered_by_the_code() -> None:
    known = registered_metrics()
    read = {name for expr in expressions() for name in metric_names(expr)}
    assert read, "no metric found in the dashboard's queries"
    assert read <= known, f"not exported by any service: {sorted(read - known)}"
    # The panels the issue asks for are there.
    for needed in (
        "payment_events_total",
        "grpc_server_handling_seconds_bucket",
        "fraud_decisions_total",
        "webhook_deliveries_total",
        "outbox_oldest_unpublished_age_seconds",
    ):
        assert needed in read


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(x_bucket{a="b",c=~"d\\\\..*"}[5m]))', {"x_bucket"}),
        ("max(y_seconds) / sum without (job) (z_total)", {"y_seconds", "z_total"}),
        (
            "histogram_quantile(0.95, sum by (le, method) (rate(h_bucket[$__rate_interval])))",
            {"h_bucket"},
        ),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
