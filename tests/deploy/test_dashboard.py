"""deploy/grafana: the dashboard JSON is well formed, every panel query is valid PromQL, the layout
holds together, the issue's panels are there, and the provisioning files point at it."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.queries import DASHBOARD, dashboard_queries
from tests.support.processes import REPO

PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline", "gauge", "bargauge", "table"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_identity() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "switchyard-gateway" and dashboard["title"] == "Switchyard"
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_have_a_known_type_a_datasource_and_targets() -> None:
    variables = {v["name"] for v in _dashboard()["templating"]["list"]}
    for panel in _panels():
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]
            used = {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", target["expr"])}
            assert used <= variables | BUILTIN_VARIABLES, (panel["title"], used)
    assert "datasource" in variables


def test_every_query_parses_and_legends_name_labels_the_query_keeps() -> None:
    queries = dashboard_queries()  # raises with the parser's message on the first bad query
    by_where = {q.where: q for q in queries}
    for panel in _panels():
        for target in panel["targets"]:
            query = by_where[f"panel {panel['id']} {panel['title']!r} target {target['refId']}"]
            kept = set().union(*query.labels.values())
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend_labels <= kept, (panel["title"], target["refId"], legend_labels - kept)


def test_layout_fits_the_grid_without_overlaps() -> None:
    boxes = []
    for panel in _dashboard()["panels"]:
        g = panel["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in ("x", "y", "w", "h")), panel["title"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24, panel["title"]
        boxes.append((panel["title"], g))
    for (a, ga), (b, gb) in itertools.combinations(boxes, 2):
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{a!r} overlaps {b!r}"


def _panels_using(metric: str) -> list[dict[str, Any]]:
    return [p for p in _panels() if any(metric in t["expr"] for t in p["targets"])]


def test_ttft_quantiles_by_model_and_backend() -> None:
    exprs = [t["expr"] for p in _panels_using("switchyard_time_to_first_token_seconds_bucket") for t in p["targets"]]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            e.startswith(f"histogram_quantile({quantile},") and "sum by (le, model, backend)" in e for e in exprs
        ), quantile


@pytest.mark.parametrize(
    ("concern", "metric"),
    [
        ("throughput", "switchyard_tokens_total"),
        ("throughput", "switchyard_requests_total"),
        ("errors", 'status=~"5.."'),
        ("errors", "switchyard_stream_errors_total"),
        ("cache hit rate by layer", "sum by (layer) (rate(switchyard_cache_hits_total"),
        ("tool narrowing", "switchyard_router_tools_out_sum"),
        ("tool narrowing", "switchyard_router_requests_total"),
        ("engine batch size", "switchyard_engine_iteration_sequences"),
        ("KV usage", "switchyard_engine_kv_cache_usage_ratio"),
        ("circuit states", "switchyard_circuit_state"),
        ("rate-limit refusals", "switchyard_rate_limited_total"),
        ("per-replica KV usage", "switchyard_replica_kv_cache_usage_ratio"),
        ("per-replica queue", "switchyard_replica_requests"),
        ("per-replica prefix-hit rate", "switchyard_replica_prefix_cache_hits_tokens_total"),
        ("routing decisions", "sum by (decision) (rate(switchyard_balancer_decisions_total"),
    ],
)
def test_the_issue_asks_for_a_panel_on(concern: str, metric: str) -> None:
    assert _panels_using(metric), concern


def test_provisioning_points_at_the_dashboard_and_the_datasource_it_defaults_to() -> None:
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "switchyard.yaml").read_text())["providers"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in compose["volumes"])
    # The provider's folder is where compose mounts deploy/grafana/dashboards.
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    variable = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert variable["query"] == source["type"] == "prometheus"
    assert variable["current"]["value"] == source["uid"]
