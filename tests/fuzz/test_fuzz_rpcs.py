"""Fuzzes every RPC of every service with random, mutated and undecodable requests against the live stack.

Each request must end in OK or a client-error status with a short message, without a traceback in any
service log, a crashed service, or (for a rejected write) a change to the scratch collection; at the end the
seeded collection must be exactly as it was seeded, since only reads were pointed at it.
"""

from __future__ import annotations

import pytest
from fuzz_harness import SEEDED, Fuzzer, Request, describe
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given, note
from rpc_catalog import all_methods, method_path
from snapshot import snapshot

pytestmark = pytest.mark.integration

METHODS = all_methods()


@pytest.mark.parametrize("method", METHODS, ids=method_path)
def test_rpc_handles_any_input_cleanly(fuzzer: Fuzzer, method: MethodDescriptor) -> None:
    @given(fuzzer.requests(method))
    def check(request: Request) -> None:
        note(describe(method, request))
        issues = fuzzer.run(method, request)
        assert not issues, f"{method_path(method)} mishandled {describe(method, request)}:\n" + "\n".join(
            issues
        )

    check()


def test_seeded_collection_unchanged(fuzzer: Fuzzer) -> None:
    """Runs after the RPC tests: reads only were pointed at the seeded collection, so nothing in it moved."""
    after = snapshot(fuzzer.channels["retriever"], fuzzer.channels["embedder"], SEEDED, full=True)
    assert after == fuzzer.seeded_before
