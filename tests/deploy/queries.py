"""The PromQL in deploy/: every query of the Grafana dashboard and the Prometheus rules, parsed,
with the metric names and label names each one uses."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import REPO

__all__ = [
    "ALERTS",
    "DASHBOARD",
    "SCRAPE_LABELS",
    "Query",
    "dashboard_queries",
    "grafana_to_promql",
    "metric_families",
    "parse",
    "rule_queries",
    "uses",
]

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "switchyard.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
# Labels Prometheus attaches at scrape time (static config, PodMonitor, kubernetes-scrape.yml).
SCRAPE_LABELS = frozenset({"job", "instance", "namespace", "pod", "container"})

# promql-parser wraps a Rust parser and ships no type information.
_promql: Any = importlib.import_module("promql_parser")

# Grafana's built-in interval variables and the dashboard's own template variables.
_GRAFANA_DURATIONS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass
class Query:
    where: str  # a human pointer: "panel 12 'TTFT' target B" or "rule SwitchyardBackendDown"
    expr: str
    metrics: set[str] = field(default_factory=set)
    # metric → label names the query relies on (selectors and `by (...)` of aggregations over it)
    labels: dict[str, set[str]] = field(default_factory=dict)


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends to Prometheus: intervals become durations, template variables regexes."""
    expr = _GRAFANA_DURATIONS.sub("5m", expr)
    return _GRAFANA_VARIABLE.sub(".*", expr)


def parse(expr: str) -> Any:
    """The PromQL AST; raises ValueError (with the parser's message) on a bad query."""
    return _promql.parse(expr)


def uses(expr: str) -> tuple[set[str], dict[str, set[str]]]:
    """Metric names selected by `expr`, and for each the labels it must carry for the query to mean
    something: those in its selector's matchers and those of every `by (...)` aggregating over it."""
    ast = parse(expr)
    metrics: set[str] = set()
    labels: dict[str, set[str]] = {}

    def selectors(node: Any) -> list[Any]:
        found: list[Any] = []

        def visit(n: Any) -> bool:
            if type(n).__name__ == "VectorSelector":
                found.append(n)
            return True

        _promql.walk(node, visit)
        return found

    for selector in selectors(ast):
        if not selector.name:
            raise ValueError(f"selector without a metric name in {expr!r}")
        metrics.add(selector.name)
        labels.setdefault(selector.name, set()).update(
            m.name for m in selector.matchers.matchers if m.name != "__name__"
        )

    def aggregations(n: Any) -> bool:
        if (
            type(n).__name__ == "AggregateExpr"
            and n.modifier is not None
            and n.modifier.type == _promql.AggModifierType.By
        ):
            for selector in selectors(n.expr):
                labels.setdefault(selector.name, set()).update(n.modifier.labels)
        return True

    _promql.walk(ast, aggregations)
    return metrics, labels


def _query(where: str, expr: str) -> Query:
    metrics, labels = uses(expr)
    return Query(where, expr, metrics, labels)


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    """Every panel target and every template variable query of the dashboard."""
    dashboard = json.loads(path.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} target {target['refId']}"
            queries.append(_query(where, grafana_to_promql(target["expr"])))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
        if found is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {variable['query']['query']!r}")
        metric, label = found.groups()
        queries.append(Query(f"variable {variable['name']}", variable["query"]["query"], {metric}, {metric: {label}}))
    return queries


def rule_queries(path: Path = ALERTS) -> tuple[list[Query], set[str]]:
    """Every rule expression, and the names the recording rules define."""
    groups = yaml.safe_load(path.read_text())["groups"]
    queries, recorded = [], set()
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            queries.append(_query(f"rule {name}", rule["expr"]))
            if "record" in rule:
                recorded.add(rule["record"])
    return queries, recorded


def metric_families(exposition: str) -> dict[str, str]:
    """`# TYPE` lines of a /metrics page: family name as exposed (counters end in _total) → type."""
    families = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families[name] = kind.strip()
    return families
