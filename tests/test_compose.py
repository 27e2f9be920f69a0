"""docker-compose.yml is the production-shaped deployment; Docker cannot run here, so its wiring is checked by parsing it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ragline.devstack import SERVICES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICE_DIRS = {
    "embedder": "services/embedder",
    "retriever": "services/retriever",
    "generator": "services/generator",
    "gateway": "gateway",
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
        assert gateway_env[f"{name.upper()}_ADDR"] == f"{name}:{ports[name]}"
    assert gateway_env["REDIS_URL"].startswith("redis://redis:6379")
    database_url = services["retriever"]["environment"]["DATABASE_URL"]
    postgres_env = services["postgres"]["environment"]
    assert database_url == (
        f"postgresql://{postgres_env['POSTGRES_USER']}:{postgres_env['POSTGRES_PASSWORD']}@postgres:5432/{postgres_env['POSTGRES_DB']}"
    )
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:")
