"""What a provider's failed call means for a payment (providers.base.call_provider), over a
real gRPC server and the orchestrator's own channel, whose interceptor raises typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway_core.auth import RpcContext
from gateway_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    invalid_field,
    to_rpc_status,
)
from gateway_core.grpc_client import insecure_channel
from orchestrator.providers.base import ProviderNotFound, ProviderTimeout, call_provider
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc

REFUSALS = {
    "bad-vpa": invalid_field("vpa", "is not a VPA"),
    "wrong-state": FailedPrecondition("already captured", reason="ALREADY_CAPTURED"),
    "no-such-txn": NotFound("no such transaction"),
    "not-allowed": PermissionDenied("not your merchant"),
}


class Provider(fraud_pb2_grpc.FraudServiceServicer):
    """Fails as the request's payment_id says."""

    async def CheckTransaction(
        self, request: fraud_pb2.CheckTransactionRequest, context: RpcContext
    ) -> fraud_pb2.CheckTransactionResponse:
        scenario = request.payment_id
        if scenario == "slow":
            await asyncio.sleep(1)
        elif scenario == "crash":
            await context.abort(grpc.StatusCode.INTERNAL, "boom")
        elif scenario == "down":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "maintenance")
        elif scenario in REFUSALS:
            status = to_rpc_status(REFUSALS[scenario])
            await context.abort(status.code, status.details, status.trailing_metadata)
        return fraud_pb2.CheckTransactionResponse(score=1)


@pytest.fixture
async def stub() -> AsyncIterator[fraud_pb2_grpc.FraudServiceAsyncStub]:
    server = grpc.aio.server()
    fraud_pb2_grpc.add_FraudServiceServicer_to_server(Provider(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = insecure_channel(f"127.0.0.1:{port}")
    try:
        yield fraud_pb2_grpc.FraudServiceStub(channel)
    finally:
        await channel.close(None)
        await server.stop(None)


async def call(stub: fraud_pb2_grpc.FraudServiceAsyncStub, scenario: str) -> object:
    request = fraud_pb2.CheckTransactionRequest(payment_id=scenario)
    return await call_provider("testpay", stub.CheckTransaction(request, timeout=0.2))


async def test_an_answer_is_returned(stub: fraud_pb2_grpc.FraudServiceAsyncStub) -> None:
    assert await call(stub, "fine") == fraud_pb2.CheckTransactionResponse(score=1)


@pytest.mark.parametrize("scenario", ["slow", "crash"])
async def test_silence_or_a_crash_leaves_the_outcome_unknown(
    stub: fraud_pb2_grpc.FraudServiceAsyncStub, scenario: str
) -> None:
    with pytest.raises(ProviderTimeout):
        await call(stub, scenario)


async def test_an_unknown_transaction_is_reported_as_such(
    stub: fraud_pb2_grpc.FraudServiceAsyncStub,
) -> None:
    with pytest.raises(ProviderNotFound):
        await call(stub, "no-such-txn")


async def test_a_refusal_of_the_request_keeps_its_meaning_and_fields(
    stub: fraud_pb2_grpc.FraudServiceAsyncStub,
) -> None:
    with pytest.raises(InvalidArgument) as bad:
        await call(stub, "bad-vpa")
    assert [(v.field, v.description) for v in bad.value.field_violations] == [
        ("vpa", "is not a VPA")
    ]
    with pytest.raises(FailedPrecondition) as wrong:
        await call(stub, "wrong-state")
    assert wrong.value.reason == "ALREADY_CAPTURED"


@pytest.mark.parametrize("scenario", ["down", "not-allowed"])
async def test_other_failures_mean_the_provider_is_unavailable(
    stub: fraud_pb2_grpc.FraudServiceAsyncStub, scenario: str
) -> None:
    with pytest.raises(Unavailable) as raised:
        await call(stub, scenario)
    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
