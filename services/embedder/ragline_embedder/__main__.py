"""Entry point of the embedder service: `ragline-embedder` or `python -m ragline_embedder`."""

from __future__ import annotations

from ragline.server import Lifecycle, Servicer, run_service
from ragline_embedder import wire
from ragline_embedder.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, EmbedderConfig
from ragline_embedder.loader import backend_loader
from ragline_embedder.rerankers import reranker_loader
from ragline_embedder.service import EmbedderServicer


def build(config: EmbedderConfig) -> tuple[Lifecycle, list[Servicer]]:
    """The embedder servicer with the backend and reranker the settings choose (loaded when it starts)."""
    servicer = EmbedderServicer(config, backend_loader(config), reranker_loader(config))
    return servicer, [Servicer(wire.SERVICE.full_name, wire.add_to_server, servicer)]


def main() -> None:
    """Runs the embedder until SIGTERM."""
    run_service("embedder", EmbedderConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
