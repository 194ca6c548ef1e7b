"""Mesh channels raise the server's typed error: one client interceptor translates every call."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1.health_pb2 import HealthCheckRequest as Request
from grpc_health.v1.health_pb2 import HealthCheckResponse as Response

from gateway_core.config import Settings
from gateway_core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Unavailable,
    invalid_field,
)
from gateway_core.grpc_client import insecure_channel
from gateway_core.server import ServiceApp

SERVICE = "paygate.test.v1.Remote"


class RemoteServicer:
    async def Check(self, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.service == "missing":
            raise NotFound(
                "payment PAY_9 not found", reason="PAYMENT_NOT_FOUND", metadata={"id": "PAY_9"}
            )
        if request.service == "bad-amount":
            raise invalid_field("amount_paisa", "must be greater than 0")
        if request.service == "slow":
            await asyncio.sleep(2)
        return Response(status=Response.SERVING)

    async def Watch(self, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        yield Response(status=Response.SERVING)
        raise NotFound("stream ended", reason="STREAM_GONE")


def add_remote_to_server(servicer: RemoteServicer, server: grpc.aio.Server) -> None:
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check, Request.FromString, Response.SerializeToString
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch, Request.FromString, Response.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest_asyncio.fixture(scope="module")
async def address() -> AsyncIterator[str]:
    settings = Settings.model_validate(
        {"server_host": "127.0.0.1", "server_port": 0, "jaeger_endpoint": "", "log_level": "INFO"}
    )
    app = ServiceApp("remote", settings)
    app.add_service(SERVICE, add_remote_to_server, RemoteServicer())
    run = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    yield f"127.0.0.1:{port}"
    app.stop()
    await asyncio.wait_for(run, 10)


async def check(address: str, scenario: str, *, typed: bool = True, deadline: float = 5) -> None:
    channel = insecure_channel(address, typed_errors=typed)
    try:
        call = channel.unary_unary(
            f"/{SERVICE}/Check", Request.SerializeToString, Response.FromString
        )
        await call(Request(service=scenario), timeout=deadline)
    finally:
        await channel.close(None)


async def test_a_refusal_arrives_as_the_servers_typed_error(address: str) -> None:
    with pytest.raises(NotFound) as raised:
        await check(address, "missing")

    error = raised.value
    assert (error.reason, error.message, error.metadata) == (
        "PAYMENT_NOT_FOUND",
        "payment PAY_9 not found",
        {"id": "PAY_9"},
    )
    assert error.grpc_code == grpc.StatusCode.NOT_FOUND
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)


async def test_field_violations_survive_the_translation(address: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await check(address, "bad-amount")

    assert raised.value.reason == "INVALID_FIELD"
    assert [(v.field, v.description) for v in raised.value.field_violations] == [
        ("amount_paisa", "must be greater than 0")
    ]


async def test_a_missed_deadline_is_deadline_exceeded(address: str) -> None:
    with pytest.raises(DeadlineExceeded):
        await check(address, "slow", deadline=0.2)


async def test_an_unreachable_service_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(Unavailable):
        await check(f"127.0.0.1:{port}", "ok", deadline=2)


async def test_an_error_that_ends_a_stream_is_typed_after_the_messages(address: str) -> None:
    channel = insecure_channel(address)
    received: list[int] = []
    try:
        watch = channel.unary_stream(
            f"/{SERVICE}/Watch", Request.SerializeToString, Response.FromString
        )

        async def read_all() -> None:
            async for response in watch(Request(), timeout=5):
                received.append(response.status)

        with pytest.raises(NotFound) as raised:
            await read_all()
    finally:
        await channel.close(None)

    assert received == [Response.SERVING]
    assert raised.value.reason == "STREAM_GONE"


async def test_successful_calls_return_the_response(address: str) -> None:
    await check(address, "ok")


async def test_an_untyped_channel_keeps_grpcs_own_error(address: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await check(address, "missing", typed=False)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
