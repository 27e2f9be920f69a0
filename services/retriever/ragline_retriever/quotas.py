"""Per-tenant storage quotas: the most documents and chunks one tenant may store, checked inside the
transaction of every upsert that adds some, so a refused upsert stores nothing.

Two upserts of one tenant that race must not both slip under the quota, and neither sees the
other's uncommitted rows. So an upsert that grows the tenant takes a transaction-level advisory
lock per tenant, and only then counts what the tenant stores (its own writes included): the
counting statement's snapshot is taken after the lock is granted, so it sees every upsert that
held the lock before, which committed (or rolled back) before letting go of it. The lock is
taken last, after every row the upsert writes, so it is held only for the count and the commit;
a holder then waits for no lock an upsert waiting for it could hold (a claim's job rows are
locked after the check), so the two cannot deadlock. Upserts that add nothing, and tenants
without quotas, never take it.

The count is exact, read from `documents` (each row holds its chunk count), with no counter
row for every write to contend on; it reads at most as many documents as the quota allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.rpc import error_details_pb2, status_pb2

from ragline.errors import ResourceExhausted
from ragline_retriever.database import PooledConnection

# The class key of the per-tenant advisory locks (two-key form, apart from the migration lock's
# one-key space): "rglq" in ASCII. The second key is the tenant name's hash; two tenants that
# share a hash only wait for one another's checks.
QUOTA_LOCK_CLASS = 0x72676C71

_USAGE_SQL = """
    SELECT count(*) AS documents, coalesce(sum(d.chunk_count), 0)::bigint AS chunks
    FROM collections AS c JOIN documents AS d ON d.collection_id = c.id
    WHERE c.tenant = $1
"""


@dataclass(frozen=True)
class TenantQuota:
    """The storage every tenant may use; 0 means no limit."""

    max_documents: int
    """Documents across the tenant's collections (RETRIEVER_TENANT_MAX_DOCUMENTS)."""
    max_chunks: int
    """Chunks across the tenant's collections (RETRIEVER_TENANT_MAX_CHUNKS)."""


@dataclass(frozen=True)
class Growth:
    """How much a transaction adds to its tenant's storage (negative when it frees some)."""

    documents: int
    """Documents added."""
    chunks: int
    """Chunks added, less those removed."""


class QuotaExceeded(ResourceExhausted):
    """An upsert would take its tenant past a storage quota.

    RESOURCE_EXHAUSTED, the code of an exhausted per-user quota, with a `QuotaFailure` detail and
    no retry delay: waiting frees nothing; deleting documents or a larger quota does.
    """

    def __init__(self, message: str, quota: str) -> None:
        super().__init__(message, reason="TENANT_QUOTA_EXCEEDED")
        self.quota = quota

    def to_status(self) -> status_pb2.Status:
        status = super().to_status()
        violation = error_details_pb2.QuotaFailure.Violation(subject=self.quota, description=status.message)
        status.details.add().Pack(error_details_pb2.QuotaFailure(violations=[violation]))
        return status


async def check_quota(conn: PooledConnection, tenant: str, quota: TenantQuota, growth: Growth) -> None:
    """Raises QuotaExceeded if `growth`, written by the caller's transaction, takes `tenant` past
    `quota`; call it after the transaction's last write of documents and chunks."""
    limits = [
        ("documents", "RETRIEVER_TENANT_MAX_DOCUMENTS", quota.max_documents, growth.documents),
        ("chunks", "RETRIEVER_TENANT_MAX_CHUNKS", quota.max_chunks, growth.chunks),
    ]
    checked = [(what, setting, limit, added) for what, setting, limit, added in limits if limit and added > 0]
    if not checked:
        return
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", QUOTA_LOCK_CLASS, tenant)
    usage = await conn.fetchrow(_USAGE_SQL, tenant)
    assert usage is not None  # an aggregate always returns one row
    for what, setting, limit, added in checked:
        after = usage[what]
        if after > limit:
            raise QuotaExceeded(
                f"storage quota exceeded: the tenant may store {limit} {what} ({setting}) and stores "
                f"{after - added}; this upsert would add {added}, making {after}. Nothing was stored: "
                f"delete {what} the tenant no longer needs, or have the quota raised",
                quota=setting,
            )
