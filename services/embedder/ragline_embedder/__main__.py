"""Entry point of the embedder service: `ragline-embedder` or `python -m ragline_embedder`."""

from __future__ import annotations

from ragline.config import ServerConfig, load_config
from ragline.server import Servicer, configure_logging, run, serve
from ragline_embedder import wire
from ragline_embedder.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, EmbedderConfig
from ragline_embedder.loader import backend_loader
from ragline_embedder.rerankers import reranker_loader
from ragline_embedder.service import EmbedderServicer


async def _main() -> None:
    server_config = ServerConfig.from_env("EMBEDDER", port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    config = load_config(EmbedderConfig)
    configure_logging(server_config.log_level)
    servicer = EmbedderServicer(config, backend_loader(config), reranker_loader(config))
    await serve(
        "embedder",
        server_config,
        [Servicer(wire.SERVICE.full_name, wire.add_to_server, servicer)],
        servicer,
    )


def main() -> None:
    """Runs the embedder until SIGTERM."""
    run(_main)


if __name__ == "__main__":
    main()
