"""The environment variables each Ragline service reads, for the tests of the deployments that set them.

A deployment (docker-compose.yml, deploy/kubernetes) that passes a variable no service reads is a
typo or a stale setting that silently does nothing; one with a value the service refuses stops it
at start. These helpers let the deployment tests catch both without starting anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ragline.config import ConfigError, ServerConfig, env_name, load_config
from ragline.devstack import SERVICES, ServiceSpec
from ragline.tls import ClientTlsConfig, ServerTlsConfig
from ragline_embedder.config import EmbedderConfig
from ragline_gateway.config import GatewayConfig
from ragline_generator.config import GeneratorConfig
from ragline_retriever.config import RetrieverConfig

SPECS = {spec.name: spec for spec in SERVICES}
CONFIGS: dict[str, type[Any]] = {
    "gateway": GatewayConfig,
    "embedder": EmbedderConfig,
    "retriever": RetrieverConfig,
    "generator": GeneratorConfig,
}
# Read outside any settings class: ragline.config.state_dir().
PROCESS_VARIABLES = {"RAGLINE_STATE_DIR"}
# The OpenTelemetry SDK's standard variables, which ragline.tracing reads as the SDK documents them.
STANDARD_PREFIX = "OTEL_"


def _classes(spec: ServiceSpec) -> list[tuple[type[Any], str]]:
    """The settings classes `spec`'s service loads, each with the prefix it loads it under."""
    return [
        (CONFIGS[spec.name], ""),
        (ServerConfig, spec.prefix),
        (ServerTlsConfig, spec.prefix),
        (ClientTlsConfig, ""),
    ]


def settings(name: str) -> set[str]:
    """Every environment variable the service `name` reads."""
    names = set(PROCESS_VARIABLES)
    for cls, prefix in _classes(SPECS[name]):
        names |= {env_name(field, prefix) for field in dataclasses.fields(cls)}
    return names


def unknown(name: str, variables: set[str]) -> set[str]:
    """Those of `variables` the service `name` does not read."""
    return {v for v in variables - settings(name) if not v.startswith(STANDARD_PREFIX)}


def refused(name: str, environ: dict[str, str]) -> str | None:
    """The service's message refusing `environ`'s values (as at start), or None if it accepts them.

    ServerTlsConfig and ClientTlsConfig are left out: they check that their files exist, which
    only the running container can.
    """
    for cls, prefix in _classes(SPECS[name])[:2]:
        try:
            load_config(cls, prefix=prefix, environ=environ)
        except ConfigError as exc:
            return str(exc)
    return None
