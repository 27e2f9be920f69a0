"""Typed settings read from environment variables only, validated once at start.

A service describes its settings as a frozen dataclass whose fields are made with
`setting()`: the environment variable, a default and limits. Each field's docstring, right
below it, is its one description; the service's README table repeats it for operators, and
tests/lib/test_config_documented.py checks that every field has both, with the same default.
`load_config` reads them all and raises one `ConfigError` naming every bad variable, so a
misconfigured deployment stops at start with a message a person can act on.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """One or more environment variables are missing or invalid."""


def setting(
    env: str,
    default: Any,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declares a dataclass field read from the environment variable `env`.

    `env` may contain `{prefix}`, filled in by `load_config(prefix=...)`, so services can
    share a settings class under their own names (`EMBEDDER_PORT`, `RETRIEVER_PORT`).
    """
    metadata = {"env": env, "choices": choices, "min": minimum, "max": maximum}
    return dataclasses.field(default=default, metadata=metadata)


def _convert(raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _convert(raw, inner[0])
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        return int(raw)
    if annotation is float:
        return float(raw)
    if annotation is Path:
        return Path(raw).expanduser()
    return raw


def env_name(field: dataclasses.Field[Any], prefix: str = "") -> str:
    """The environment variable a field is read from."""
    return str(field.metadata["env"]).format(prefix=prefix)


def load_config(
    cls: type[T],
    *,
    prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Builds `cls` from the environment, raising `ConfigError` listing every invalid variable.

    `defaults` overrides field defaults by field name (a service's own port, say); an unset or
    empty variable keeps the default.
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(defaults or {})
    errors: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = env_name(field, prefix)
        raw = env.get(name, "")
        if raw == "":
            continue
        try:
            value = _convert(raw, hints[field.name])
        except ValueError as exc:
            errors.append(f"{name}={raw!r}: {exc}")
            continue
        meta = field.metadata
        if meta["choices"] and value not in meta["choices"]:
            errors.append(f"{name}={raw!r}: must be one of {', '.join(meta['choices'])}")
        elif meta["min"] is not None and value < meta["min"]:
            errors.append(f"{name}={raw!r}: must be at least {meta['min']}")
        elif meta["max"] is not None and value > meta["max"]:
            errors.append(f"{name}={raw!r}: must be at most {meta['max']}")
        else:
            values[field.name] = value
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cls(**values)


def state_dir() -> Path:
    """The folder where Ragline keeps local state (embedded PostgreSQL data, tokenizer files).

    `RAGLINE_STATE_DIR`, or `.ragline` in the working directory.
    """
    return Path(os.environ.get("RAGLINE_STATE_DIR") or ".ragline").resolve()


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Settings every gRPC service has, read under the service's own prefix."""

    host: str = setting("{prefix}_HOST", "127.0.0.1")
    """Address the gRPC and metrics servers bind to; 0.0.0.0 in containers."""
    port: int = setting("{prefix}_PORT", 0, minimum=0, maximum=65535)
    """Port of the gRPC server; 0 picks a free one."""
    metrics_port: int = setting("{prefix}_METRICS_PORT", 0, minimum=0, maximum=65535)
    """Port of the Prometheus `/metrics` HTTP endpoint; 0 picks a free one."""
    shutdown_grace_seconds: float = setting("{prefix}_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0)
    """Time in-flight calls get to finish after SIGTERM before they are cancelled."""
    max_connection_age_seconds: float = setting("{prefix}_MAX_CONNECTION_AGE_SECONDS", 60.0, minimum=1)
    """Age after which the server asks a client to reconnect, so that clients resolve their target again
    and spread calls over replicas started since."""
    max_connection_age_grace_seconds: float = setting(
        "{prefix}_MAX_CONNECTION_AGE_GRACE_SECONDS", 150.0, minimum=0
    )
    """Time calls under way on a connection past its maximum age get to finish before it is closed: longer
    than the longest call (a streamed answer)."""
    log_level: str = setting("LOG_LEVEL", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    """Logging level of the process."""
    log_format: str = setting("LOG_FORMAT", "text", choices=("text", "json"))
    """`text` for people, `json` for log stores: one object per line with trace ids, and one line per RPC."""
    trace_capture_text: bool = setting("RAGLINE_TRACE_CAPTURE_TEXT", False)
    """Put question and document text in span attributes; off, spans carry sizes and ids only."""

    @classmethod
    def from_env(cls, prefix: str, *, port: int, metrics_port: int) -> ServerConfig:
        """Reads the settings under `prefix` with the service's own default ports."""
        return load_config(cls, prefix=prefix, defaults={"port": port, "metrics_port": metrics_port})
