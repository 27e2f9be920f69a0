"""Unit tests of the read replicas' settings and lag measure (no process, no database)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ragline.config import ConfigError, load_config
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database
from ragline_retriever.filters import Params
from ragline_retriever.read_replicas import ReadReplicas
from ragline_retriever.search import KEYWORD_FILTER_PARAMS
from ragline_retriever.searcher import Searcher, _Located, _Search
from ragline_retriever.validation import validate_search


def test_read_urls_are_a_comma_separated_list_of_postgresql_urls() -> None:
    config = load_config(
        RetrieverConfig,
        environ={"RETRIEVER_READ_DATABASE_URLS": " postgresql://r1/db , postgres://u:p@r2:5433/db,"},
    )
    assert config.read_urls == ("postgresql://r1/db", "postgres://u:p@r2:5433/db")
    assert load_config(RetrieverConfig, environ={}).read_urls == ()
    with pytest.raises(ConfigError, match="RETRIEVER_READ_DATABASE_URLS") as error:
        load_config(
            RetrieverConfig,
            environ={"RETRIEVER_READ_DATABASE_URLS": "postgresql://r1/db,mysql://u:secret@r2/db"},
        )
    assert "secret" not in str(error.value)


def lag(samples: list[tuple[float, int]], replayed: int | None, now: float, previous: float = 7.0) -> float:
    config = RetrieverConfig()
    replicas = ReadReplicas(config, Database(config))
    replicas._primary_positions.extend(samples)
    return replicas._lag(replayed, now, previous)


def test_lag_is_the_time_since_the_newest_primary_position_the_replica_has_replayed() -> None:
    samples = [(10.0, 100), (11.0, 100), (12.0, 250), (13.0, 400)]
    # Caught up with the newest position: no lag, however old the last write (an idle primary).
    assert lag(samples, 400, 13.1) == 0.0
    assert lag(samples, 500, 13.1) == 0.0
    # Replayed up to the position of 12.0 but not 13.0's.
    assert lag(samples, 300, 13.5) == pytest.approx(1.5)
    # Behind every position kept: at least as old as the oldest.
    assert lag(samples, 50, 13.5) == pytest.approx(3.5)
    # A replica that has replayed nothing yet, and a primary that could not be read.
    assert lag(samples, None, 13.5) == math.inf
    assert lag([], 50, 13.5) == 7.0


class _BrokenConnection:
    """A pooled connection a killed standby left mid-protocol: every statement fails in asyncpg itself."""

    async def fetch(self, *args: object) -> list[object]:
        raise asyncpg.InternalClientError("cannot perform operation: another operation is in progress")

    @contextlib.asynccontextmanager
    async def transaction(self, **options: object) -> AsyncIterator[None]:
        await self.fetch("BEGIN")
        yield


class _OneReplica:
    """ReadReplicas with one replica in rotation, whose connection is broken."""

    def __init__(self) -> None:
        self.taken_out: list[tuple[str, str]] = []

    def pick(self) -> str:
        return "replica-1"

    @contextlib.asynccontextmanager
    async def connection(self, replica: str) -> AsyncIterator[_BrokenConnection]:
        yield _BrokenConnection()

    def take_out(self, replica: str, reason: str) -> None:
        self.taken_out.append((replica, reason))


async def test_a_replica_connection_left_mid_protocol_takes_the_replica_out_and_leaves_the_search_to_the_primary() -> (
    None
):
    config = load_config(RetrieverConfig, environ={})
    replicas = _OneReplica()
    searcher = Searcher(config, Database(config), replicas)  # type: ignore[arg-type]
    request = pb.SearchChunksRequest(
        tenant="t", collection="docs", query_text="flow", mode=common_pb2.SEARCH_MODE_KEYWORD
    )
    request.collection_create_time.GetCurrentTime()
    searcher._located["t", "docs"] = _Located(1, 8, "model-a")
    search = _Search(request, validate_search(request, config), None, Params(KEYWORD_FILTER_PARAMS))

    rows = await searcher._on_replica(replicas, search)  # type: ignore[arg-type]

    assert rows is None  # the primary answers instead of an INTERNAL
    assert replicas.taken_out and replicas.taken_out[0][0] == "replica-1"
