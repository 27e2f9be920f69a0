"""Requests, a client and a metrics reader shared by the generator's integration tests."""

from __future__ import annotations

import grpc

from ragline.v1 import common_pb2, generator_service_pb2, generator_service_pb2_grpc

# Any name works with llama.cpp's server; this one is not a gpt-4o model, so the openai backend
# counts prompts with cl100k_base.
OPENAI_MODEL = "smollm2-135m-instruct"

PASSAGES = [
    common_pb2.Passage(
        document_id="landmarks.md",
        chunk_id="paris-1",
        text="The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was completed in 1889.",
        score=0.92,
    ),
    common_pb2.Passage(
        document_id="fruit.md",
        chunk_id="banana-1",
        text="Bananas are long curved fruits with yellow skin. They are rich in potassium.",
        score=0.41,
    ),
    common_pb2.Passage(
        document_id="physics.md",
        chunk_id="water-1",
        text="At sea level, pure water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
        score=0.38,
    ),
]
GREEDY = common_pb2.GenerationOptions(temperature=0, max_tokens=64)
# A prompt that makes the model write for a long time, for cancellation and queueing.
LONG = generator_service_pb2.GenerateStreamRequest(
    question="Tell me everything about the Eiffel Tower, its history and its construction, in great detail.",
    passages=PASSAGES,
    options=common_pb2.GenerationOptions(temperature=1.0, max_tokens=1000),
)


def stub(address: str) -> tuple[grpc.aio.Channel, generator_service_pb2_grpc.GeneratorServiceStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, generator_service_pb2_grpc.GeneratorServiceStub(channel)
