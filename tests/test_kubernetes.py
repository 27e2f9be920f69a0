"""deploy/kubernetes, rendered offline: valid against the Kubernetes schemas, and wired as its README says.

No cluster runs here, so each overlay is rendered (tests/kustomize_render.py) and every resource
validated with kubernetes-validate against the oldest Kubernetes the README supports and the
newest schema shipped; then the wiring is checked: every service has its Deployment, Service,
autoscaler and disruption budget, native gRPC probes, requests and limits, settings its config
really reads with values it accepts, dns:/// targets that resolve to its headless Services, and
NetworkPolicies under which only the gateway is reachable from outside the namespace.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_render import Unsupported, render
from service_settings import SPECS, refused, unknown

from ragline.server import LIVENESS_SERVICE

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["production", "staging"]
# The oldest Kubernetes the README supports, and the newest schema kubernetes-validate ships.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Secrets that are not in the manifests: who creates them (the README says how).
EXTERNAL_SECRETS = {"ragline-postgres-app": "CloudNativePG", "ragline-redis": "kubectl create secret"}


@functools.cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    """The overlay's resources, rendered once (no test changes them)."""
    return render(KUBERNETES / "overlays" / overlay)


def one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and In/NotIn/Exists expressions) selects `labels`."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def container(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pod = one(resources, "Deployment", name)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == [name]
    return dict(pod["containers"][0])


def environment(resources: list[dict[str, Any]], name: str) -> tuple[dict[str, str], set[str]]:
    """The service container's literal settings (its ConfigMaps', then its own), and the names set from Secrets."""
    spec = container(resources, name)
    literal: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        literal |= one(resources, "ConfigMap", source["configMapRef"]["name"])["data"]
    from_secrets = set()
    for variable in spec.get("env", []):
        if "value" in variable:
            literal[variable["name"]] = variable["value"]
        else:
            from_secrets.add(variable["name"])
    return literal, from_secrets


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_is_valid_against_the_kubernetes_schemas(overlay: str, version: str) -> None:
    resources = rendered(overlay)
    assert resources
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{resource['kind']} {resource['metadata']['name']}: {exc.message}"
            ) from None
        assert (
            resource["metadata"]["namespace"] == f"ragline{'' if overlay == 'production' else '-' + overlay}"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_a_deployment_service_autoscaler_and_disruption_budget(overlay: str) -> None:
    resources = rendered(overlay)
    for name, spec in SPECS.items():
        deployment = one(resources, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"], labels)
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        service = one(resources, "Service", name if name == "gateway" else f"{name}-headless")["spec"]
        # Internal services are headless, so that DNS answers with every pod for client-side balancing.
        assert (service.get("clusterIP") == "None") == (name != "gateway"), name
        assert selects(service["selector"], labels)
        ports = {port["name"]: port["port"] for port in service["ports"]}
        assert ports == {"grpc": spec.port, "metrics": spec.metrics_port}
        autoscaler = one(resources, "HorizontalPodAutoscaler", name)["spec"]
        assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= autoscaler["minReplicas"] < autoscaler["maxReplicas"]
        assert [m["resource"]["name"] for m in autoscaler["metrics"]] == ["cpu"]
        budget = one(resources, "PodDisruptionBudget", name)["spec"]
        assert selects(budget["selector"], labels) and budget["maxUnavailable"] == 1
    production = {
        r["metadata"]["name"]: r["spec"] for r in resources if r["kind"] == "HorizontalPodAutoscaler"
    }
    if overlay == "production":
        assert all(spec["minReplicas"] >= 2 for spec in production.values()), "one pod down leaves none"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_are_native_grpc_and_liveness_ignores_dependencies(overlay: str) -> None:
    resources = rendered(overlay)
    for name, spec in SPECS.items():
        pod = container(resources, name)
        assert {port["name"]: port["containerPort"] for port in pod["ports"]} == {
            "grpc": spec.port,
            "metrics": spec.metrics_port,
        }
        # Readiness: the overall status, NOT_SERVING while a dependency is down.
        assert pod["readinessProbe"]["grpc"] == {"port": spec.port}
        for probe in ("startupProbe", "livenessProbe"):
            assert pod[probe]["grpc"] == {"port": spec.port, "service": LIVENESS_SERVICE}, (name, probe)
        grace = float(environment(resources, name)[0][f"{spec.prefix}_SHUTDOWN_GRACE_SECONDS"])
        pod_spec = one(resources, "Deployment", name)["spec"]["template"]["spec"]
        assert pod_spec["terminationGracePeriodSeconds"] > grace, (
            "calls in flight must finish before the kill"
        )


def mebibytes(quantity: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(value) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_and_limits_cover_the_measured_peak_memory(overlay: str) -> None:
    resources = rendered(overlay)
    manifests = {name: (KUBERNETES / "base" / f"{name}.yaml").read_text() for name in SPECS}
    for name in SPECS:
        # The measured peak is quoted next to the numbers, from benchmarks/bench_memory.py.
        peak = float(re.search(r"peak RSS (\d+) MiB", manifests[name]).group(1))  # type: ignore[union-attr]
        resources_ = container(resources, name)["resources"]
        request, limit = (mebibytes(resources_[k]["memory"]) for k in ("requests", "limits"))
        assert 1.2 * peak <= request < limit, name
        assert {"cpu", "memory"} <= set(resources_["requests"]) and set(resources_["limits"]) == {
            "cpu",
            "memory",
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_passed_is_read_by_the_service_and_accepted(overlay: str) -> None:
    resources = rendered(overlay)
    for name in SPECS:
        literal, from_secrets = environment(resources, name)
        # A variable may exist only to be expanded into another's value, $(NAME), by Kubernetes.
        expanded = {m for value in literal.values() for m in re.findall(r"\$\(([A-Z_]+)\)", value)}
        assert unknown(name, set(literal) | from_secrets) - expanded == set(), f"{name} reads no such setting"
        assert refused(name, literal) is None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_dials_every_replica_through_the_headless_services(overlay: str) -> None:
    resources = rendered(overlay)
    literal, _ = environment(resources, "gateway")
    for name in ("embedder", "retriever", "generator"):
        assert literal[f"{name.upper()}_ADDR"] == f"dns:///{name}-headless:{SPECS[name].port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_secrets_that_exist_or_are_documented(overlay: str) -> None:
    resources = rendered(overlay)
    secrets = {r["metadata"]["name"] for r in resources if r["kind"] == "Secret"}
    readme = (KUBERNETES / "README.md").read_text()
    for name in SPECS:
        for variable in container(resources, name).get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference is None:
                assert not re.search(r"://[^/@]*:[^/@$]*@", variable.get("value", "")), (
                    "a password in a manifest"
                )
                continue
            if reference["name"] not in secrets and not reference.get("optional"):
                assert reference["name"] in EXTERNAL_SECRETS, (name, reference)
                assert f"`{reference['name']}`" in readme, (
                    f"the README must say who creates {reference['name']}"
                )
    for config_map in (r for r in resources if r["kind"] == "ConfigMap"):
        for key in config_map["data"]:
            # URLs of PostgreSQL and Redis hold passwords.
            assert not re.search(r"(PASSWORD|API_KEY|DATABASE_URLS?|REDIS_URL)$", key), (
                f"{key} belongs in a Secret"
            )


def ingress_rules(
    resources: list[dict[str, Any]], labels: dict[str, str]
) -> tuple[bool, list[dict[str, Any]]]:
    """Whether any policy isolates a pod with `labels` for ingress, and the rules that let traffic in."""
    isolated, rules = False, []
    for policy in (r["spec"] for r in resources if r["kind"] == "NetworkPolicy"):
        if "Ingress" in policy["policyTypes"] and selects(policy["podSelector"], labels):
            isolated = True
            rules.extend(policy.get("ingress", []))
    return isolated, rules


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside_the_namespace(overlay: str) -> None:
    resources = rendered(overlay)
    for name in SPECS:
        labels = one(resources, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        isolated, rules = ingress_rules(resources, labels)
        assert isolated, f"no NetworkPolicy isolates {name}"
        for rule in rules:
            ports = [port["port"] for port in rule.get("ports", [])]
            peers = rule.get("from")
            # A rule without `from` admits any source; a namespaceSelector or ipBlock admits other namespaces.
            outside = peers is None or any("podSelector" not in peer or len(peer) > 1 for peer in peers)
            if outside and name != "gateway":
                assert ports == ["metrics"], f"{name} is reachable from outside on {ports or 'every port'}"
            if "grpc" in ports and name != "gateway":
                assert not outside
                gateway_labels = one(resources, "Deployment", "gateway")["spec"]["template"]["metadata"][
                    "labels"
                ]
                assert all(selects(peer["podSelector"], gateway_labels) for peer in peers or [])
                assert all(not selects(peer["podSelector"], labels) for peer in peers or [])
        if name == "gateway":
            assert any(rule.get("from") is None and rule["ports"] == [{"port": "grpc"}] for rule in rules)


def test_the_renderer_refuses_features_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"configMapGenerator": [{"name": "x"}]}))
    with pytest.raises(Unsupported):
        render(tmp_path)
    patch = {"target": {"kind": "ConfigMap"}, "patch": "- {op: replace, path: /data/MISSING, value: x}"}
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}})
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["config.yaml"], "patches": [patch]})
    )
    with pytest.raises(ValueError, match="does not exist"):
        render(tmp_path)
