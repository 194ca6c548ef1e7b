"""The orchestrator's fraud check deadline: a slow scorer gets the configured policy, counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway_core.auth import RpcContext
from gateway_core.errors import Unavailable
from gateway_core.grpc_client import insecure_channel
from orchestrator.providers import fraud
from orchestrator.providers.fraud import FALLBACKS, RETRIED, SHED, FraudClient, FraudQuery
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc


class SlowScorer(fraud_pb2_grpc.FraudServiceServicer):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.first_delays: list[float] = []  # the delays of the next calls, then `delay`
        self.calls = 0

    async def CheckTransaction(
        self, request: fraud_pb2.CheckTransactionRequest, context: RpcContext
    ) -> fraud_pb2.CheckTransactionResponse:
        self.calls += 1
        await asyncio.sleep(self.first_delays.pop(0) if self.first_delays else self.delay)
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
    servicer.delay = 0.5
    before = fallbacks(policy)
    # A deadline the event loop hears of late is overload (shed, tested below): 200 ms leaves
    # a loaded test machine 100 ms of slack before that.
    verdict = await FraudClient(channel, timeout_ms=200, fail_policy=policy).check(QUERY)
    assert servicer.calls == 2  # asked twice: a hung scorer misses both
    assert verdict.decision == decision
    assert [s.name for s in verdict.signals] == ["fraud_check_unavailable"]
    assert fallbacks(policy) == before + 1


async def test_a_scorer_that_misses_once_alone_is_asked_again_and_its_answer_used(
    scorer: tuple[SlowScorer, grpc.aio.Channel],
) -> None:
    """A scorer starved of CPU for an instant (a busy machine) must not cost a payment its
    score: the second answer counts."""
    servicer, channel = scorer
    servicer.first_delays = [0.5]
    retried, fell_back = RETRIED._value.get(), fallbacks("open")

    verdict = await FraudClient(channel, timeout_ms=200, fail_policy="open").check(QUERY)

    assert (verdict.decision, verdict.score) == ("BLOCK", 85)
    assert servicer.calls == 2
    assert RETRIED._value.get() == retried + 1
    assert fallbacks("open") == fell_back


def shed(reason: str) -> float:
    value: float = SHED.labels(reason=reason)._value.get()
    return value


async def test_a_check_past_the_in_flight_bound_is_shed_at_once_not_skipped(
    scorer: tuple[SlowScorer, grpc.aio.Channel],
) -> None:
    servicer, channel = scorer
    servicer.delay = 0.3
    client = FraudClient(channel, timeout_ms=2000, fail_policy="open", max_in_flight=2)
    before, fell_back = shed("in_flight"), fallbacks("open")
    waiting = [asyncio.create_task(client.check(QUERY)) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert client.in_flight == 2

    with pytest.raises(Unavailable) as refused:
        await client.check(QUERY)

    assert refused.value.reason == "OVERLOADED"
    assert refused.value.retry_after_s == 1
    assert shed("in_flight") == before + 1
    # The ones admitted are scored, not skipped.
    assert [v.decision for v in await asyncio.gather(*waiting)] == ["BLOCK", "BLOCK"]
    assert fallbacks("open") == fell_back
    assert client.in_flight == 0


async def test_a_scorer_that_answers_nothing_gets_the_policy_however_many_checks_wait(
    scorer: tuple[SlowScorer, grpc.aio.Channel],
) -> None:
    """A hung scorer (a frozen process, a pod behind a dead node) is an outage, not overload:
    with traffic, every check still gets FRAUD_FAIL_POLICY. Shedding them all would turn the
    configured policy into an outage of its own."""
    servicer, channel = scorer
    servicer.delay = 0.3
    client = FraudClient(channel, timeout_ms=50, fail_policy="open")
    shed_before, fell_back = shed("deadline_while_scorer_answers"), fallbacks("open")

    verdicts = await asyncio.gather(*(client.check(QUERY) for _ in range(5)))

    assert [v.decision for v in verdicts] == ["UNAVAILABLE"] * 5
    assert fallbacks("open") == fell_back + 5
    assert shed("deadline_while_scorer_answers") == shed_before


async def test_one_stall_while_another_check_waits_is_asked_again_not_shed(
    scorer: tuple[SlowScorer, grpc.aio.Channel],
) -> None:
    """A single late answer (a pause of a few tens of milliseconds on a busy host) at a rate
    the stack sustains: the check is asked once more and scored, neither shed nor skipped."""
    servicer, channel = scorer
    servicer.first_delays = [0.0, 0.12]  # the second check's first call stalls
    client = FraudClient(channel, timeout_ms=50, fail_policy="open")
    busy_before, retried, fell_back = (
        shed("deadline_while_scorer_answers"),
        RETRIED._value.get(),
        (fallbacks("open")),
    )

    first, second = await asyncio.gather(client.check(QUERY), client.check(QUERY))

    assert [first.decision, second.decision] == ["BLOCK", "BLOCK"]
    assert servicer.calls == 3
    assert RETRIED._value.get() == retried + 1
    assert shed("deadline_while_scorer_answers") == busy_before
    assert fallbacks("open") == fell_back


def hog_the_event_loop(seconds: float) -> None:
    """Other work holding the event loop, as on a saturated gateway (blocking on purpose)."""
    time.sleep(seconds)


async def test_a_deadline_our_busy_event_loop_hears_of_late_is_shed_not_let_through(
    scorer: tuple[SlowScorer, grpc.aio.Channel],
) -> None:
    servicer, channel = scorer
    servicer.delay = 1.0
    client = FraudClient(channel, timeout_ms=100, fail_policy="open")
    before, fell_back = shed("deadline_while_late"), fallbacks("open")
    check = asyncio.create_task(client.check(QUERY))
    await asyncio.sleep(0.01)  # the call is on its way
    hog_the_event_loop(0.3)

    with pytest.raises(Unavailable) as refused:
        await check

    assert refused.value.reason == "OVERLOADED"
    assert shed("deadline_while_late") == before + 1
    assert fallbacks("open") == fell_back


async def test_a_scorer_that_just_answered_and_now_misses_is_congested_shed_not_skipped(
    scorer: tuple[SlowScorer, grpc.aio.Channel],
) -> None:
    """On a saturated machine the scorer is up but starved: checks miss their deadline one at
    a time, each alone in flight. A scorer that answered in time a moment ago is not down, so
    its misses shed the payment (503) rather than let it through unscored; once it has answered
    nothing for ANSWERED_RECENTLY_S, it is down, and the policy applies."""
    servicer, channel = scorer
    client = FraudClient(channel, timeout_ms=200, fail_policy="open")
    assert (await client.check(QUERY)).decision == "BLOCK"  # answered in time
    servicer.delay = 0.5
    before, fell_back = shed("deadline_while_scorer_answers"), fallbacks("open")

    with pytest.raises(Unavailable) as refused:
        await client.check(QUERY)

    assert refused.value.reason == "OVERLOADED"
    assert shed("deadline_while_scorer_answers") == before + 1
    assert fallbacks("open") == fell_back
    # Silent since its last answer for longer than the window (two misses took 0.4 s).
    await asyncio.sleep(fraud.ANSWERED_RECENTLY_S)
    verdict = await client.check(QUERY)
    assert verdict.decision == "UNAVAILABLE"
    assert fallbacks("open") == fell_back + 1


async def test_an_unknown_policy_is_refused() -> None:
    # Async: a grpc.aio channel needs a running loop, whatever earlier tests left behind.
    with pytest.raises(ValueError, match="FRAUD_FAIL_POLICY"):
        FraudClient(grpc.aio.insecure_channel("127.0.0.1:1"), timeout_ms=10, fail_policy="maybe")
