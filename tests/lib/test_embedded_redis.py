"""The embedded Valkey is bounded and evicts least recently used keys, so caches cannot grow without limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from ragline.config import ConfigError
from ragline.embedded_redis import DEFAULT_MAXMEMORY, EmbeddedRedis, maxmemory_setting


@pytest.mark.integration
def test_it_is_bounded_and_evicts_instead_of_refusing_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_VALKEY_MAXMEMORY", "4mb")
    server = EmbeddedRedis(tmp_path / "valkey")
    client = redis.Redis.from_url(server.start())
    try:
        assert client.config_get("maxmemory") == {"maxmemory": str(4 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        value = b"x" * 10_000
        for i in range(2_000):  # 20 MB of cache entries, five times the limit
            client.set(f"ragline:embedding:v1:{i}", value, ex=86_400)
        assert int(client.info("memory")["used_memory"]) <= 5 * 1024 * 1024
        assert int(client.info("stats")["evicted_keys"]) > 0
        assert client.get("ragline:embedding:v1:1999") == value
    finally:
        client.close()
        server.stop()


def test_the_limit_has_a_default_and_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGLINE_VALKEY_MAXMEMORY", raising=False)
    assert maxmemory_setting() == DEFAULT_MAXMEMORY
    monkeypatch.setenv("RAGLINE_VALKEY_MAXMEMORY", "1GB")
    assert maxmemory_setting() == "1GB"
    monkeypatch.setenv("RAGLINE_VALKEY_MAXMEMORY", "lots")
    with pytest.raises(ConfigError, match="RAGLINE_VALKEY_MAXMEMORY='lots'"):
        maxmemory_setting()
