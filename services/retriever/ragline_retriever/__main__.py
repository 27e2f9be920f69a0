"""Entry point of the retriever service: `ragline-retriever` or `python -m ragline_retriever`."""

from __future__ import annotations

from ragline.config import ServerConfig, load_config
from ragline.server import Servicer, configure_logging, run, serve
from ragline.v1 import retriever_service_pb2, retriever_service_pb2_grpc
from ragline_retriever.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, RetrieverConfig
from ragline_retriever.database import Database
from ragline_retriever.service import RetrieverServicer


async def _main() -> None:
    server_config = ServerConfig.from_env("RETRIEVER", port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    config = load_config(RetrieverConfig)
    configure_logging(server_config.log_level)
    servicer = RetrieverServicer(config, Database(config))
    await serve(
        "retriever",
        server_config,
        [
            Servicer(
                retriever_service_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name,
                retriever_service_pb2_grpc.add_RetrieverServiceServicer_to_server,
                servicer,
            )
        ],
        servicer,
    )


def main() -> None:
    """Runs the retriever until SIGTERM."""
    run(_main)


if __name__ == "__main__":
    main()
