"""The benchmark's closed-loop phases: how the GET phase spreads its callers, and the GET phase
against a fake gateway (a local aiohttp server) that hides a payment from other merchants."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from bench import phases, runner
from bench.client import Gateway
from bench.journey import JourneyRecord, Journeys, JourneySettings, Merchant, Recorder
from bench.phases import spread_callers
from bench.report import GET_PHASE
from rich.console import Console


def test_callers_go_to_the_merchants_with_payments_round_robin() -> None:
    payments = {"MER_B": ["PAY_3"], "MER_A": ["PAY_1", "PAY_2"], "MER_C": []}
    assert spread_callers(payments, 5) == [
        ("MER_A", ["PAY_1", "PAY_2"]),
        ("MER_B", ["PAY_3"]),
        ("MER_A", ["PAY_2", "PAY_1"]),  # a merchant's second caller starts at its next payment
        ("MER_B", ["PAY_3"]),
        ("MER_A", ["PAY_1", "PAY_2"]),
    ]


def test_no_callers_without_payments() -> None:
    assert spread_callers({"MER_A": []}, 64) == []
    assert spread_callers({}, 64) == []


OWNERS = {"PAY_1": "a", "PAY_2": "a", "PAY_3": "b", "PAY_4": "c"}


@asynccontextmanager
async def gateway(seen: Counter[tuple[str, str]]) -> AsyncIterator[Gateway]:
    """A local server that answers a payment to its owner's token only, as the gateway does
    (404 to others), after a millisecond; a Gateway client to it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.001)
        payment_id = request.path.rsplit("/", 1)[-1]
        token = request.headers["Authorization"].removeprefix("Bearer ")
        seen[payment_id, token] += 1
        if OWNERS.get(payment_id) != token:
            return web.json_response({"code": 5, "message": "payment not found"}, status=404)
        return web.json_response({"payment_id": payment_id, "status": "SUCCESS"})

    app = web.Application()
    app.router.add_get("/api/v1/payments/{payment_id}", handle)
    server = web.AppRunner(app, shutdown_timeout=0.1)
    await server.setup()
    await web.TCPSite(server, "127.0.0.1", 0).start()
    port = server.addresses[0][1]
    try:
        async with Gateway(f"http://127.0.0.1:{port}", 8, 2.0) as client:
            yield client
    finally:
        await server.cleanup()


async def test_the_get_phase_reads_each_success_payment_with_its_merchants_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(phases, "WARMUP_S", 0.05)
    merchants = [Merchant(m, {"Authorization": f"Bearer {m}"}) for m in ("a", "b", "c")]
    # Iteration i acts as merchant i mod 3: a, b, c, a, b. Only SUCCESS payments are read.
    done = [
        JourneyRecord(0, False, 0.0, 1.0, None, 3, "SUCCESS", "PAY_1"),
        JourneyRecord(1, True, 0.0, 1.0, None, 3, "SUCCESS", "PAY_3"),
        JourneyRecord(2, True, 0.0, 1.0, "ended FAILED", 1, "FAILED", "PAY_4"),
        JourneyRecord(3, True, 0.0, 1.0, None, 3, "SUCCESS", "PAY_2"),
        JourneyRecord(4, True, 0.0, 1.0, "create failed", 0, None, None),
    ]
    config = runner.LoadConfig(get_duration=0.2, get_concurrency=5)
    seen: Counter[tuple[str, str]] = Counter()
    async with gateway(seen) as client:
        journeys = Journeys(client, merchants, Recorder(), JourneySettings(), run_id="r1")
        facts = await runner._get_phase(config, journeys, done, Console(quiet=True))
    assert facts is not None
    assert facts.payments == 3
    # Five callers over the two merchants with SUCCESS payments: a, b, a, b, a.
    assert facts.callers_per_merchant == {"a": 3, "b": 2}
    assert facts.per_merchant_ceiling_per_s == pytest.approx(100 * 5 / 3)
    assert set(seen) == {("PAY_1", "a"), ("PAY_2", "a"), ("PAY_3", "b")}
    requests = facts.phase.requests
    assert {r.op for r in requests} == {GET_PHASE}
    assert all(r.error is None for r in requests)
    begin, end = facts.phase.window
    assert end - begin == pytest.approx(0.2)
    assert any(not r.measured for r in requests)  # the warm-up's
    assert all(r.measured == (r.due >= begin) for r in requests)
    assert all(r.due < end for r in requests)


async def test_no_get_phase_when_no_journey_succeeded() -> None:
    merchants = [Merchant("a", {"Authorization": "Bearer a"})]
    done = [JourneyRecord(0, True, 0.0, 1.0, "ended FAILED", 1, "FAILED", "PAY_1")]
    seen: Counter[tuple[str, str]] = Counter()
    async with gateway(seen) as client:
        journeys = Journeys(client, merchants, Recorder(), JourneySettings(), run_id="r1")
        facts = await runner._get_phase(runner.LoadConfig(), journeys, done, Console(quiet=True))
    assert facts is None
    assert not seen
