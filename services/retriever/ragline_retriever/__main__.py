"""Entry point of the retriever service: `ragline-retriever` or `python -m ragline_retriever`."""

from __future__ import annotations

from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import retriever_service_pb2, retriever_service_pb2_grpc
from ragline_retriever.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, RetrieverConfig
from ragline_retriever.database import Database
from ragline_retriever.service import RetrieverServicer


def build(config: RetrieverConfig) -> tuple[Lifecycle, list[Servicer]]:
    """The retriever servicer over its PostgreSQL pool."""
    servicer = RetrieverServicer(config, Database(config))
    name = retriever_service_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name
    add = retriever_service_pb2_grpc.add_RetrieverServiceServicer_to_server
    return servicer, [Servicer(name, add, servicer)]


def main() -> None:
    """Runs the retriever until SIGTERM."""
    run_service("retriever", RetrieverConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
