"""The retriever's settings, read from `DATABASE_URL` and `RETRIEVER_*` environment variables at start."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragline.config import ConfigError, setting

DEFAULT_PORT = 50053
DEFAULT_METRICS_PORT = 9103
# PostgreSQL memory settings: a number and kB, MB or GB, from 1 MB (its minimum) up.
_MEMORY = re.compile(r"^[1-9][0-9]{0,6}(kB|MB|GB)$")


@dataclass(frozen=True)
class RetrieverConfig:
    """Where the retriever's PostgreSQL is and how it talks to it."""

    database_url: str = setting("DATABASE_URL", "")
    """A `postgresql://` URL of a server with the pgvector extension available; unset starts the
    embedded PostgreSQL 18 + pgvector with its data under `RAGLINE_STATE_DIR/postgres`."""
    pool_min: int = setting("RETRIEVER_POOL_MIN", 1, minimum=0, maximum=1000)
    """Connections the pool opens at start and keeps open while idle."""
    pool_max: int = setting("RETRIEVER_POOL_MAX", 10, minimum=1, maximum=1000)
    """Most connections the pool opens; calls beyond that wait for a free connection."""
    connect_timeout_seconds: float = setting("RETRIEVER_DB_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=0.1)
    """Time to open a connection or wait for a free one before the call fails with UNAVAILABLE."""
    command_timeout_seconds: float = setting("RETRIEVER_DB_COMMAND_TIMEOUT_SECONDS", 30.0, minimum=0.1)
    """Time one statement may take before the call fails with UNAVAILABLE instead of hanging."""
    read_database_urls: str = setting("RETRIEVER_READ_DATABASE_URLS", "")
    """Comma-separated `postgresql://` URLs of streaming replicas of `DATABASE_URL` that searches may
    read from; writes, jobs and migrations always go to the primary. Empty: every search reads the
    primary. A search goes to a replica only if the replica has replayed the generation the caller
    was told about (`min_generation`), so no result is older than that."""
    read_max_lag_seconds: float = setting("RETRIEVER_READ_MAX_LAG_SECONDS", 5.0, minimum=0.0)
    """A replica whose replay lags the primary by more than this is out of rotation until it catches up."""
    read_check_interval_seconds: float = setting(
        "RETRIEVER_READ_CHECK_INTERVAL_SECONDS", 1.0, minimum=0.05, maximum=60.0
    )
    """How often each replica's health and replay lag are measured; a replica that went down or
    fell behind between two checks still costs no search a failure (it falls back to the primary)."""
    hnsw_m: int = setting("RETRIEVER_HNSW_M", 16, minimum=2, maximum=100)
    """pgvector's HNSW `m` for the index made by CreateStoredCollection: more links, better recall, more memory."""
    hnsw_ef_construction: int = setting("RETRIEVER_HNSW_EF_CONSTRUCTION", 256, minimum=4, maximum=1000)
    """pgvector's HNSW `ef_construction` for new collections: larger builds slower and recalls better.
    256 rather than pgvector's 64: at a million chunks (`make bench-scale`) recall@10 at ef_search
    100 was 0.657 with 64, 0.799 with 128 and 0.898 with 256, and only 256 reaches 0.95 within
    5 ms (at ef_search 200). The build takes about twice as long as with 128 (392-566 s against
    248-274 s at a million chunks), and so does each insert into the graph."""

    hnsw_ef_search: int = setting("RETRIEVER_HNSW_EF_SEARCH", 200, minimum=1, maximum=1000)
    """pgvector's `hnsw.ef_search` when a search leaves `ef_search` at 0; never below the hits asked for.
    200: with ef_construction 256, recall@10 0.95 at a million chunks at about 4.5 ms p50 (`make
    bench-scale`; 100 gave 0.90 at about 3.7 ms); at 100,000 chunks 100 already reached 0.961."""
    plan_cache_mode: str = setting(
        "RETRIEVER_PLAN_CACHE_MODE",
        "force_generic_plan",
        choices=("force_generic_plan", "auto", "force_custom_plan"),
    )
    """How PostgreSQL plans the retriever's prepared statements. `force_generic_plan` plans each once
    per connection: PostgreSQL's `auto` kept re-planning the hybrid search statement on every call
    (0.5 ms of a 3 ms search on Cranfield) although its generic plan ran as fast or faster."""
    maintenance_work_mem: str = setting("RETRIEVER_MAINTENANCE_WORK_MEM", "1GB")
    """Memory an HNSW index build may use (e.g. `512MB`, `2GB`); a graph that fits builds several times faster."""
    bm25_fold_seconds: float = setting("RETRIEVER_BM25_FOLD_SECONDS", 15.0, minimum=0.01, maximum=3600.0)
    """How often the BM25 statistics' delta rows are folded (`bm25_statistics.py`); searches are exact
    either way. Each fold changes the terms written since, and the next search of each such term
    reads its changed blocks again (`posting_cache.py`), while between folds a search counts more
    delta rows. 15 rather than 5: at a million chunks under a full-speed ingest, keyword p99 went
    from 43.6-44.5 to 39.2 ms and hybrid from 49.7-53.8 to 41.9 (30 and 60 no better); longer
    leaves the deltas of a burst of writes unfolded for longer (services/retriever/README.md)."""
    migration_check_seconds: float = setting(
        "RETRIEVER_MIGRATION_CHECK_SECONDS", 2.0, minimum=0.01, maximum=3600.0
    )
    """How often a collection migration whose job has nothing left to store is checked, and switched
    to its new model when nothing differs (`collection_migrations.py`)."""
    hybrid_keyword_max_postings: int = setting("RETRIEVER_HYBRID_KEYWORD_MAX_POSTINGS", 0, minimum=0)
    """How many BM25 postings hybrid search's keyword list may read (0: no bound, always exact), when
    the posting cache does not hold all its terms (a list from the cache is exact, and faster). Past
    it, the list is the best, by full score, of the chunks best on the rarer terms (`bm25_top_k.py`).
    Off by default: at a million chunks (`make bench-scale`'s database, 50 Cranfield queries, top 40
    in process) 200,000 / 100,000 / 50,000 took 35 / 25 / 17 ms against 37.5 ms exact, and found
    0.89 / 0.63 / 0.43 of the exact top 40."""
    posting_cache_bytes: int = setting("RETRIEVER_POSTING_CACHE_BYTES", 256 * 1024 * 1024, minimum=0)
    """Memory for the BM25 postings of recently searched terms (`posting_cache.py`), 14 bytes a
    posting; 0 reads every search's postings from PostgreSQL. Results are the same either way. At a
    million chunks the terms of 200 Cranfield queries hold 17.7 M postings (237 MiB); a keyword
    search whose terms are all held took 9.9 ms at p50 against 51 ms (`make bench-scale`)."""
    ranking_threads: int = setting("RETRIEVER_RANKING_THREADS", 2, minimum=1, maximum=64)
    """Threads that rank one keyword search whose terms the posting cache holds, each over a range
    of chunk ids (`maxscore_kernel.py`); searches with fewer than 20,000 postings a thread use fewer.
    2, the cores of the smallest machine it runs on: at a million chunks, side by side with 1, keyword
    p50/p99 went from 8.4/27.8 to 7.0/22.2 ms and hybrid from 14.0/37.0 to 12.7/29.9 ms. Where a
    replica gets one core (`deploy/kubernetes`), 1."""
    bm25_k1: float = setting("RETRIEVER_BM25_K1", 1.5, minimum=0.0, maximum=10.0)
    """BM25's k1 when a search does not set `bm25_k1`: how fast repeated terms stop adding to a score."""
    bm25_b: float = setting("RETRIEVER_BM25_B", 0.75, minimum=0.0, maximum=1.0)
    """BM25's b when a search does not set `bm25_b`: 0 ignores chunk length, 1 normalises fully."""
    rrf_k: int = setting("RETRIEVER_RRF_K", 60, minimum=1, maximum=1000)
    """RRF's k when a search leaves `rrf_k` at 0: larger flattens the advantage of the top ranks."""
    tenant_max_documents: int = setting("RETRIEVER_TENANT_MAX_DOCUMENTS", 0, minimum=0)
    """Most documents one tenant may store across its collections; 0 means no limit. An upsert that
    would take a tenant past it is refused (RESOURCE_EXHAUSTED) and stores nothing."""
    tenant_max_chunks: int = setting("RETRIEVER_TENANT_MAX_CHUNKS", 0, minimum=0)
    """Most chunks one tenant may store across its collections; 0 means no limit. An upsert that
    would take a tenant past it is refused (RESOURCE_EXHAUSTED) and stores nothing."""
    conversation_ttl_seconds: float = setting(
        "RETRIEVER_CONVERSATION_TTL_SECONDS", 30 * 86400.0, minimum=1.0, maximum=10 * 365 * 86400.0
    )
    """How long a conversation is kept after its last turn (30 days); then no call returns it and it is
    deleted within RETRIEVER_CONVERSATION_PURGE_INTERVAL_SECONDS."""
    conversation_purge_interval_seconds: float = setting(
        "RETRIEVER_CONVERSATION_PURGE_INTERVAL_SECONDS", 60.0, minimum=1.0, maximum=86400.0
    )
    """How often the retriever deletes expired conversations and their turns."""
    redis_url: str = setting("REDIS_URL", "")
    """The gateways' Redis: GetStoredCollection's basic view publishes the collection's state there, and
    every change withdraws it, so that gateways need not look a collection up on every query
    (`ragline.collection_state`). Unset: nothing is published and gateways always ask. Every
    replica must use the gateways' Redis, or none may."""
    state_lease_seconds: float = setting("RETRIEVER_STATE_LEASE_SECONDS", 0.5, minimum=0.05, maximum=60.0)
    """How long a collection state published in Redis lives. Gateways look a collection up once a
    lease at most (per collection), a negligible load at 0.5 s; when Redis cannot be told of a
    change, the call that made it waits this long before it answers, until every state published
    before it has expired, so a longer lease slows writes (ingestion) during a Redis outage."""
    redis_timeout_seconds: float = setting("RETRIEVER_REDIS_TIMEOUT_SECONDS", 0.25, minimum=0.001)
    """Socket timeout of each Redis round trip; a slow or down Redis costs a call this much at most
    (and a change the lease as well), never a failure."""

    @property
    def read_urls(self) -> tuple[str, ...]:
        """The replicas' URLs of `RETRIEVER_READ_DATABASE_URLS`, in order."""
        return tuple(url.strip() for url in self.read_database_urls.split(",") if url.strip())

    def __post_init__(self) -> None:
        for url in self.read_urls:
            if not url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(
                    f"invalid configuration:\n  RETRIEVER_READ_DATABASE_URLS: {url.split('@')[-1]!r} is not a "
                    "postgresql:// URL (give a comma-separated list of the replicas' URLs)"
                )
        if self.pool_min > self.pool_max:
            raise ConfigError(
                f"invalid configuration:\n  RETRIEVER_POOL_MIN={self.pool_min} is larger than "
                f"RETRIEVER_POOL_MAX={self.pool_max}"
            )
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            # pgvector refuses to build such an index, so CreateStoredCollection would fail at run time.
            raise ConfigError(
                f"invalid configuration:\n  RETRIEVER_HNSW_EF_CONSTRUCTION={self.hnsw_ef_construction} "
                f"must be at least twice RETRIEVER_HNSW_M={self.hnsw_m}"
            )
        if not _MEMORY.match(self.maintenance_work_mem):
            raise ConfigError(
                f"invalid configuration:\n  RETRIEVER_MAINTENANCE_WORK_MEM={self.maintenance_work_mem!r} is not "
                "an amount of memory like 512MB or 2GB"
            )
