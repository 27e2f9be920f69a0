"""Prometheus metrics every service exports, and the `/metrics` HTTP endpoint.

Names follow Prometheus conventions (base units, `_seconds` histograms, `_total`
counters). Labels take only bounded values: service and method names registered on the
server and gRPC status code names, never request content. A label several services use
takes its values from here, so that one query can compare them across services.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

from ragline.v1 import common_pb2

# Buckets from 1 ms to 60 s: embedding a query takes milliseconds, generating an answer seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RPC_DURATION = Histogram(
    "ragline_grpc_server_handling_seconds",
    "Time a gRPC method took to answer, by service and method.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
RPC_HANDLED = Counter(
    "ragline_grpc_server_handled_total",
    "gRPC calls completed, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)

# The `mode` label of every metric about a search, on every service.
SEARCH_MODE_LABELS: dict[int, str] = {
    common_pb2.SEARCH_MODE_VECTOR: "vector",
    common_pb2.SEARCH_MODE_KEYWORD: "keyword",
    common_pb2.SEARCH_MODE_HYBRID: "hybrid",
}


def search_mode_label(mode: int) -> str:
    """The `mode` label value of a search in `mode`; unspecified is hybrid, as every service searches it."""
    return SEARCH_MODE_LABELS[mode or common_pb2.SEARCH_MODE_HYBRID]


def start_metrics_server(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serves `/metrics` on `host:port` from a daemon thread; port 0 picks a free port."""
    return start_http_server(port, addr=host)
