"""Two tenants on one Ragline: each credential reaches its own tenant's data only, through every RPC.

A stack of its own with authentication on: callers present JWTs signed by a test identity
provider (a key made here with `cryptography`, its JWKS in a file), each naming a tenant and a
role. Tenant B's collections, documents, jobs and page tokens must be NOT_FOUND to tenant A's
credential, whatever the RPC, and stay as they were; both may have a collection named `default`;
and a paraphrase by one tenant is never answered from the other's semantic cache.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ragline.channels import open_channel
from ragline.client import RaglineClient
from ragline.devstack import Stack
from ragline.v1 import admin_service_pb2 as admin
from ragline.v1 import admin_service_pb2_grpc, common_pb2, gateway_service_pb2_grpc
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration

ISSUER = "https://idp.confinement.test/"
AUDIENCE = "ragline-confinement"
A, B = "acme", "globex"
PRIVATE = "b-private"  # a collection only tenant B has


class IdentityProvider:
    """Signs tokens with a key made for the test; its public half is the JWKS file the gateway reads."""

    def __init__(self, folder: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update(kid="confinement-1", use="sig", alg="RS256")
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}))

    def token(self, tenant: str, role: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"{tenant}-{role}",
            "iat": now,
            "exp": now + 3600,
            "tenant": tenant,
            "role": role,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "confinement-1"})


@dataclass
class Caller:
    """One tenant's admin credential, the stubs that send it, and the Python client with it."""

    tenant: str
    client: RaglineClient
    gateway: gateway_service_pb2_grpc.GatewayServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    metadata: tuple[tuple[str, str], ...]

    async def call(self, stub: Any, method: str, request: Any) -> Any:
        """The reply of a unary call, or every message of AskStream's reply."""
        rpc = getattr(stub, method)(request, metadata=self.metadata, timeout=120)
        if method == "AskStream":
            return [event async for event in rpc]
        return await rpc

    async def refused(self, stub: Any, method: str, request: Any) -> grpc.aio.AioRpcError:
        """The error of a call that must fail."""
        try:
            reply = await self.call(stub, method, request)
        except grpc.aio.AioRpcError as error:
            return error
        raise AssertionError(f"{method}({request}) was answered: {reply}")

    async def ask(self, question: str) -> tuple[gw.AskResponse, list[str]]:
        """AskStream in the tenant's `default`: the final answer, and the texts of the passages it came from."""
        request = gw.AskStreamRequest(
            query=gw.Query(text=question, collection="default"),
            options=common_pb2.GenerationOptions(max_tokens=16),
        )
        events = await self.call(self.gateway, "AskStream", request)
        passages = [h.text for e in events if e.HasField("passages") for h in e.passages.hits]
        return events[-1].final, passages


def _document(document_id: str, text: str) -> common_pb2.DocumentContent:
    return common_pb2.DocumentContent(document_id=document_id, content=text.encode(), media_type="text/plain")


# Both tenants store a document of the same id in a collection of the same name.
A_TEA = "Green tea is made from leaves that are steamed soon after picking."
B_TEA = "Black tea is made from leaves that are fully oxidised before they are dried."


@pytest.fixture(scope="module")
def tenant_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, IdentityProvider]]:
    idp = IdentityProvider(tmp_path_factory.mktemp("idp"))
    env = {
        # Empty REDIS_URL and DATABASE_URL select the embedded servers, whatever the machine's environment says.
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "LOG_LEVEL": "INFO",
        "GATEWAY_AUTH": "on",
        "GATEWAY_JWT_JWKS_FILE": str(idp.jwks_file),
        "GATEWAY_JWT_ISSUER": ISSUER,
        "GATEWAY_JWT_AUDIENCE": AUDIENCE,
        "GATEWAY_INGEST_POLL_SECONDS": "0.2",
        # Answers come from the generator (its stage, its spans), not the extractive mode "auto" may pick.
        "GATEWAY_ANSWER_MODE": "generative",
    }
    stack = Stack(state=tmp_path_factory.mktemp("tenant-state"), free_ports=True, env=env)
    stack.start()
    yield stack, idp
    stack.stop()


@pytest.fixture(scope="module")
async def callers(tenant_stack: tuple[Stack, IdentityProvider]) -> AsyncIterator[dict[str, Caller]]:
    stack, idp = tenant_stack
    address = stack["gateway"].address
    channel = open_channel(address, "ragline.v1.GatewayService", "ragline.v1.AdminService")
    gateway = gateway_service_pb2_grpc.GatewayServiceStub(channel)
    admin_stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    tokens = {tenant: idp.token(tenant, "admin") for tenant in (A, B)}
    clients = {tenant: RaglineClient(address, api_key=token) for tenant, token in tokens.items()}
    yield {
        tenant: Caller(tenant, clients[tenant], gateway, admin_stub, (("authorization", f"Bearer {token}"),))
        for tenant, token in tokens.items()
    }
    for client in clients.values():
        await client.close()
    await channel.close()


@dataclass
class World:
    """What tenant B holds, as B itself saw it before tenant A tried anything."""

    job_id: str
    """B's finished ingest job."""
    documents_page_token: str
    """The token of the second page of B's `default` documents."""
    jobs_page_token: str
    """The token of the second page of B's jobs."""
    state: tuple[dict[str, common_pb2.Collection], dict[str, list[str]]]
    """B's collections, and the ids of their documents, by collection name."""


async def _b_state(b: Caller) -> tuple[dict[str, common_pb2.Collection], dict[str, list[str]]]:
    collections, documents = {}, {}
    for name in ("default", PRIVATE):
        reply = await b.call(b.admin, "GetCollection", admin.GetCollectionRequest(name=name))
        collections[name] = reply.collection
        listed = await b.call(b.gateway, "ListDocuments", gw.ListDocumentsRequest(collection=name))
        documents[name] = sorted(d.document_id for d in listed.documents)
    return collections, documents


async def _finished(caller: Caller, job_id: str) -> common_pb2.IngestJob:
    for _ in range(600):
        reply = await caller.call(caller.gateway, "GetIngestJob", gw.GetIngestJobRequest(job_id=job_id))
        if reply.job.state not in (common_pb2.INGEST_JOB_STATE_PENDING, common_pb2.INGEST_JOB_STATE_RUNNING):
            job: common_pb2.IngestJob = reply.job
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish within a minute")


@pytest.fixture(scope="module")
async def world(callers: dict[str, Caller]) -> World:
    a, b = callers[A], callers[B]
    # Both tenants create a collection named "default"; B also one A has no collection of that name.
    for caller, name in ((a, "default"), (b, "default"), (b, PRIVATE)):
        created = await caller.client.create_collection(name)
        assert (created.name, created.document_count) == (name, 0)
    for caller, documents in (
        (a, [_document("shared.txt", A_TEA), _document("tower.txt", "The Eiffel Tower is in Paris.")]),
        (
            b,
            [
                _document("shared.txt", B_TEA),
                _document("b-only.txt", "Globex keeps its figures in a blue ledger."),
            ],
        ),
    ):
        request = gw.IngestDocumentsRequest(collection="default", documents=documents)
        await caller.call(caller.gateway, "IngestDocuments", request)
    # B's jobs go through the workers, which must store their documents as B's (the claim's tenant).
    job_ids = []
    for document in (
        _document("secret.txt", "The launch code word is heliotrope."),
        _document("note.txt", "A note."),
    ):
        request = gw.CreateIngestJobRequest(collection=PRIVATE, documents=[document])
        job_ids.append((await b.call(b.gateway, "CreateIngestJob", request)).job.job_id)
    for job_id in job_ids:
        assert (await _finished(b, job_id)).state == common_pb2.INGEST_JOB_STATE_SUCCEEDED
    documents_page = await b.call(
        b.gateway, "ListDocuments", gw.ListDocumentsRequest(collection="default", page_size=1)
    )
    jobs_page = await b.call(b.gateway, "ListIngestJobs", gw.ListIngestJobsRequest(page_size=1))
    assert documents_page.next_page_token and jobs_page.next_page_token
    state = await _b_state(b)
    assert state[1] == {"default": ["b-only.txt", "shared.txt"], PRIVATE: ["note.txt", "secret.txt"]}
    return World(job_ids[0], documents_page.next_page_token, jobs_page.next_page_token, state)


def _not_found(error: grpc.aio.AioRpcError, call: str) -> None:
    assert error.code() == grpc.StatusCode.NOT_FOUND, f"{call}: {error.code()} {error.details()}"
    # Nothing of tenant B's but the names the caller sent appears in the message.
    assert B not in (error.details() or "") and "heliotrope" not in (error.details() or ""), call


async def test_another_tenants_collections_documents_and_jobs_are_not_found(
    callers: dict[str, Caller], world: World
) -> None:
    a, b = callers[A], callers[B]
    bypass = gw.CACHE_POLICY_BYPASS
    attempts: list[tuple[Any, str, Any]] = [
        (a.admin, "GetCollection", admin.GetCollectionRequest(name=PRIVATE)),
        (a.admin, "DeleteCollection", admin.DeleteCollectionRequest(name=PRIVATE)),
        (a.gateway, "Search", gw.SearchRequest(query=gw.Query(text="launch code", collection=PRIVATE))),
        (
            a.gateway,
            "Search",
            gw.SearchRequest(query=gw.Query(text="code", collection=PRIVATE, cache_policy=bypass)),
        ),
        (a.gateway, "Ask", gw.AskRequest(query=gw.Query(text="What is the code word?", collection=PRIVATE))),
        (
            a.gateway,
            "AskStream",
            gw.AskStreamRequest(query=gw.Query(text="The code word?", collection=PRIVATE)),
        ),
        (a.gateway, "GetDocument", gw.GetDocumentRequest(collection=PRIVATE, document_id="secret.txt")),
        (a.gateway, "GetDocument", gw.GetDocumentRequest(collection="default", document_id="b-only.txt")),
        (a.gateway, "ListDocuments", gw.ListDocumentsRequest(collection=PRIVATE)),
        (a.gateway, "DeleteDocument", gw.DeleteDocumentRequest(collection=PRIVATE, document_id="secret.txt")),
        (
            a.gateway,
            "DeleteDocument",
            gw.DeleteDocumentRequest(collection="default", document_id="b-only.txt"),
        ),
        (a.gateway, "GetIngestJob", gw.GetIngestJobRequest(job_id=world.job_id)),
        (a.gateway, "CancelIngestJob", gw.CancelIngestJobRequest(job_id=world.job_id)),
    ]
    for stub, method, request in attempts:
        _not_found(await a.refused(stub, method, request), f"{method}({request})")
    # Listing jobs by B's collection name finds none, as for a name nobody uses.
    for name in (PRIVATE, "never-used"):
        listed = await a.call(a.gateway, "ListIngestJobs", gw.ListIngestJobsRequest(collection=name))
        assert list(listed.jobs) == [] and not listed.next_page_token
    # Ingesting into a collection of B's name makes A's own, which A may delete; B's stays as it was.
    request = gw.IngestDocumentsRequest(collection=PRIVATE, documents=[_document("mine.txt", "Acme's note.")])
    await a.call(a.gateway, "IngestDocuments", request)
    await a.call(a.admin, "DeleteCollection", admin.DeleteCollectionRequest(name=PRIVATE))
    # B's data is exactly as it was: the same collections (generations, counts), documents and job.
    assert await _b_state(b) == world.state
    job = await b.call(b.gateway, "GetIngestJob", gw.GetIngestJobRequest(job_id=world.job_id))
    assert job.job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED


async def test_each_tenant_lists_and_reads_its_own_collections_only(
    callers: dict[str, Caller], world: World
) -> None:
    a, b = callers[A], callers[B]
    # By name: b-private before default.
    for caller, names in ((a, ["default"]), (b, [PRIVATE, "default"])):
        listed = await caller.client.list_collections()
        assert [c.name for c in listed.collections] == names
    # One collection a page: B's token leads to B's second collection, and only for B.
    first = await b.call(b.admin, "ListCollections", admin.ListCollectionsRequest(page_size=1))
    assert [c.name for c in first.collections] == [PRIVATE]
    second = await b.call(
        b.admin, "ListCollections", admin.ListCollectionsRequest(page_token=first.next_page_token)
    )
    assert [c.name for c in second.collections] == ["default"] and not second.next_page_token
    jobs = await a.call(a.gateway, "ListIngestJobs", gw.ListIngestJobsRequest(page_size=1000))
    assert world.job_id not in [j.job_id for j in jobs.jobs]
    # Both have a shared.txt in a collection named default: each reads and finds its own.
    for caller, mine, theirs in ((a, A_TEA, B_TEA), (b, B_TEA, A_TEA)):
        got = await caller.call(
            caller.gateway,
            "GetDocument",
            gw.GetDocumentRequest(collection="default", document_id="shared.txt"),
        )
        assert got.document.chunk_count == 1
        query = gw.Query(text="How is tea made from leaves?", collection="default", top_k=5)
        hits = (await caller.call(caller.gateway, "Search", gw.SearchRequest(query=query))).hits
        texts = [h.text for h in hits]
        assert mine in texts and theirs not in texts


async def test_a_paraphrase_by_one_tenant_never_hits_the_others_semantic_cache(
    callers: dict[str, Caller], world: World
) -> None:
    # Through the real services, end to end. Two real collections also differ in creation time,
    # which the keys hold too; that the tenant alone keeps apart two collections alike in
    # everything else is the unit test's (tests/gateway/test_search_latency_pipeline.py).
    a, b = callers[A], callers[B]
    first, passages = await a.ask("How is green tea made?")
    assert first.cache_layer != gw.CACHE_LAYER_SEMANTIC and A_TEA in passages
    # The layer works: A's own paraphrase is served from it.
    paraphrase, _ = await a.ask("How is green tea produced?")
    assert paraphrase.cache_layer == gw.CACHE_LAYER_SEMANTIC
    assert paraphrase.answer == first.answer
    # B's paraphrase, and then A's exact question, are answered from B's documents.
    answer, passages = await b.ask("How is green tea produced?")
    assert answer.cache_layer not in (gw.CACHE_LAYER_SEMANTIC, gw.CACHE_LAYER_ANSWER)
    assert "generate" in [t.stage for t in answer.stage_timings]
    assert B_TEA in passages and A_TEA not in passages
    again, passages = await b.ask("How is green tea made?")
    assert again.cache_layer != gw.CACHE_LAYER_ANSWER
    assert B_TEA in passages and A_TEA not in passages


async def test_another_tenants_page_tokens_are_not_found_like_a_token_naming_no_tenant(
    callers: dict[str, Caller], world: World
) -> None:
    a, b = callers[A], callers[B]
    collections_page = await b.call(b.admin, "ListCollections", admin.ListCollectionsRequest(page_size=1))
    listings: list[tuple[Any, str, Any]] = [
        (a.gateway, "ListDocuments", gw.ListDocumentsRequest(collection="default")),
        (a.gateway, "ListIngestJobs", gw.ListIngestJobsRequest()),
        (a.admin, "ListCollections", admin.ListCollectionsRequest()),
    ]
    tokens = [world.documents_page_token, world.jobs_page_token, collections_page.next_page_token]
    for (stub, method, request), token in zip(listings, tokens, strict=True):
        request.page_token = token
        theirs = await a.refused(stub, method, request)
        # NOT_FOUND, like B's collections and jobs themselves.
        assert theirs.code() == grpc.StatusCode.NOT_FOUND, method
        # Word for word what a token A writes itself for a tenant that does not exist gets: tokens are
        # not signed, the answer comes from the token alone, so it says nothing about B.
        scope, after = json.loads(base64.urlsafe_b64decode(token))
        listing = scope.partition("|")[0]
        invented = json.dumps([f"{listing}|no-such-tenant", after]).encode()
        request.page_token = base64.urlsafe_b64encode(invented).decode()
        nobody = await a.refused(stub, method, request)
        assert (theirs.code(), theirs.details()) == (nobody.code(), nobody.details()), method
        assert B not in (theirs.details() or ""), method
        request.page_token = "bm90IGEgdG9rZW4"  # base64 of "not a token"
        forged = await a.refused(stub, method, request)
        assert forged.code() == grpc.StatusCode.INVALID_ARGUMENT, method
