"""Makes a private CA and the certificates of a Ragline deployment, for local and test stacks.

`ragline.devstack --tls`, the integration tests and `tools/make_certs.py` (docker-compose) all use
this, so that no key is ever checked in: each run makes its own with `trustme` (short-lived
certificates from a throwaway CA, meant for development and tests; production uses the
organisation's CA or cert-manager). `environment` turns the files into the settings of every
service and client: mutual TLS between the gateway and the internal services, TLS on the gateway.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme

INTERNAL_SERVICES = ("EMBEDDER", "RETRIEVER", "GENERATOR")
# Names a certificate is valid for: the loopback a local stack dials, and the compose service names.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "gateway", "embedder", "retriever", "generator")


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files of one deployment: the CA, the services' server pair and the clients' pair."""

    ca: Path
    """The CA certificate every side trusts."""
    server_cert: Path
    """Certificate chain every service presents (one for all: they run on the same hosts in a dev stack)."""
    server_key: Path
    """Its private key (mode 0600)."""
    client_cert: Path
    """Certificate chain the gateway and every other client present to the internal services."""
    client_key: Path
    """Its private key (mode 0600)."""


def _replace(path: Path, pem: bytes, *, private: bool = False) -> None:
    """Replaces `path` whole with `pem` (a reader sees the old file or the new one); `private`: mode 0600
    from the start, for a key."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    if private:
        partial.touch(mode=0o600)
    partial.write_bytes(pem)
    partial.replace(path)


def issue_pair(
    ca: trustme.CA,
    cert_file: Path,
    key_file: Path,
    hosts: tuple[str, ...],
    not_after: datetime.datetime | None = None,
) -> None:
    """Writes a new certificate for `hosts` signed by `ca`, and its key, over `cert_file` and `key_file`.

    The key is written first and each file replaced whole, so a reader sees either pair or, briefly,
    a new key with the old certificate, which `ragline.tls` recognises and waits out.
    """
    issued = ca.issue_cert(*hosts, not_after=not_after)
    _replace(key_file, issued.private_key_pem.bytes(), private=True)
    _replace(cert_file, b"".join(blob.bytes() for blob in issued.cert_chain_pems))


def write_certificates(
    folder: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS, ca: trustme.CA | None = None
) -> CertificateFiles:
    """Writes a server and a client pair signed by `ca` and the CA's certificate in `folder`.

    By default a new CA, whose key is never written: renewing means running this again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca = ca or trustme.CA(organization_name="Ragline development CA")
    files = CertificateFiles(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    issue_pair(ca, files.server_cert, files.server_key, hosts)
    issue_pair(ca, files.client_cert, files.client_key, ("ragline-client",))
    return files


def environment(files: CertificateFiles) -> dict[str, str]:
    """The settings that make a stack use `files`: mTLS to the internal services, TLS on the gateway."""
    env = {
        "GATEWAY_TLS_CERT_FILE": str(files.server_cert),
        "GATEWAY_TLS_KEY_FILE": str(files.server_key),
        "RAGLINE_TLS_CA_FILE": str(files.ca),
        "RAGLINE_TLS_CERT_FILE": str(files.client_cert),
        "RAGLINE_TLS_KEY_FILE": str(files.client_key),
    }
    for prefix in INTERNAL_SERVICES:
        env[f"{prefix}_TLS_CERT_FILE"] = str(files.server_cert)
        env[f"{prefix}_TLS_KEY_FILE"] = str(files.server_key)
        env[f"{prefix}_TLS_CLIENT_CA_FILE"] = str(files.ca)
    return env
