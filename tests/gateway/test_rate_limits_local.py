"""Limits with no Redis: each replica's own counters decide, and forgetting idle ones never frees a budget early."""

from __future__ import annotations

import asyncio

import pytest

from ragline.config import load_config
from ragline.errors import ResourceExhausted
from ragline_gateway import rate_limits
from ragline_gateway.config import GatewayConfig
from ragline_gateway.principal import Principal, RateClass, Role
from ragline_gateway.rate_limits import Limits


class NoRedis:
    """Dependencies without a Redis client."""

    redis = None


def limits(**env: str) -> Limits:
    return Limits(load_config(GatewayConfig, environ=env), NoRedis())


def principal(credential: str, tenant: str = "acme") -> Principal:
    return Principal(tenant, Role.WRITER, credential)


async def test_local_buckets_refuse_over_the_rate_and_idle_ones_are_forgotten_only_once_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rate_limits, "_MAX_LOCAL_BUCKETS", 2)
    local = limits(
        GATEWAY_RATE_LIMIT_INGEST_BYTES_PER_MINUTE="600", GATEWAY_RATE_LIMIT_READ_PER_SECOND="1000"
    )
    await local.charge_ingest_bytes(principal("a"), 600)
    with pytest.raises(ResourceExhausted, match="GATEWAY_RATE_LIMIT_INGEST_BYTES_PER_MINUTE") as raised:
        await local.charge_ingest_bytes(principal("a"), 100)
    assert 9.0 < (raised.value.retry_after or 0) <= 10.0
    # Many other credentials come and go: "a" is still in debt, not forgotten and refilled.
    for name in "bcdefgh":
        await local.check_rate(principal(name), RateClass.READ)
        await asyncio.sleep(0.005)  # a read bucket is full again after 1 ms
    with pytest.raises(ResourceExhausted):
        await local.charge_ingest_bytes(principal("a"), 100)
    assert len(local._local_buckets) <= 3


async def test_local_ask_slots_are_capped_per_tenant_and_given_back() -> None:
    local = limits(GATEWAY_ASK_CONCURRENCY_PER_TENANT="2")
    async with local.ask_slot(principal("a")), local.ask_slot(principal("b")):
        with pytest.raises(ResourceExhausted, match="GATEWAY_ASK_CONCURRENCY_PER_TENANT"):
            async with local.ask_slot(principal("c")):
                pass
        async with local.ask_slot(principal("c", tenant="globex")):
            pass
    async with local.ask_slot(principal("c")):
        pass
    assert local._local_slots == {}
