"""A method a servicer does not override answers UNIMPLEMENTED through the server's interceptor, not INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from ragline.server import _Interceptor
from ragline.v1 import admin_service_pb2, admin_service_pb2_grpc


async def test_a_method_left_to_the_generated_base_is_unimplemented_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = grpc.aio.server(interceptors=[_Interceptor()])
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        admin_service_pb2_grpc.AdminServiceServicer(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    labels = {
        "grpc_service": "ragline.v1.AdminService",
        "grpc_method": "GetCollection",
        "grpc_code": "UNIMPLEMENTED",
    }
    before = REGISTRY.get_sample_value("ragline_grpc_server_handled_total", labels) or 0.0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetCollection(admin_service_pb2.GetCollectionRequest(name="c"))
    finally:
        await server.stop(None)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not implemented" in (raised.value.details() or "")
    assert REGISTRY.get_sample_value("ragline_grpc_server_handled_total", labels) == before + 1
    assert "Traceback" not in caplog.text
