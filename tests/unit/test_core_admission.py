"""Admission control (gateway_core.admission): new work is refused with 503 and Retry-After once
the process is saturated, on a real event loop and through a real gRPC server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_core.admission import REFUSED, Admission, LoopLag
from gateway_core.auth import RpcContext
from gateway_core.config import Settings
from gateway_core.errors import RETRY_AFTER_KEY, Unavailable
from gateway_core.server import ServiceApp
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc


def refused(reason: str) -> float:
    value: float = REFUSED.labels(work="checks", reason=reason)._value.get()
    return value


def hog_the_event_loop(seconds: float) -> None:
    """Other work holding the event loop, as on a saturated process (blocking on purpose)."""
    time.sleep(seconds)


async def test_the_lag_follows_a_blocked_loop_and_decays_when_it_is_free() -> None:
    lag = LoopLag(interval_s=0.01)
    sampler = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.1)
        assert lag.seconds < 0.02  # an idle loop keeps its schedule
        for _ in range(6):
            hog_the_event_loop(0.2)
            await asyncio.sleep(0.002)  # the sampler wakes, late, and sleeps again
        assert lag.seconds > 0.1
        await asyncio.sleep(0.5)  # fifty samples on time
        assert lag.seconds < 0.01
    finally:
        sampler.cancel()


def test_one_pause_is_smoothed_a_lasting_backlog_is_not() -> None:
    lag = LoopLag()
    lag.observe(0.3)  # one 300 ms pause (a GC, one slow callback)
    assert lag.seconds < 0.1
    for _ in range(5):
        lag.observe(0.3)
    assert lag.seconds > 0.2


async def test_calls_past_the_in_flight_bound_are_refused_and_counted() -> None:
    admission = Admission("checks", LoopLag(), max_in_flight=2, max_lag_ms=100)
    release = asyncio.Event()

    async def admitted() -> str:
        with admission.admit():
            await release.wait()
            return "done"

    before = refused("in_flight")
    running = [asyncio.create_task(admitted()) for _ in range(2)]
    await asyncio.sleep(0)
    assert admission.in_flight == 2

    with pytest.raises(Unavailable) as refusal, admission.admit():
        pytest.fail("admitted past the bound")
    assert refusal.value.reason == "OVERLOADED"
    assert refusal.value.retry_after_s == 1
    assert "no new checks" in refusal.value.message
    assert refused("in_flight") == before + 1

    release.set()
    assert await asyncio.gather(*running) == ["done", "done"]
    assert admission.in_flight == 0
    with admission.admit():  # room again
        assert admission.in_flight == 1


async def test_the_door_check_takes_no_place_and_refuses_what_admit_would() -> None:
    admission = Admission("checks", LoopLag(), max_in_flight=1, max_lag_ms=100)
    admission.check()
    assert admission.in_flight == 0
    with admission.admit(), pytest.raises(Unavailable, match="at capacity"):
        admission.check()
    admission.check()


async def test_a_call_that_fails_gives_its_place_back() -> None:
    admission = Admission("checks", LoopLag(), max_in_flight=1, max_lag_ms=100)
    with pytest.raises(RuntimeError), admission.admit():
        raise RuntimeError("the handler failed")
    assert admission.in_flight == 0


async def test_a_cancelled_call_gives_its_place_back() -> None:
    """A client that hangs up (or a shutdown) cancels the handler mid-call: its place must not
    leak, or the door would close for good after enough cancellations."""
    admission = Admission("checks", LoopLag(), max_in_flight=1, max_lag_ms=100)

    async def admitted() -> None:
        with admission.admit():
            await asyncio.Event().wait()

    task = asyncio.create_task(admitted())
    await asyncio.sleep(0)
    assert admission.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.in_flight == 0
    with admission.admit():
        pass


async def test_calls_are_refused_while_the_loop_is_behind_and_admitted_once_it_catches_up() -> None:
    lag = LoopLag()
    admission = Admission("checks", lag, max_in_flight=10, max_lag_ms=100)
    before = refused("loop_lag")
    for _ in range(10):
        lag.observe(0.25)
    assert admission.saturated
    with pytest.raises(Unavailable, match="at capacity"), admission.admit():
        pytest.fail("admitted while saturated")
    assert refused("loop_lag") == before + 1
    for _ in range(30):
        lag.observe(0.0)
    assert not admission.saturated
    with admission.admit():
        pass


@pytest.mark.parametrize(("max_in_flight", "max_lag_ms"), [(0, 100), (1, 0)])
def test_bounds_below_one_are_refused(max_in_flight: int, max_lag_ms: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission("checks", LoopLag(), max_in_flight=max_in_flight, max_lag_ms=max_lag_ms)


class GuardedScorer(fraud_pb2_grpc.FraudServiceServicer):
    """A service whose one method is new work behind the admission of its process."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.handled = 0

    async def CheckTransaction(
        self, request: fraud_pb2.CheckTransactionRequest, context: RpcContext
    ) -> fraud_pb2.CheckTransactionResponse:
        with self.admission.admit():
            self.handled += 1
            return fraud_pb2.CheckTransactionResponse(score=1)


@pytest.fixture
async def served(
    in_process_server: dict[str, Any],
) -> AsyncIterator[tuple[ServiceApp, GuardedScorer, grpc.aio.Channel]]:
    settings = Settings.model_validate(in_process_server)
    app = ServiceApp("admission-test", settings)
    scorer = GuardedScorer(Admission("checks", app.loop_lag, max_in_flight=8, max_lag_ms=100))
    app.add_service(
        "paygate.fraud.v1.FraudService", fraud_pb2_grpc.add_FraudServiceServicer_to_server, scorer
    )
    serving = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield app, scorer, channel
    finally:
        await channel.close(None)
        app.stop()
        await asyncio.wait_for(serving, 10)


async def test_a_saturated_service_refuses_new_work_with_retry_after_and_stays_healthy(
    served: tuple[ServiceApp, GuardedScorer, grpc.aio.Channel],
) -> None:
    """Over gRPC, as Envoy sees it: UNAVAILABLE with a retry-after of one second (HTTP 503,
    Retry-After: 1), the handler's work not done, and the health check still SERVING, so the
    load balancer keeps the process for the calls it does admit."""
    app, scorer, channel = served
    stub = fraud_pb2_grpc.FraudServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    assert (await stub.CheckTransaction(fraud_pb2.CheckTransactionRequest())).score == 1

    # The process falls behind: its own event loop is held, sample after sample.
    for _ in range(8):
        hog_the_event_loop(0.3)
        await asyncio.sleep(0.002)  # the sampler wakes, late, and sleeps again
    assert app.loop_lag.seconds > 0.15  # room for a sample on time before the call lands

    with pytest.raises(grpc.aio.AioRpcError) as refusal:
        await stub.CheckTransaction(fraud_pb2.CheckTransactionRequest(), timeout=5)
    assert refusal.value.code() is grpc.StatusCode.UNAVAILABLE
    metadata: Any = refusal.value.trailing_metadata()
    trailers = dict(metadata)
    assert trailers[RETRY_AFTER_KEY] == "1"
    assert scorer.handled == 1
    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    # Caught up: admitted again.
    await asyncio.sleep(1.0)  # twenty samples on time
    assert app.loop_lag.seconds < 0.1
    assert (await stub.CheckTransaction(fraud_pb2.CheckTransactionRequest())).score == 1
    assert scorer.handled == 2
