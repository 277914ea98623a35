"""deploy/prometheus: the rules parse (PromQL parser always, promtool when installed), the alert unit
tests pass, the issue's alerts exist, and the Operator and scrape configs agree with them."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.queries import ALERTS, rule_queries
from tests.support.processes import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
PROMETHEUS_RULE = REPO / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
SEVERITIES = {"page", "ticket", "warning"}


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def test_every_rule_expression_is_valid_promql() -> None:
    queries, recorded = rule_queries()  # raises on the first expression that does not parse or type-check
    assert len(queries) == len(_rules())
    assert all(name.startswith("switchyard:") for name in recorded)  # level:metric:operations naming


def test_alerts_are_complete_and_uniquely_named() -> None:
    names = [rule["alert"] for rule in _rules() if "alert" in rule]
    assert len(names) == len(set(names))
    for name, rule in _alerts().items():
        assert name.startswith("Switchyard"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


@pytest.mark.parametrize(
    ("concern", "metric"),
    [
        ("TTFT SLO burn", "switchyard_time_to_first_token_seconds_bucket"),
        ("error rate", "switchyard_requests_total"),
        ("cache store down", "switchyard_cache_store_up"),
        ("backend down", "switchyard_backend_up"),
    ],
)
def test_the_issue_asks_for_an_alert_on(concern: str, metric: str) -> None:
    queries, recorded = rule_queries()
    by_name = {q.where.removeprefix("rule "): q for q in queries}
    # An alert uses the metric directly or through a recording rule built on it.
    derived = {name for name in recorded if metric in by_name[name].metrics}
    alerting = [name for name in _alerts() if by_name[name].metrics & ({metric} | derived)]
    assert alerting, f"no alert covers {concern}"


def test_the_prometheus_rule_for_the_operator_carries_the_same_groups() -> None:
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def _scrape_job(path: str) -> dict[str, Any]:
    config = yaml.safe_load((PROMETHEUS / path).read_text())
    assert config["rule_files"] == ["alerts.yml"]  # resolved beside the config file
    (job,) = config["scrape_configs"]
    return job  # type: ignore[no-any-return]


def test_scrape_jobs_are_named_as_the_gateway_down_alert_expects() -> None:
    expr = _alerts()["SwitchyardGatewayDown"]["expr"]
    for path in ("prometheus.yml", "kubernetes-scrape.yml"):
        job = _scrape_job(path)
        assert f'job="{job["job_name"]}"' in expr
        assert job["metrics_path"] == "/metrics"


def test_compose_scrape_target_is_the_gateway_service() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    port = yaml.safe_load((REPO / "config" / "examples" / "compose.yaml").read_text())["server"]["port"]
    (target,) = _scrape_job("prometheus.yml")["static_configs"][0]["targets"]
    host, _, target_port = target.partition(":")
    assert host in compose["services"] and int(target_port) == port


def _gateway_pod_templates() -> list[dict[str, Any]]:
    templates: list[dict[str, Any]] = []
    for path in sorted((REPO / "deploy" / "kubernetes").rglob("deployment.yaml")):
        templates.extend(doc["spec"]["template"] for doc in yaml.safe_load_all(path.read_text()))
    return templates


def _gateway_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    (gateway,) = [c for c in containers if c["name"] == "switchyard"]
    return gateway  # type: ignore[no-any-return]


def test_kubernetes_scrape_config_keeps_exactly_the_gateway_ports() -> None:
    """Without the Operator: the keep rules select every gateway pod and its gateway port."""
    job = _scrape_job("kubernetes-scrape.yml")
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    label_rule = keeps.pop("__meta_kubernetes_pod_label_llm_gateway")
    port_rule = keeps.pop("__meta_kubernetes_pod_container_port_name")
    assert keeps == {}
    templates = _gateway_pod_templates()
    assert len(templates) == 2  # the sidecar and the standalone deployment
    for pod in templates:
        assert re.fullmatch(label_rule, pod["metadata"]["labels"]["llm-gateway"])  # Prometheus anchors regexes
        port_names = [p["name"] for p in _gateway_container(pod)["ports"]]
        assert [name for name in port_names if re.fullmatch(port_rule, name)] == ["switchyard"]


promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert promtool is not None
    return subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    covered = {case["alertname"] for test in tested for case in test.get("alert_rule_test", [])}
    assert covered == set(_alerts())  # every alert has a unit test


@needs_promtool
def test_promtool_checks_the_compose_prometheus_config() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
