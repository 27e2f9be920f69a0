"""Unit tests of the read replicas' settings and lag measure (no process, no database)."""

from __future__ import annotations

import math

import pytest

from ragline.config import ConfigError, load_config
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database
from ragline_retriever.read_replicas import ReadReplicas


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
