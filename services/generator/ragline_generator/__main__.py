"""Runs the generator service: `python -m ragline_generator` or the `ragline-generator` script."""

from __future__ import annotations

from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import generator_service_pb2, generator_service_pb2_grpc
from ragline_generator.backends import ChatBackend, LocalBackend
from ragline_generator.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, GeneratorConfig
from ragline_generator.openai_backend import OpenAIBackend
from ragline_generator.prompt import load_template
from ragline_generator.service import GeneratorServicer


def make_backend(config: GeneratorConfig) -> ChatBackend:
    """The backend GENERATOR_BACKEND selects."""
    return OpenAIBackend(config) if config.backend == "openai" else LocalBackend(config)


def build(config: GeneratorConfig) -> tuple[Lifecycle, list[Servicer]]:
    """The generator servicer with the backend and prompt template the settings choose."""
    servicer = GeneratorServicer(config, make_backend(config), load_template(config.prompt_template))
    name = generator_service_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name
    add = generator_service_pb2_grpc.add_GeneratorServiceServicer_to_server
    return servicer, [Servicer(name, add, servicer)]


def main() -> None:
    """Console entry point."""
    run_service("generator", GeneratorConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
