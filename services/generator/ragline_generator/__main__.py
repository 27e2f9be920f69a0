"""Runs the generator service: `python -m ragline_generator` or the `ragline-generator` script."""

from __future__ import annotations

from ragline.config import ServerConfig, load_config
from ragline.server import Servicer, configure_logging, run, serve
from ragline.v1 import generator_service_pb2, generator_service_pb2_grpc
from ragline_generator.backends import ChatBackend, LocalBackend
from ragline_generator.config import GeneratorConfig
from ragline_generator.openai_backend import OpenAIBackend
from ragline_generator.prompt import load_template
from ragline_generator.service import GeneratorServicer


def make_backend(config: GeneratorConfig) -> ChatBackend:
    """The backend GENERATOR_BACKEND selects."""
    return OpenAIBackend(config) if config.backend == "openai" else LocalBackend(config)


async def _main() -> None:
    server_config = ServerConfig.from_env("GENERATOR", port=50054, metrics_port=9104)
    config = load_config(GeneratorConfig)
    configure_logging(server_config.log_level)
    servicer = GeneratorServicer(config, make_backend(config), load_template(config.prompt_template))
    await serve(
        "generator",
        server_config,
        [
            Servicer(
                generator_service_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name,
                generator_service_pb2_grpc.add_GeneratorServiceServicer_to_server,
                servicer,
            )
        ],
        servicer,
    )


def main() -> None:
    """Console entry point."""
    run(_main)


if __name__ == "__main__":
    main()
