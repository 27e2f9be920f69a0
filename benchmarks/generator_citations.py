"""How often the generator cites the passage that answers the question, per prompt layout.

Small models pick a citation by position more than by content, so the passage layout
(GENERATOR_PASSAGE_ORDER) and the citation grammar (GENERATOR_CITATION_GRAMMAR) are chosen by
measurement, with this script: 12 questions, each asked with three passages on different
topics (the one that answers it and two others) with the answering passage ranked 1st, 2nd
and 3rd in turn, through the real service over gRPC at temperature 0. Rank 1 is the realistic
case (hybrid retrieval puts the right passage first); ranks 2 and 3 show what the layout costs
when retrieval is wrong. Takes a few minutes: `python -m benchmarks.generator_citations`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import grpc

from benchmarks.report import write_report
from ragline.devstack import Stack
from ragline.v1 import common_pb2, generator_service_pb2, generator_service_pb2_grpc

# (passage, question it answers); the two other passages of a case are facts on other topics.
FACTS = (
    (
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was completed in 1889.",
        "In which city is the Eiffel Tower?",
    ),
    (
        "Bananas are long curved fruits with yellow skin. They are rich in potassium.",
        "Which mineral are bananas rich in?",
    ),
    (
        "At sea level, pure water boils at 100 degrees Celsius.",
        "At what temperature does water boil at sea level?",
    ),
    (
        "The Great Wall of China was built over many centuries to protect Chinese states from invasions.",
        "Why was the Great Wall of China built?",
    ),
    (
        "Honey bees communicate the location of flowers to each other with a waggle dance.",
        "How do honey bees tell each other where flowers are?",
    ),
    (
        "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.",
        "What is the highest mountain above sea level?",
    ),
    (
        "The piano was invented in Italy by Bartolomeo Cristofori around the year 1700.",
        "Who invented the piano?",
    ),
    (
        "Penguins are flightless birds that live almost exclusively in the Southern Hemisphere.",
        "Can penguins fly?",
    ),
    (
        "The Amazon rainforest covers much of the Amazon basin in South America.",
        "Where is the Amazon rainforest?",
    ),
    ("Coffee beans are the roasted seeds of the berries of the Coffea plant.", "What are coffee beans?"),
    (
        "The human heart pumps blood through the body with four chambers.",
        "How many chambers does the human heart have?",
    ),
    (
        "Jupiter is the largest planet in the Solar System, a gas giant.",
        "What is the largest planet in the Solar System?",
    ),
)
RANKS = (1, 2, 3)
VARIANTS = (
    ("best_first", "false"),
    ("best_first", "true"),
    ("best_last", "false"),
    ("best_last", "true"),
)


def case(index: int, rank: int) -> generator_service_pb2.GenerateRequest:
    """Question `index` with its answering passage (chunk id "answer") at `rank` among three."""
    answer, question = FACTS[index]
    others = [FACTS[(index + 1) % len(FACTS)][0], FACTS[(index + 5) % len(FACTS)][0]]
    texts = [*others[: rank - 1], answer, *others[rank - 1 :]]
    passages = [
        common_pb2.Passage(
            document_id=f"doc-{n}",
            chunk_id="answer" if text == answer else f"other-{n}",
            text=text,
            score=1.0 - n / 10,
        )
        for n, text in enumerate(texts)
    ]
    return generator_service_pb2.GenerateRequest(
        question=question,
        passages=passages,
        options=common_pb2.GenerationOptions(temperature=0, max_tokens=48),
    )


async def measure(address: str) -> dict[str, object]:
    """Answers every case once; counts answers with a citation and first citations of the right passage."""
    right = dict.fromkeys(RANKS, 0)
    cited = 0
    async with grpc.aio.insecure_channel(address) as channel:
        client = generator_service_pb2_grpc.GeneratorServiceStub(channel)
        for index in range(len(FACTS)):
            for rank in RANKS:
                reply = await client.Generate(case(index, rank), timeout=120)
                if reply.citations:
                    cited += 1
                    right[rank] += reply.citations[0].chunk_id == "answer"
    return {
        "answers_citing": f"{cited}/{len(FACTS) * len(RANKS)}",
        **{f"right_at_rank_{rank}": f"{right[rank]}/{len(FACTS)}" for rank in RANKS},
        "right_total": f"{sum(right.values())}/{len(FACTS) * len(RANKS)}",
    }


def main() -> None:
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ragline-citations-") as state:
        for order, grammar in VARIANTS:
            env = {"GENERATOR_PASSAGE_ORDER": order, "GENERATOR_CITATION_GRAMMAR": grammar}
            stack = Stack(
                state=Path(state) / f"{order}-{grammar}", services=("generator",), free_ports=True, env=env
            )
            stack.start(timeout=120)
            try:
                result = asyncio.run(measure(stack["generator"].address))
            finally:
                stack.stop()
            rows.append({"passage_order": order, "grammar": grammar, **result})
            print(rows[-1], flush=True)
    write_report(
        "generator_citations",
        rows,
        {
            "cases": f"{len(FACTS)} questions x answering passage at rank {RANKS}, 3 passages, temperature 0",
            "model": "bundled SmolLM2-135M-Instruct Q4_1",
            "seconds": round(time.monotonic() - started),
        },
    )


if __name__ == "__main__":
    main()
