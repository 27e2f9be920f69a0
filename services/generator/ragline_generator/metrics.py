"""The generator's own Prometheus metrics; labels are bounded (model name, token kind, finish reason,
status code), never question or passage text."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ragline.metrics import LATENCY_BUCKETS

REQUEST_DURATION = Histogram(
    "ragline_generator_request_duration_seconds",
    "Time from receiving a request, queueing included, to its complete answer, by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "ragline_generator_time_to_first_token_seconds",
    "Time from receiving a request, queueing included, to the first answer text, by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
# Time per output token, in seconds (the base unit): decoding speed as a latency, whose quantiles
# and averages aggregate across answers and replicas, where a tokens-per-second ratio does not.
TOKEN_INTERVAL = Histogram(
    "ragline_generator_token_interval_seconds",
    "Mean time between the completion tokens of an answer, after the first one, by model.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
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
ERRORS = Counter(
    "ragline_generator_errors_total",
    "Requests that failed, by gRPC status code name (e.g. INVALID_ARGUMENT, RESOURCE_EXHAUSTED).",
    ["code"],
)
INVALID_CITATIONS = Counter(
    "ragline_generator_invalid_citations_total",
    "Citation numbers in answers that referred to no passage of the prompt; they were dropped.",
)
CITATIONS_REPAIRED = Counter(
    "ragline_generator_citations_repaired_total",
    "Citation numbers re-pointed to the passage that holds the cited sentence's words.",
)
QUEUE_DEPTH = Gauge(
    "ragline_generator_queue_depth",
    "Requests waiting for the model while it serves another one.",
)
UPSTREAM_RETRIES = Counter(
    "ragline_generator_upstream_retries_total",
    "Requests to the OpenAI-compatible API retried, by HTTP status (429, 5xx) or `connect`.",
    ["status"],
)
