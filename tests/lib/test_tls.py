"""TLS on a real service process (the toy service through ragline.server): mutual TLS refuses plaintext,
foreign and missing client certificates, and a certificate replaced on disk is served without a restart.

Certificates come from trustme, made afresh by each test; nothing is checked in.
"""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tls_peer import served_certificate
from toy_process import Toy, search_request

from ragline.channels import blocking_channel
from ragline.config import ConfigError
from ragline.dev_certificates import INTERNAL_SERVICES, CertificateFiles, issue_pair, write_certificates
from ragline.devstack import Stack
from ragline.tls import ClientCertificates, ClientTlsConfig, ServerCertificates, ServerTlsConfig, load_pair
from ragline.v1 import gateway_service_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def mtls_env(files: CertificateFiles) -> dict[str, str]:
    return {
        "TOY_TLS_CERT_FILE": str(files.server_cert),
        "TOY_TLS_KEY_FILE": str(files.server_key),
        "TOY_TLS_CLIENT_CA_FILE": str(files.ca),
    }


def certificates(ca: Path, cert: Path | None = None, key: Path | None = None) -> ClientCertificates:
    return ClientCertificates(ClientTlsConfig(ca_file=ca, cert_file=cert, key_file=key))


def health(address: str, client: ClientCertificates) -> int | None:
    with blocking_channel(address, client) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError:
            return None
    return int(reply.status)


@pytest.fixture
def files(tmp_path: Path) -> CertificateFiles:
    return write_certificates(tmp_path / "tls")


@pytest.mark.integration
def test_mutual_tls_serves_clients_of_its_ca_and_refuses_every_other(
    tmp_path: Path, files: CertificateFiles
) -> None:
    toy = Toy(tmp_path, mtls_env(files))
    try:
        good = certificates(files.ca, files.client_cert, files.client_key)
        deadline = time.monotonic() + 20
        while health(toy.address, good) != SERVING:
            assert time.monotonic() < deadline, toy.log.read_text()
            time.sleep(0.2)
        with blocking_channel(toy.address, good) as channel:
            reply = gateway_service_pb2_grpc.GatewayServiceStub(channel).Search(
                search_request("0"), timeout=5
            )
        assert reply.hits[0].text == "done"

        with grpc.insecure_channel(toy.address) as plaintext, pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate of another CA, and no certificate at all, over otherwise valid TLS.
        other = write_certificates(tmp_path / "other")
        assert health(toy.address, certificates(files.ca, other.client_cert, other.client_key)) is None
        assert health(toy.address, certificates(files.ca)) is None
        # And a client that does not trust the server's CA refuses the server.
        assert health(toy.address, certificates(other.ca, other.client_cert, other.client_key)) is None
        assert "over mTLS" in toy.log.read_text()
    finally:
        toy.process.terminate()
        toy.process.wait()


@pytest.mark.integration
def test_a_certificate_replaced_on_disk_is_served_without_a_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = write_certificates(tmp_path / "tls", ca=ca)
    toy = Toy(tmp_path, mtls_env(files))
    client = certificates(files.ca, files.client_cert, files.client_key)
    try:
        deadline = time.monotonic() + 20
        while health(toy.address, client) != SERVING:
            assert time.monotonic() < deadline, toy.log.read_text()
            time.sleep(0.2)
        before = served_certificate(toy.address, files)
        assert before.serial_number == load_pair(files.server_cert, files.server_key)[2].serial_number

        # New connections check health all through the rotation, each handshake fetching the files.
        seen: list[int | None] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                seen.append(health(toy.address, client))

        prober = threading.Thread(target=probe)
        prober.start()
        time.sleep(0.3)
        not_after = datetime.datetime(2031, 1, 2, tzinfo=datetime.UTC)
        issue_pair(ca, files.server_cert, files.server_key, ("127.0.0.1", "localhost"), not_after)
        time.sleep(0.5)
        stop.set()
        prober.join()
        assert len(seen) > 5 and set(seen) == {SERVING}
        after = served_certificate(toy.address, files)
        assert after.serial_number != before.serial_number
        assert after.serial_number == load_pair(files.server_cert, files.server_key)[2].serial_number
        # The same process: nothing restarted, and health answered SERVING throughout.
        assert toy.process.poll() is None
        assert health(toy.address, client) == SERVING
        expiry = [
            sample.value
            for family in text_string_to_metric_families(toy.metrics())
            for sample in family.samples
            if sample.name == "ragline_tls_certificate_expiry_timestamp_seconds"
        ]
        assert expiry == [not_after.timestamp()]
        assert "TLS certificate reloaded" in toy.log.read_text()
    finally:
        toy.process.terminate()
        toy.process.wait()


def test_a_half_rotated_pair_keeps_the_previous_one(tmp_path: Path) -> None:
    files = write_certificates(tmp_path / "tls")
    other = write_certificates(tmp_path / "other")
    with pytest.raises(ValueError, match="is not the one of the certificate"):
        load_pair(files.server_cert, other.server_key)
    server = ServerCertificates(ServerTlsConfig(cert_file=files.server_cert, key_file=files.server_key))
    # The new key written, not yet its certificate: gRPC is told to keep the configuration it has.
    files.server_key.write_bytes(other.server_key.read_bytes())
    assert server._fetch() is None
    files.server_cert.write_bytes(other.server_cert.read_bytes())
    assert server._fetch() is not None
    assert server._fetch() is None


def test_client_certificates_notice_rotation(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = write_certificates(tmp_path / "tls", ca=ca)
    client = certificates(files.ca, files.client_cert, files.client_key)
    assert client.credentials() is not None
    assert not client.rotated()
    issue_pair(ca, files.client_cert, files.client_key, ("ragline-client",))
    assert client.rotated()
    client.credentials()
    assert not client.rotated()
    assert ClientCertificates(ClientTlsConfig()).credentials() is None


def test_settings_are_checked_at_start(tmp_path: Path, files: CertificateFiles) -> None:
    def server(env: dict[str, str]) -> ServerTlsConfig:
        return ServerTlsConfig.from_env("TOY", env)

    assert not server({}).enabled
    assert server(mtls_env(files)).client_ca_file == files.ca
    with pytest.raises(ConfigError, match="must be set together"):
        server({"TOY_TLS_CERT_FILE": str(files.server_cert)})
    with pytest.raises(ConfigError, match="needs TOY_TLS_CERT_FILE"):
        server({"TOY_TLS_CLIENT_CA_FILE": str(files.ca)})
    with pytest.raises(ConfigError, match="cannot read TOY_TLS_KEY_FILE"):
        server({"TOY_TLS_CERT_FILE": str(files.server_cert), "TOY_TLS_KEY_FILE": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="not a usable pair"):
        server({"TOY_TLS_CERT_FILE": str(files.server_cert), "TOY_TLS_KEY_FILE": str(files.client_key)})
    with pytest.raises(ConfigError, match="needs RAGLINE_TLS_CA_FILE"):
        ClientTlsConfig.from_env(
            {"RAGLINE_TLS_CERT_FILE": str(files.client_cert), "RAGLINE_TLS_KEY_FILE": str(files.client_key)}
        )


def test_devstack_tls_runs_mutual_tls_inside_and_tls_on_the_gateway(tmp_path: Path) -> None:
    stack = Stack(state=tmp_path, tls=True)
    for prefix in INTERNAL_SERVICES:
        server = ServerTlsConfig.from_env(prefix, stack.base_env)
        assert server.enabled and server.client_ca_file is not None, prefix
    gateway = ServerTlsConfig.from_env("GATEWAY", stack.base_env)
    assert gateway.enabled and gateway.client_ca_file is None
    assert stack.client_certificates().credentials() is not None
    # Without the option nothing is configured: `make run` stays plaintext.
    plain = Stack(state=tmp_path / "plain", env={k: "" for k in stack.base_env if "_TLS_" in k})
    assert not any(
        ServerTlsConfig.from_env(p, plain.base_env).enabled for p in (*INTERNAL_SERVICES, "GATEWAY")
    )
    assert plain.client_certificates().credentials() is None
