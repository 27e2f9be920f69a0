"""docker-compose.yml is the production-shaped deployment; Docker cannot run here, so its wiring is checked by parsing it.

YAML cannot import Python (and ragline.devstack may not import the services, nor the gateway
the other services), so the ports they write are checked against the one place each is
defined: the service's config module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from service_settings import refused, unknown
from tool_scripts import load_tool

from ragline.devstack import SERVICES
from ragline.tls import ClientTlsConfig, ServerTlsConfig, load_pair
from ragline_embedder import config as embedder_config
from ragline_gateway import config as gateway_config
from ragline_generator import config as generator_config
from ragline_retriever import config as retriever_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICE_DIRS = {
    "embedder": "services/embedder",
    "retriever": "services/retriever",
    "generator": "services/generator",
    "gateway": "gateway",
}
# Each service's (port, metrics port) by default, from its config module.
DEFAULT_PORTS = {
    "embedder": (embedder_config.DEFAULT_PORT, embedder_config.DEFAULT_METRICS_PORT),
    "retriever": (retriever_config.DEFAULT_PORT, retriever_config.DEFAULT_METRICS_PORT),
    "generator": (generator_config.DEFAULT_PORT, generator_config.DEFAULT_METRICS_PORT),
    "gateway": (gateway_config.DEFAULT_PORT, gateway_config.DEFAULT_METRICS_PORT),
}


def test_every_ragline_service_is_deployed_from_its_own_dockerfile() -> None:
    services = COMPOSE["services"]
    for spec in SERVICES:
        service = services[spec.name]
        dockerfile = ROOT / service["build"]["dockerfile"]
        assert service["build"]["context"] == "."
        assert dockerfile.parent == ROOT / SERVICE_DIRS[spec.name], f"{spec.name} builds from {dockerfile}"
        text = dockerfile.read_text()
        assert f"EXPOSE {spec.port} {spec.metrics_port}" in text, f"{dockerfile} must expose its ports"
        for copied in re.findall(r"^COPY (\S+) ", text, flags=re.MULTILINE):
            assert (ROOT / copied).exists(), f"{dockerfile} copies {copied}, which does not exist"
        environment = service["environment"]
        assert environment[f"{spec.prefix}_PORT"] == str(spec.port)
        assert environment[f"{spec.prefix}_METRICS_PORT"] == str(spec.metrics_port)
        assert environment[f"{spec.prefix}_HOST"] == "0.0.0.0"
        assert service["healthcheck"]["test"] == [
            "CMD",
            "python",
            "-m",
            "ragline.healthcheck",
            f"127.0.0.1:{spec.port}",
        ]


def test_ports_are_the_defaults_of_the_service_configs() -> None:
    services = COMPOSE["services"]
    for spec in SERVICES:
        port, metrics_port = DEFAULT_PORTS[spec.name]
        assert (spec.port, spec.metrics_port) == (port, metrics_port), f"ragline.devstack's {spec.name} ports"
        environment = services[spec.name]["environment"]
        assert environment[f"{spec.prefix}_PORT"] == str(port)
        assert environment[f"{spec.prefix}_METRICS_PORT"] == str(metrics_port)
    assert f"{gateway_config.DEFAULT_PORT}:{gateway_config.DEFAULT_PORT}" in services["gateway-lb"]["ports"]
    defaults = gateway_config.GatewayConfig()
    assert defaults.embedder_addr == f"127.0.0.1:{embedder_config.DEFAULT_PORT}"
    assert defaults.retriever_addr == f"127.0.0.1:{retriever_config.DEFAULT_PORT}"
    assert defaults.generator_addr == f"127.0.0.1:{generator_config.DEFAULT_PORT}"


def test_dependencies_exist_and_are_awaited_healthy() -> None:
    services = COMPOSE["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[dependency], f"{dependency} has no health check to wait for"
    assert set(services["gateway"]["depends_on"]) == {"embedder", "retriever", "generator", "redis"}
    assert set(services["retriever"]["depends_on"]) == {"postgres", "redis"}


def test_the_retriever_publishes_collection_state_in_the_gateways_redis() -> None:
    # ragline.collection_state is never stale only if both use the same Redis.
    services = COMPOSE["services"]
    assert (
        services["retriever"]["environment"]["REDIS_URL"] == services["gateway"]["environment"]["REDIS_URL"]
    )


def test_addresses_point_at_services_and_ports_that_exist() -> None:
    services = COMPOSE["services"]
    ports = {spec.name: spec.port for spec in SERVICES}
    gateway_env = services["gateway"]["environment"]
    for name in ("embedder", "retriever", "generator"):
        assert gateway_env[f"{name.upper()}_ADDR"] == f"dns:///{name}:{ports[name]}"
    assert gateway_env["REDIS_URL"].startswith("redis://redis:6379")
    database_url = services["retriever"]["environment"]["DATABASE_URL"]
    postgres_env = services["postgres"]["environment"]
    assert database_url == (
        f"postgresql://{postgres_env['POSTGRES_USER']}:{postgres_env['POSTGRES_PASSWORD']}@postgres:5432/{postgres_env['POSTGRES_DB']}"
    )
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:")


def test_internal_services_require_mutual_tls_with_the_certificates_make_certs_writes(tmp_path: Path) -> None:
    load_tool("make_certs").main([str(tmp_path)])
    services = COMPOSE["services"]
    mount = "./deploy/tls:/etc/ragline/tls:ro"

    def local(environment: dict[str, str]) -> dict[str, str]:
        """The container's settings with its mounted certificate paths made paths of `tmp_path`."""
        return {k: v.replace("/etc/ragline/tls", str(tmp_path)) for k, v in environment.items()}

    for spec in SERVICES:
        service = services[spec.name]
        assert mount in service["volumes"], spec.name
        environment = local(service["environment"])
        server = ServerTlsConfig.from_env(spec.prefix, environment)  # the files exist and the pair matches
        assert server.enabled, spec.name
        # Internal services ask for a client certificate of the CA; the gateway's callers use API keys.
        assert (server.client_ca_file is not None) == (spec.name != "gateway"), spec.name
        client = ClientTlsConfig.from_env(environment)  # health checks and the gateway's channels
        assert client.enabled and client.cert_file is not None, spec.name
        if server.client_ca_file is not None:
            assert server.client_ca_file == client.ca_file
    # The server certificate is valid for every name the services are dialed by.
    leaf = load_pair(tmp_path / "server.pem", tmp_path / "server-key.pem")[2]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dialed = {
        address.removeprefix("dns:///").split(":")[0]
        for key, address in services["gateway"]["environment"].items()
        if key.endswith("_ADDR")
    }
    # Clients on the host reach the gateways through gateway-lb's TCP passthrough, at localhost.
    assert dialed | {"localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert (ROOT / ".gitignore").read_text().count("deploy/tls/") == 1


def test_every_service_scales_behind_dns_and_one_load_balancer() -> None:
    # `docker compose up --scale embedder=3 --scale gateway=2`: a fixed host port or container name
    # would make a second replica fail to start; gateway-lb publishes the API's one port.
    services = COMPOSE["services"]
    for spec in SERVICES:
        assert "ports" not in services[spec.name] and "container_name" not in services[spec.name], spec.name
    lb = services["gateway-lb"]
    assert lb["image"].startswith("envoyproxy/envoy:")
    assert lb["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert "./deploy/envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro" in lb["volumes"]
    envoy = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())["static_resources"]
    [listener] = envoy["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == gateway_config.DEFAULT_PORT
    [proxy] = listener["filter_chains"][0]["filters"]
    [cluster] = envoy["clusters"]
    assert proxy["typed_config"]["cluster"] == cluster["name"]
    # STRICT_DNS: every address the name resolves to (every replica) is an endpoint.
    assert cluster["type"] == "STRICT_DNS" and cluster["lb_policy"] == "ROUND_ROBIN"
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "gateway",
        "port_value": gateway_config.DEFAULT_PORT,
    }
    assert cluster["health_checks"], "a replica that stops accepting connections must leave the rotation"
    # Prometheus scrapes every replica: each service's name resolved to all its addresses.
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {job["job_name"]: job["dns_sd_configs"] for job in prometheus["scrape_configs"]}
    for spec in SERVICES:
        assert scraped[f"ragline-{spec.name}"] == [
            {"names": [spec.name], "type": "A", "port": spec.metrics_port}
        ]


def test_every_setting_passed_is_read_by_the_service_and_accepted() -> None:
    services = COMPOSE["services"]
    for spec in SERVICES:
        environment = services[spec.name]["environment"]
        assert unknown(spec.name, set(environment)) == set(), f"{spec.name} reads no such setting"
        assert refused(spec.name, environment) is None


OTEL_COLLECTOR: dict[str, Any] = yaml.safe_load(
    (ROOT / "deploy" / "otel-collector" / "config.yaml").read_text()
)
DATASOURCES: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "grafana" / "datasources.yml").read_text())


def test_services_send_every_trace_to_the_collector_and_log_json() -> None:
    for spec in SERVICES:
        environment = COMPOSE["services"][spec.name]["environment"]
        assert environment["LOG_FORMAT"] == "json"
        assert environment["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
        host, port = environment["OTEL_EXPORTER_OTLP_ENDPOINT"].removeprefix("http://").split(":")
        assert host in COMPOSE["services"]
        assert OTEL_COLLECTOR["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == f"0.0.0.0:{port}"


def test_the_collector_keeps_errors_and_slow_traces_and_samples_the_rest() -> None:
    pipeline = OTEL_COLLECTOR["service"]["pipelines"]["traces"]
    assert "tail_sampling" in pipeline["processors"]
    policies = {p["type"]: p for p in OTEL_COLLECTOR["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    for exporter in pipeline["exporters"]:
        host = OTEL_COLLECTOR["exporters"][exporter]["endpoint"].split(":")[0]
        assert host in COMPOSE["services"], f"the collector exports to {host}, which compose does not run"
    assert COMPOSE["services"]["otel-collector"]["volumes"] == [
        "./deploy/otel-collector/config.yaml:/etc/otelcol/config.yaml:ro"
    ]


def test_grafana_links_exemplars_to_traces_and_traces_to_logs() -> None:
    by_uid = {d["uid"]: d for d in DATASOURCES["datasources"]}
    prometheus = next(d for d in by_uid.values() if d["type"] == "prometheus")
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    # The exemplar label ragline.tracing.exemplar writes, opened in the trace backend compose runs.
    assert destination["name"] == "trace_id"
    jaeger = by_uid[destination["datasourceUid"]]
    assert jaeger["type"] == "jaeger" and jaeger["url"].split("//")[1].split(":")[0] in COMPOSE["services"]
    logs = by_uid[jaeger["jsonData"]["tracesToLogsV2"]["datasourceUid"]]
    assert logs["type"] == "loki" and "trace_id" in jaeger["jsonData"]["tracesToLogsV2"]["query"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "ragline-dashboard.json").read_text())
    latency = [t for p in dashboard["panels"] for t in p["targets"] if "_bucket" in t["expr"]]
    assert latency and all(t.get("exemplar") for t in latency)
