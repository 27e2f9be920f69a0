"""The whole stack under TLS (#15): mutual TLS between the gateway and the internal services, TLS on the
gateway, with certificates trustme makes for this module; nothing is checked in.

Search, Ask and an ingest job work through the gateway with an API key; an internal service refuses
a plaintext client and a client whose certificate another CA signed; certificates replaced on disk are
served, and presented, without a restart.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls_peer import served_certificate

from ragline.channels import blocking_channel
from ragline.client import RaglineClient
from ragline.dev_certificates import CertificateFiles, environment, issue_pair, write_certificates
from ragline.devstack import Stack
from ragline.tls import ClientCertificates, ClientTlsConfig

pytestmark = pytest.mark.integration

INTERNAL = ("embedder", "retriever", "generator")
SERVING = health_pb2.HealthCheckResponse.SERVING


class TlsStack:
    def __init__(self, stack: Stack, ca: trustme.CA, files: CertificateFiles) -> None:
        self.stack, self.ca, self.files = stack, ca, files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    state = tmp_path_factory.mktemp("ragline-tls-state")
    ca = trustme.CA()
    files = write_certificates(state / "tls", ca=ca)
    env = {
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "GATEWAY_INGEST_POLL_SECONDS": "0.2",
        # Answers come from the generator (its stage, its spans), not the extractive mode "auto" may pick.
        "GATEWAY_ANSWER_MODE": "generative",
        **environment(files),
    }
    stack = Stack(state=state, free_ports=True, env=env)
    stack.start()
    yield TlsStack(stack, ca, files)
    stack.stop()


def health(address: str, certificates: ClientCertificates | None) -> grpc.StatusCode | int:
    """The service's health status, or the code of the failed call."""
    channel = (
        grpc.insecure_channel(address) if certificates is None else blocking_channel(address, certificates)
    )
    with channel:
        try:
            return int(
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            )
        except grpc.RpcError as exc:
            return exc.code()


async def test_search_ask_and_an_ingest_job_work_through_the_gateway_under_mtls(
    tls: TlsStack, tmp_path: Path
) -> None:
    stack = tls.stack
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "basalt.txt").write_text(
        "Basalt is a dark volcanic rock formed from the rapid cooling of lava rich in iron and magnesium."
    )
    (tmp_path / "docs" / "tea.txt").write_text("Green tea is made from leaves that are steamed and dried.")
    # The ragline command, with the stack's key file and the client certificate from the environment.
    env = {
        **os.environ,
        **environment(tls.files),
        "RAGLINE_GATEWAY_ADDR": stack["gateway"].address,
        "RAGLINE_STATE_DIR": str(stack.state),
    }
    env.pop("RAGLINE_API_KEY", None)
    ingested = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ragline.cli", "ingest", "docs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ingested.returncode == 0, ingested.stderr
    assert "succeeded: 2 stored" in ingested.stdout
    async with RaglineClient(
        stack["gateway"].address, api_key=stack.api_key, certificates=stack.client_certificates()
    ) as client:
        found = await client.search("volcanic rock from lava", top_k=1)
        assert found.hits[0].document_id == "docs/basalt.txt"
        answer = await client.ask("What is basalt formed from?", max_tokens=32)
        assert answer.answer and answer.model
    # The gateway itself refuses plaintext: it serves TLS only.
    assert health(stack["gateway"].address, None) == grpc.StatusCode.UNAVAILABLE


def test_an_internal_service_refuses_plaintext_and_other_cas(tls: TlsStack, tmp_path: Path) -> None:
    other = write_certificates(tmp_path / "other")
    foreign_client = ClientCertificates(
        ClientTlsConfig(ca_file=tls.files.ca, cert_file=other.client_cert, key_file=other.client_key)
    )
    no_client_certificate = ClientCertificates(ClientTlsConfig(ca_file=tls.files.ca))
    for name in INTERNAL:
        address = tls.stack[name].address
        assert health(address, tls.stack.client_certificates()) == SERVING
        assert health(address, None) == grpc.StatusCode.UNAVAILABLE, name
        assert health(address, foreign_client) == grpc.StatusCode.UNAVAILABLE, name
        assert health(address, no_client_certificate) == grpc.StatusCode.UNAVAILABLE, name


async def test_certificates_swapped_on_disk_are_used_without_a_restart(tls: TlsStack) -> None:
    stack, files = tls.stack, tls.files
    retriever = stack["retriever"].address
    pids = {name: stack[name].process.pid for name in stack.processes}  # type: ignore[union-attr]
    before = served_certificate(retriever, files).serial_number
    issue_pair(tls.ca, files.server_cert, files.server_key, ("localhost", "127.0.0.1"))
    after = served_certificate(retriever, files).serial_number
    assert after != before

    # The gateway's client certificate: new channels within a readiness check (2 s), presenting it.
    not_after = datetime.datetime(2032, 3, 4, tzinfo=datetime.UTC)
    issue_pair(tls.ca, files.client_cert, files.client_key, ("ragline-client",), not_after)
    deadline = time.monotonic() + 20
    metric = "ragline_tls_certificate_expiry_timestamp_seconds"
    while stack["gateway"].metric(metric, {"role": "client"}) != not_after.timestamp():
        assert time.monotonic() < deadline, stack["gateway"].log_tail()
        await asyncio.sleep(0.2)
    assert "opened new channels" in stack["gateway"].log_tail(100_000)
    async with RaglineClient(
        stack["gateway"].address, api_key=stack.api_key, certificates=stack.client_certificates()
    ) as client:
        await client.search("volcanic rock", top_k=1)
    for name in stack.processes:
        assert health(stack[name].address, stack.client_certificates()) == SERVING
        assert stack[name].process.pid == pids[name]  # type: ignore[union-attr]
