"""deploy/kubernetes: every manifest validates against the Kubernetes API schemas (strict: unknown
fields fail) and the Prometheus Operator's CRD models, and the pieces agree with each other and
with the gateway's configuration (ports, probes, drain timing, keys, selectors)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.auth import hash_key
from gateway.settings import Settings, load_settings
from tests.support.processes import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("sidecar", "standalone", "monitoring", "fleet")
# Native sidecars (initContainers with restartPolicy: Always) are on by default from 1.29.
OLDEST = "1.29"
# The fields of a kustomization this file reads the same way kustomize does (the rest would change
# the rendered objects in ways these tests do not see).
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
DRAIN_MARGIN_S = 5

# Neither package ships type information.
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")
operator_models: Any = importlib.import_module("cloudcoil.models.prometheus_operator.v1")


def _kustomization(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / name / "kustomization.yaml").read_text())  # type: ignore[no-any-return]


def _merge(base: Any, patch: Any) -> Any:
    """A strategic-merge patch as far as these manifests use one: maps merge, the rest replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
    return patch


def _objects(name: str) -> list[dict[str, Any]]:
    """The objects a kustomization renders: its files, its bases' objects (a directory resource),
    then its patches applied to the objects they name."""
    docs: list[dict[str, Any]] = []
    kustomization = _kustomization(name)
    for resource in kustomization["resources"]:
        path = KUBERNETES / name / resource
        if path.is_dir():
            docs.extend(_objects(str(path.relative_to(KUBERNETES))))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for entry in kustomization.get("patches", []):
        patch = yaml.safe_load((KUBERNETES / name / entry["path"]).read_text())
        (i,) = [
            i for i, d in enumerate(docs)
            if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
        ]
        docs[i] = _merge(docs[i], patch)
    return docs


def _all_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name in KUSTOMIZATIONS for doc in _objects(name)]


def _one(name: str, kind: str, object_name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in _objects(name) if d["kind"] == kind and object_name in (None, d["metadata"]["name"])]
    return found


def _validate(doc: dict[str, Any], version: str) -> None:
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        model = getattr(operator_models, doc["kind"])
        # The models ignore unknown fields; a round trip that loses nothing proves there were none.
        dumped = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert dumped == doc
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_lists_every_manifest_and_nothing_else(name: str) -> None:
    kustomization = _kustomization(name)
    assert set(kustomization) <= KUSTOMIZE_FIELDS
    listed = [r for r in kustomization["resources"] if not (KUBERNETES / name / r).is_dir()]
    listed += [p["path"] for p in kustomization.get("patches", [])]
    present = sorted(p.name for p in (KUBERNETES / name).glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


@pytest.mark.parametrize("version", [OLDEST, "latest"])
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_manifests_validate_against_the_api_schemas(name: str, version: str) -> None:
    if version == "latest":
        version = kubernetes_validate.latest_version()
    for doc in _objects(name):
        _validate(doc, version)


def test_strict_validation_rejects_what_the_cluster_would() -> None:
    """The validator is not a rubber stamp: a sidecar is not a Container field before 1.28, and
    an unknown field or a bad duration fails."""
    deployment = _one("sidecar", "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.27", strict=True)
    service = _one("standalone", "Service", "switchyard")
    typo = {**service, "spec": {**service["spec"], "selectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, OLDEST, strict=True)
    monitor = _one("monitoring", "PodMonitor")
    endpoints = [{**monitor["spec"]["podMetricsEndpoints"][0], "interval": "fifteen seconds"}]
    with pytest.raises(ValueError):
        _validate({**monitor, "spec": {**monitor["spec"], "podMetricsEndpoints": endpoints}}, OLDEST)
    with pytest.raises(AssertionError):
        _validate({**monitor, "spec": {**monitor["spec"], "selectr": {}}}, OLDEST)


kubectl = shutil.which("kubectl")


@pytest.mark.skipif(kubectl is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_renders_what_validates(name: str) -> None:
    assert kubectl is not None
    rendered = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / name)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(docs) == len(_objects(name))
    renamed = {image["name"] for image in _kustomization(name).get("images", [])}
    for doc in docs:
        _validate(doc, OLDEST)
        for container in _containers(doc):
            assert container["image"].split(":")[0] not in renamed  # `images` reached every placeholder


# -- consistency ------------------------------------------------------------------------------


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] != "Deployment":
        return []
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]  # type: ignore[no-any-return]


def _gateway(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, gateway container) of a kustomization's gateway Deployment."""
    for doc in _objects(name):
        for container in _containers(doc):
            if container["name"] == "switchyard":
                return doc["spec"]["template"], container
    raise AssertionError(f"{name}: no gateway container")


def _mounted_settings(name: str) -> tuple[Settings, str]:
    """The gateway's settings as the pod gets them: the ConfigMap mounted where --config points."""
    pod, container = _gateway(name)
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = _one(name, "ConfigMap", volume["configMap"]["name"])
    text = configmap["data"][config_path.name]
    env = {e["name"]: "set-by-the-pod" for e in container.get("env", [])}
    with tempfile.TemporaryDirectory() as mounted:
        path = Path(mounted) / config_path.name
        path.write_text(text)
        return load_settings(path, environ=env), text


@pytest.mark.parametrize(
    ("name", "example"),
    [("sidecar", "kubernetes-sidecar.yaml"), ("standalone", "production.yaml"), ("fleet", "fleet.yaml")],
)
def test_configmap_is_the_example_config_verbatim_and_valid(name: str, example: str) -> None:
    settings, text = _mounted_settings(name)
    assert text == (REPO / "config" / "examples" / example).read_text()
    _, container = _gateway(name)
    provided = {e["name"] for e in container.get("env", [])}
    for backend in settings.backends:
        if backend.api_key_env:
            assert backend.api_key_env in provided, backend.name


@pytest.mark.parametrize("name", ["sidecar", "standalone"])
def test_probes_ports_and_resources_of_the_gateway(name: str) -> None:
    settings, _ = _mounted_settings(name)
    _, container = _gateway(name)
    (port,) = container["ports"]
    assert port == {"name": "switchyard", "containerPort": settings.server.port}
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "switchyard"}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # room to load the embedder
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {settings.server.state_dir, "/tmp"} <= writable  # the state dir and HF_HOME's /tmp


@pytest.mark.parametrize("name", ["sidecar", "standalone"])
def test_grace_period_covers_the_pre_stop_delay_and_the_drain(name: str) -> None:
    settings, _ = _mounted_settings(name)
    pod, container = _gateway(name)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop > 0 and settings.server.drain_seconds >= 30
    assert grace >= pre_stop + settings.server.drain_seconds + DRAIN_MARGIN_S
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_sidecar_is_native_and_the_app_talks_to_it_with_its_key() -> None:
    settings, _ = _mounted_settings("sidecar")
    pod, gateway = _gateway("sidecar")
    assert gateway in pod["spec"]["initContainers"] and gateway["restartPolicy"] == "Always"
    (app,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in app["env"]}
    assert env["OPENAI_BASE_URL"]["value"] == f"http://127.0.0.1:{settings.server.port}/v1"
    ref = env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]
    secret = _one("sidecar", "Secret", ref["name"])
    client_key = secret["stringData"][ref["key"]]
    assert hash_key(client_key) in {k.sha256 for k in settings.auth.keys}


@pytest.mark.parametrize("name", ["sidecar", "standalone"])
def test_every_secret_reference_resolves(name: str) -> None:
    for doc in _objects(name):
        for container in _containers(doc):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in _one(name, "Secret", ref["name"])["stringData"], env["name"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_standalone_service_hpa_pdb_and_redis_fit_together() -> None:
    settings, _ = _mounted_settings("standalone")
    pod, _ = _gateway("standalone")
    labels = pod["metadata"]["labels"]
    deployment = _one("standalone", "Deployment", "switchyard")
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)

    service = _one("standalone", "Service", "switchyard")
    assert _selects(service["spec"]["selector"], labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["switchyard"]

    hpa = _one("standalone", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "switchyard"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = _one("standalone", "PodDisruptionBudget")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]

    # Replicas share one Redis: the config's URL is the Redis Service, which only gateways may reach.
    redis_service = _one("standalone", "Service", "switchyard-redis")
    assert (
        settings.redis.url
        == f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
    )
    assert settings.cache.store == "redis"
    policy = _one("standalone", "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    assert _selects(rule["from"][0]["podSelector"]["matchLabels"], labels)
    redis_pod = _one("standalone", "Deployment", "switchyard-redis")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], redis_pod)


def test_pod_monitor_scrapes_both_kinds_of_gateway_pod_as_job_switchyard() -> None:
    monitor = _one("monitoring", "PodMonitor")["spec"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert monitor["namespaceSelector"] == {"any": True}  # sidecars live in their applications' namespaces
    for name in ("sidecar", "standalone"):
        pod, container = _gateway(name)
        labels = pod["metadata"]["labels"]
        assert _selects(monitor["selector"]["matchLabels"], labels), name
        assert endpoint["port"] in {p["name"] for p in container["ports"]}, name
        assert labels[monitor["jobLabel"]] == "switchyard", name  # the alert rules' job


def test_fleet_gateway_discovers_the_vllm_replicas_through_their_headless_service() -> None:
    settings, _ = _mounted_settings("fleet")
    assert settings.relay.balancer == "prefix" and settings.redis.url  # gateway replicas share the map
    (backend,) = [b for b in settings.backends if b.discovery == "dns"]
    assert backend.type == "vllm" and backend.hosts_file is None
    url = urlsplit(backend.base_url or "")
    namespace = _kustomization("fleet")["namespace"]
    service = _one("fleet", "Service", "vllm")
    assert url.hostname == f"vllm.{namespace}.svc.cluster.local"
    assert service["spec"]["clusterIP"] == "None"  # headless: one record per ready pod
    assert not service["spec"].get("publishNotReadyAddresses")
    deployment = _one("fleet", "Deployment", "vllm")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    (service_port,) = service["spec"]["ports"]
    assert port["containerPort"] == url.port and service_port["targetPort"] == port["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "--enable-prefix-caching" in container["args"]
    assert any(a == f"--served-model-name={m}" for m in backend.models for a in container["args"])
