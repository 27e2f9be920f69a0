"""What a hostile or careless client gets from the shared server bootstrap: a clear status, never INTERNAL
or UNKNOWN, one log line, and a count in the RPC metrics."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from toy_process import Toy, search_request

from ragline.errors import MAX_MESSAGE_BYTES
from ragline.v1 import gateway_service_pb2, gateway_service_pb2_grpc

pytestmark = pytest.mark.integration

SEARCH = "/ragline.v1.GatewayService/Search"


def _field(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return bytes([tag]) + _VarintBytes(len(payload)) + payload


def _nested_filter(depth: int) -> bytes:
    """A SearchRequest whose filter nests `all` groups `depth` deep, past the protobuf parser's limit."""
    inner = b""
    for _ in range(depth):
        inner = _field(0x12, _field(0x0A, inner))  # MetadataFilter.all -> FilterGroup.filters
    return _field(0x42, _field(0x12, b"question") + _field(0x32, inner))  # SearchRequest.query: text, filter


UNDECODABLE = {
    "invalid UTF-8": _field(0x42, _field(0x12, b"\xff\xfe")),  # SearchRequest.query.text
    "corrupt bytes": b"\xff\xff\xff\xff",
    "nested too deep": _nested_filter(150),
}


def _handled(metrics: str, method: str, code: str) -> float:
    prefix = (
        f'ragline_grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",'
        'grpc_service="ragline.v1.GatewayService"} '
    )
    return sum(float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix))


def _metrics_once_counted(toy: Toy, *calls: tuple[str, str]) -> str:
    """The toy's metrics once each (method, code) in `calls` is counted: the server counts a call after
    its status has gone out, so a client that saw the status may scrape a moment before that."""
    for _ in range(50):
        metrics = toy.metrics()
        if all(_handled(metrics, method, code) for method, code in calls):
            break
        time.sleep(0.1)
    return metrics


def test_undecodable_requests_are_invalid_argument_logged_once_and_counted(toy: Toy) -> None:
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    with grpc.insecure_channel(toy.address) as channel:
        search = channel.unary_unary(SEARCH, request_serializer=None, response_deserializer=None)
        for kind, data in UNDECODABLE.items():
            with pytest.raises(grpc.RpcError) as refused:
                search(data, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kind
            assert "could not be decoded" in (refused.value.details() or ""), kind
            assert "ragline.v1.SearchRequest" in (refused.value.details() or ""), kind

        ask_stream = channel.unary_stream(
            "/ragline.v1.GatewayService/AskStream", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(ask_stream(UNDECODABLE["corrupt bytes"], timeout=5))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        upload = channel.stream_unary(
            "/ragline.v1.GatewayService/UploadIngestDocuments",
            request_serializer=None,
            response_deserializer=None,
        )
        good = gateway_service_pb2.UploadIngestDocumentsRequest(collection="c").SerializeToString()
        assert (
            gateway_service_pb2.UploadIngestDocumentsResponse.FromString(
                upload(iter([good, good]), timeout=5)
            ).job.job_id
            == "2"
        )
        with pytest.raises(grpc.RpcError) as refused:
            upload(iter([good, _field(0x0A, b"\xff\xfe")]), timeout=5)  # .collection
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UploadIngestDocumentsRequest" in (refused.value.details() or "")

    metrics = _metrics_once_counted(
        toy,
        ("Search", "INVALID_ARGUMENT"),
        ("AskStream", "INVALID_ARGUMENT"),
        ("UploadIngestDocuments", "INVALID_ARGUMENT"),
        ("UploadIngestDocuments", "OK"),
    )
    assert _handled(metrics, "Search", "INVALID_ARGUMENT") == 3
    assert _handled(metrics, "AskStream", "INVALID_ARGUMENT") == 1
    assert _handled(metrics, "UploadIngestDocuments", "INVALID_ARGUMENT") == 1
    assert _handled(metrics, "UploadIngestDocuments", "OK") == 1
    log = toy.log.read_text()
    assert log.count("undecodable request to /ragline.v1.GatewayService/") == 5
    assert "Traceback" not in log


def test_a_call_whose_deadline_passed_is_counted_as_deadline_exceeded(toy: Toy) -> None:
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    with grpc.insecure_channel(toy.address) as channel:
        search = gateway_service_pb2_grpc.GatewayServiceStub(channel).Search
        late = search.future(search_request("3"), timeout=0.5)
        cancelled = search.future(search_request("3"), timeout=10)
        time.sleep(0.5)  # both calls reach the handler, which sleeps for 3 s
        cancelled.cancel()
        assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert cancelled.cancelled()
    # The server notices both ends shortly after the client does.
    metrics = _metrics_once_counted(toy, ("Search", "CANCELLED"), ("Search", "DEADLINE_EXCEEDED"))
    assert _handled(metrics, "Search", "DEADLINE_EXCEEDED") == 1
    assert _handled(metrics, "Search", "CANCELLED") == 1


@pytest.mark.parametrize("character", ["x", "é", "😀"])
def test_long_error_messages_are_shortened_so_the_status_arrives(toy: Toy, character: str) -> None:
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    query = "long:" + character * 10_000 + "END"
    with grpc.insecure_channel(toy.address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Search(search_request(query), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert len(details.encode()) <= MAX_MESSAGE_BYTES
    assert details.startswith("query 'long:" + character)
    assert details.endswith("END' is too long; send a shorter one")
    assert "characters left out" in details
    status = rpc_status.from_call(refused.value)
    assert status is not None and status.message == details
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "query"
    assert bad_request.field_violations[0].description == details
