"""The orchestrator's fraud check deadline: a slow scorer gets the configured policy, counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway_core.auth import RpcContext
from gateway_core.grpc_client import insecure_channel
from orchestrator.providers.fraud import FALLBACKS, FraudClient, FraudQuery
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc


class SlowScorer(fraud_pb2_grpc.FraudServiceServicer):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def CheckTransaction(
        self, request: fraud_pb2.CheckTransactionRequest, context: RpcContext
    ) -> fraud_pb2.CheckTransactionResponse:
        await asyncio.sleep(self.delay)
        return fraud_pb2.CheckTransactionResponse(
            score=85, decision=fraud_pb2.CheckTransactionResponse.BLOCK
        )


@pytest.fixture
async def scorer() -> AsyncIterator[tuple[SlowScorer, grpc.aio.Channel]]:
    servicer = SlowScorer(delay=0.0)
    server = grpc.aio.server()
    fraud_pb2_grpc.add_FraudServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # The channel the orchestrator uses: failed calls raise gateway_core's typed errors.
    channel = insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        await channel.close(None)
        await server.stop(None)


QUERY = FraudQuery(
    payment_id="PAY_1",
    merchant_id="MER_1",
    user_id="u",
    amount_paisa=100,
    currency="INR",
    payment_method="UPI",
)


def fallbacks(policy: str) -> float:
    value: float = FALLBACKS.labels(policy=policy, reason="deadline_exceeded")._value.get()
    return value


async def test_an_answer_in_time_is_used(scorer: tuple[SlowScorer, grpc.aio.Channel]) -> None:
    _, channel = scorer
    verdict = await FraudClient(channel, timeout_ms=2000, fail_policy="open").check(QUERY)
    assert (verdict.decision, verdict.score) == ("BLOCK", 85)


@pytest.mark.parametrize(("policy", "decision"), [("open", "UNAVAILABLE"), ("closed", "BLOCK")])
async def test_a_slow_scorer_gets_the_policy_and_is_counted(
    scorer: tuple[SlowScorer, grpc.aio.Channel], policy: str, decision: str
) -> None:
    servicer, channel = scorer
    servicer.delay = 0.3
    before = fallbacks(policy)
    verdict = await FraudClient(channel, timeout_ms=30, fail_policy=policy).check(QUERY)
    assert verdict.decision == decision
    assert [s.name for s in verdict.signals] == ["fraud_check_unavailable"]
    assert fallbacks(policy) == before + 1


async def test_an_unknown_policy_is_refused() -> None:
    # Async: a grpc.aio channel needs a running loop, whatever earlier tests left behind.
    with pytest.raises(ValueError, match="FRAUD_FAIL_POLICY"):
        FraudClient(grpc.aio.insecure_channel("127.0.0.1:1"), timeout_ms=10, fail_policy="maybe")
