"""TLS for every gRPC hop: the settings, the credentials, and certificate rotation without a restart.

A server with `<PREFIX>_TLS_CERT_FILE` and `<PREFIX>_TLS_KEY_FILE` serves TLS only (no plaintext
port); with `<PREFIX>_TLS_CLIENT_CA_FILE` as well it requires a client certificate signed by that
CA (mutual TLS, what the internal services use). Every client in Ragline dials with
`RAGLINE_TLS_CA_FILE` (and a client certificate, `RAGLINE_TLS_CERT_FILE` / `RAGLINE_TLS_KEY_FILE`)
when it is set, plaintext otherwise, so `make run` needs no certificate.

Certificates are files that rotate (cert-manager, a renewal cron): the server's credentials fetch
them again at the first handshake after the files change (gRPC's dynamic SSL credentials), and a
client asks `ClientCertificates.rotated()` to learn when to open new channels. A half-written pair
(a certificate whose key does not match yet) is skipped until it is whole, so a rotation never takes a
service down. Each certificate's expiry is exported, for an alert well before it lapses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import Gauge

from ragline.config import ConfigError, load_config, setting

log = logging.getLogger(__name__)

CERTIFICATE_EXPIRY = Gauge(
    "ragline_tls_certificate_expiry_timestamp_seconds",
    "When the certificate this process presents expires (Unix time), by whether it presents it as server or client.",
    ["role"],
)


@dataclass(frozen=True)
class ServerTlsConfig:
    """A gRPC server's certificate, read under its service's prefix (`RETRIEVER_TLS_CERT_FILE`, ...)."""

    cert_file: Path | None = setting("{prefix}_TLS_CERT_FILE", None)  # noqa: RUF009 - setting() returns a dataclasses.field
    """PEM certificate chain the server presents; with the key, the server speaks TLS only. Unset: plaintext."""
    key_file: Path | None = setting("{prefix}_TLS_KEY_FILE", None)  # noqa: RUF009 - setting() returns a dataclasses.field
    """PEM private key of that certificate."""
    client_ca_file: Path | None = setting("{prefix}_TLS_CLIENT_CA_FILE", None)  # noqa: RUF009 - setting() returns a dataclasses.field
    """PEM CA certificates; when set, every client must present a certificate they signed (mutual TLS)."""

    @classmethod
    def from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> ServerTlsConfig:
        """Reads and checks the settings under `prefix` (of `environ`, default the process's); ConfigError
        names what is missing."""
        config = load_config(cls, prefix=prefix, environ=environ)
        _require_cert_with_key(config, prefix)
        if config.client_ca_file is not None and config.cert_file is None:
            raise ConfigError(
                f"{prefix}_TLS_CLIENT_CA_FILE needs {prefix}_TLS_CERT_FILE and {prefix}_TLS_KEY_FILE: "
                "client certificates are only asked for over TLS"
            )
        _require_usable_files(config, prefix)
        return config

    @property
    def enabled(self) -> bool:
        """Whether the server speaks TLS."""
        return self.cert_file is not None


@dataclass(frozen=True)
class ClientTlsConfig:
    """How every Ragline client dials gRPC: the CA it trusts and the certificate it presents."""

    ca_file: Path | None = setting("RAGLINE_TLS_CA_FILE", None)  # noqa: RUF009 - setting() returns a dataclasses.field
    """PEM CA certificates the servers' certificates must be signed by; set, every call goes over TLS."""
    cert_file: Path | None = setting("RAGLINE_TLS_CERT_FILE", None)  # noqa: RUF009 - setting() returns a dataclasses.field
    """PEM client certificate presented to servers that require one (mutual TLS); re-read when it changes."""
    key_file: Path | None = setting("RAGLINE_TLS_KEY_FILE", None)  # noqa: RUF009 - setting() returns a dataclasses.field
    """PEM private key of the client certificate."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTlsConfig:
        """Reads and checks the settings (of `environ`, default the process's); ConfigError names what is missing."""
        config = load_config(cls, environ=environ)
        _require_cert_with_key(config, "RAGLINE")
        if config.cert_file is not None and config.ca_file is None:
            raise ConfigError(
                "RAGLINE_TLS_CERT_FILE needs RAGLINE_TLS_CA_FILE: a client certificate is sent over TLS"
            )
        _require_usable_files(config, "RAGLINE")
        return config

    @property
    def enabled(self) -> bool:
        """Whether clients dial over TLS."""
        return self.ca_file is not None


def _require_cert_with_key(config: ServerTlsConfig | ClientTlsConfig, prefix: str) -> None:
    """A certificate is of no use without its key, nor a key without its certificate."""
    if (config.cert_file is None) != (config.key_file is None):
        raise ConfigError(f"{prefix}_TLS_CERT_FILE and {prefix}_TLS_KEY_FILE must be set together")


def _require_usable_files(config: ServerTlsConfig | ClientTlsConfig, prefix: str) -> None:
    """Every file named can be read, and the certificate and key are one pair: found at start, not at
    the first handshake."""
    missing = [
        f"{prefix}_TLS_{field.name.removesuffix('_file').upper()}_FILE={getattr(config, field.name)}"
        for field in dataclasses.fields(config)
        if getattr(config, field.name) is not None and not os.access(getattr(config, field.name), os.R_OK)
    ]
    if missing:
        raise ConfigError("cannot read " + ", ".join(missing))
    if config.cert_file is None or config.key_file is None:
        return
    try:
        load_pair(config.cert_file, config.key_file)
    except ValueError as exc:
        raise ConfigError(
            f"{prefix}_TLS_CERT_FILE / {prefix}_TLS_KEY_FILE: not a usable pair: {exc}"
        ) from None


def _stamp(paths: list[Path]) -> tuple[tuple[int, int, int], ...]:
    """What changes when any of `paths` is rewritten or replaced (a renamed file has another inode)."""
    stamps = []
    for path in paths:
        try:
            info = path.stat()
        except FileNotFoundError:
            stamps.append((0, 0, 0))
            continue
        stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def load_pair(cert_file: Path, key_file: Path) -> tuple[bytes, bytes, x509.Certificate]:
    """The certificate chain and key of a pair of files, and the leaf certificate.

    ValueError when the key is not the certificate's (a rotation caught between the two writes).
    """
    chain, key = cert_file.read_bytes(), key_file.read_bytes()
    leaf = x509.load_pem_x509_certificates(chain)[0]
    public = serialization.load_pem_private_key(key, password=None).public_key()
    encoding, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(encoding, fmt) != leaf.public_key().public_bytes(encoding, fmt):
        raise ValueError(f"the key in {key_file} is not the one of the certificate in {cert_file}")
    return chain, key, leaf


class ServerCertificates:
    """A server's credentials that fetch the certificate again whenever its files change."""

    def __init__(self, config: ServerTlsConfig) -> None:
        assert config.cert_file is not None and config.key_file is not None
        self._config = config
        self._paths = [config.cert_file, config.key_file]
        if config.client_ca_file is not None:
            self._paths.append(config.client_ca_file)
        self._lock = threading.Lock()
        self._loaded = _stamp(self._paths)
        self._initial = self._configuration()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        assert self._config.cert_file is not None and self._config.key_file is not None
        chain, key, leaf = load_pair(self._config.cert_file, self._config.key_file)
        ca = self._config.client_ca_file.read_bytes() if self._config.client_ca_file is not None else None
        CERTIFICATE_EXPIRY.labels("server").set(leaf.not_valid_after_utc.timestamp())
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC calls this before each handshake: a new configuration when the files changed, else None."""
        with self._lock:
            stamp = _stamp(self._paths)
            if stamp == self._loaded:
                return None
            try:
                configuration = self._configuration()
            except (OSError, ValueError) as exc:
                # Mid-rotation (one file written, not the other): keep serving the old pair, try again next time.
                log.warning("new TLS certificate not usable yet, still serving the previous one: %s", exc)
                return None
            self._loaded = stamp
            log.info("TLS certificate reloaded from %s", self._config.cert_file)
            return configuration

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for `add_secure_port`, requiring client certificates when a client CA is set."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self._config.client_ca_file is not None
        )


class ClientCertificates:
    """A client's channel credentials, and whether its certificate files changed since they were made."""

    def __init__(self, config: ClientTlsConfig) -> None:
        self.config = config
        self._paths = [p for p in (config.ca_file, config.cert_file, config.key_file) if p is not None]
        self._loaded = _stamp(self._paths)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials from the files as they are now; None when TLS is off (plaintext channels)."""
        if self.config.ca_file is None:
            return None
        self._loaded = _stamp(self._paths)
        ca = self.config.ca_file.read_bytes()
        if self.config.cert_file is None or self.config.key_file is None:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        chain, key, leaf = load_pair(self.config.cert_file, self.config.key_file)
        CERTIFICATE_EXPIRY.labels("client").set(leaf.not_valid_after_utc.timestamp())
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)

    def rotated(self) -> bool:
        """Whether the files changed since `credentials` last read them: time to open new channels."""
        return _stamp(self._paths) != self._loaded


def client_certificates(environ: Mapping[str, str] | None = None) -> ClientCertificates:
    """Client TLS from the RAGLINE_TLS_* settings of `environ`, default the process's (plaintext when no CA is set)."""
    return ClientCertificates(ClientTlsConfig.from_env(environ))
