"""The generator's own Prometheus metrics; labels are bounded (model name, token kind, finish reason)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ragline.metrics import LATENCY_BUCKETS

TIME_TO_FIRST_TOKEN = Histogram(
    "ragline_generator_time_to_first_token_seconds",
    "Time from receiving a request, queueing included, to the first answer text.",
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter(
    "ragline_generator_tokens_total",
    "Tokens processed, by model and kind (prompt or completion).",
    ["model", "kind"],
)
FINISHED = Counter(
    "ragline_generator_finish_total",
    "Answers completed, by finish reason (stop, length, no_context).",
    ["reason"],
)
INVALID_CITATIONS = Counter(
    "ragline_generator_invalid_citations_total",
    "Citation numbers in answers that referred to no passage of the prompt; they were dropped.",
)
QUEUE_DEPTH = Gauge(
    "ragline_generator_queue_depth",
    "Requests waiting for the model while it serves another one.",
)
