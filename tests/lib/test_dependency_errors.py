"""from_rpc_error: a dependency's own error reaches the caller, the gRPC library's transport text does not."""

from __future__ import annotations

import logging
import socket

import grpc
import pytest
from grpc_status import rpc_status

from ragline.errors import InvalidArgument, from_rpc_error


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _call(target: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.unary_unary("/toy.Toy/Call")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await method(b"", timeout=5)
    return raised.value


async def test_a_services_own_error_is_passed_on_naming_the_dependency() -> None:
    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        status = InvalidArgument("collection name 'x y' has a space; use letters, digits and '-'").to_status()
        await context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("abort returns only by raising")

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "toy.Toy", {"Call": grpc.unary_unary_rpc_method_handler(refuse)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        error = from_rpc_error("retriever", await _call(f"127.0.0.1:{port}"))
    finally:
        await server.stop(None)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "retriever: collection name 'x y' has a space; use letters, digits and '-'"
    assert error.reason == "RETRIEVER_INVALID_ARGUMENT"


async def test_a_connection_failure_answers_an_error_id_and_logs_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _closed_port()
    rpc_error = await _call(f"127.0.0.1:{port}")
    assert rpc_error.code() == grpc.StatusCode.UNAVAILABLE
    assert str(port) in (rpc_error.details() or "")  # what would have leaked

    with caplog.at_level(logging.ERROR, logger="ragline.errors"):
        error = from_rpc_error("embedder", rpc_error)

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "EMBEDDER_UNAVAILABLE"
    assert str(port) not in error.message and "127.0.0.1" not in error.message
    assert error.message.startswith("the embedder could not be reached or did not answer (error id ")
    error_id = error.message.split("error id ")[1].split(")")[0]
    logged = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert logged and str(port) in logged[0]
