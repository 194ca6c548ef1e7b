"""The benchmark's UPI journey against a fake gateway (an aiohttp server on an ephemeral port,
in the test's own event loop): no stack."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from bench.client import Gateway
from bench.journey import (
    CREATE,
    GET,
    Journeys,
    JourneySettings,
    Merchant,
    Recorder,
    SetupError,
    create_merchants,
)

from gateway_core.cards import contains_card_number

FAST = JourneySettings(poll_interval=0.02, success_timeout=0.2)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(
    handler: Handler, max_connections: int = 8, request_timeout: float = 2.0
) -> AsyncIterator[Gateway]:
    """`handler` answers every request on a local port; a Gateway client to it."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with Gateway(f"http://127.0.0.1:{port}", max_connections, request_timeout) as gw:
            yield gw
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Seen:
    headers: dict[str, str]
    body: dict[str, Any]


class FakeGateway:
    """Creates PENDING payments; a payment turns `final` after `polls_to_final` reads."""

    def __init__(
        self, polls_to_final: int | None = 2, final: str = "SUCCESS", fraud: str = "ALLOW"
    ) -> None:
        self.polls_to_final = polls_to_final
        self.final = final
        self.fraud = fraud
        self.reads: dict[str, int] = {}
        self.created: list[Seen] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/api/v1/payments":
            self.created.append(Seen(dict(request.headers), await request.json()))
            payment_id = f"PAY_{len(self.created)}"
            self.reads[payment_id] = 0
            created = {"payment_id": payment_id, "status": "PENDING"}
            return web.json_response(created | {"fraud": {"decision": self.fraud}})
        payment_id = request.path.rsplit("/", 1)[-1]
        self.reads[payment_id] += 1
        done = self.polls_to_final is not None and self.reads[payment_id] >= self.polls_to_final
        return web.json_response(
            {"payment_id": payment_id, "status": self.final if done else "PENDING"}
        )


MERCHANTS = [
    Merchant("MER_A", {"Authorization": "Bearer a"}),
    Merchant("MER_B", {"Authorization": "Bearer b"}),
]


async def journey(
    gateway: Gateway,
    settings: JourneySettings = FAST,
    due: float | None = None,
    index: int = 0,
    recorder: Recorder | None = None,
) -> Recorder:
    recorder = recorder or Recorder()
    journeys = Journeys(gateway, MERCHANTS, recorder, settings, run_id="r1")
    await journeys.run(index, time.monotonic() if due is None else due, measured=True)
    return recorder


async def run_one(handler: FakeGateway | Handler, settings: JourneySettings = FAST) -> Recorder:
    handle = handler.handle if isinstance(handler, FakeGateway) else handler
    async with serving(handle) as gateway:
        return await journey(gateway, settings)


async def test_a_journey_creates_then_polls_until_success() -> None:
    gateway = FakeGateway(polls_to_final=3)
    recorder = await run_one(gateway)
    [done] = recorder.journeys
    assert done.error is None
    assert done.polls == 3
    assert done.last_status == "SUCCESS"
    assert done.payment_id == "PAY_1"  # the GET phase reads it again
    assert [r.op for r in recorder.requests] == [CREATE, GET, GET, GET]
    assert all(r.error is None and r.measured for r in recorder.requests)
    # Polls are on the cadence: about 3 intervals from the creation to SUCCESS.
    assert done.end - done.due == pytest.approx(3 * FAST.poll_interval, abs=0.05)
    # Each request's answer is recorded when it came, after it was due, in order.
    ends = [r.end for r in recorder.requests]
    assert ends == sorted(ends)
    assert all(r.due <= r.end <= done.end for r in recorder.requests)
    [create] = gateway.created
    assert create.body["payment_method"] == "UPI"
    assert create.body["payment_details"] == {"vpa": "success@upi"}
    assert create.body["amount_paisa"] == 10000
    assert create.headers["Idempotency-Key"] == "bench-r1-0"
    assert create.headers["Authorization"] == "Bearer a"


async def test_user_ids_never_read_as_card_numbers() -> None:
    """A UUID's dashed digit groups now and then passed the gateway's card-number check on
    free text, and the creation came back HTTP 400."""
    fake = FakeGateway(polls_to_final=1)
    async with serving(fake.handle) as gateway:
        recorder = Recorder()
        await asyncio.gather(*(journey(gateway, index=i, recorder=recorder) for i in range(200)))
    user_ids = [seen.body["user_id"] for seen in fake.created]
    assert len(set(user_ids)) == 200
    assert all(re.fullmatch(r"USR_[0-9A-HJKMNP-TV-Z]{26}", u) for u in user_ids)
    assert not any(contains_card_number(u) for u in user_ids)


async def test_a_creation_let_through_unscored_is_counted() -> None:
    assert (await run_one(FakeGateway(polls_to_final=1))).unscored == 0
    assert (await run_one(FakeGateway(polls_to_final=1, fraud="UNAVAILABLE"))).unscored == 1


async def test_iterations_use_merchants_round_robin_with_unique_idempotency_keys() -> None:
    fake = FakeGateway(polls_to_final=1)
    recorder = Recorder()
    async with serving(fake.handle) as gateway:
        for index in range(4):
            await journey(gateway, index=index, recorder=recorder)
    assert [seen.headers["Authorization"] for seen in fake.created] == [
        "Bearer a",
        "Bearer b",
        "Bearer a",
        "Bearer b",
    ]
    keys = [seen.headers["Idempotency-Key"] for seen in fake.created]
    assert len(set(keys)) == 4
    assert recorder.succeeded == 4


async def test_a_payment_that_stays_pending_never_succeeds_after_the_timeout() -> None:
    recorder = await run_one(FakeGateway(polls_to_final=None))
    [done] = recorder.journeys
    assert done.error == "never succeeded (still PENDING after 0.2 s)"
    assert done.polls == 10  # every 0.02 s for 0.2 s
    assert sum(1 for r in recorder.requests if r.op == GET) == 10


async def test_a_failed_payment_ends_the_journey() -> None:
    recorder = await run_one(FakeGateway(polls_to_final=1, final="FAILED"))
    [done] = recorder.journeys
    assert done.error == "ended FAILED"
    assert done.polls == 1


async def test_a_refused_creation_is_an_http_error_with_its_answer() -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        return web.json_response({"code": 8, "message": "rate limited"}, status=429)

    recorder = await run_one(limited)
    [done] = recorder.journeys
    assert done.error == "create failed"
    [request] = recorder.requests
    assert (request.op, request.error) == (CREATE, "HTTP 429")
    assert "rate limited" in recorder.examples["create: HTTP 429"]


async def test_an_answer_that_is_not_a_json_object_is_a_bad_response() -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    recorder = await run_one(html)
    [request] = recorder.requests
    assert request.error == "bad response (not a JSON object)"
    assert recorder.examples["create: bad response (not a JSON object)"] == (
        "<html>maintenance</html>"
    )


async def test_a_slow_answer_is_a_timeout_recorded_when_the_timeout_struck() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.json_response({})

    async with serving(slow, request_timeout=0.1) as gateway:
        recorder = await journey(gateway)
    [request] = recorder.requests
    assert request.error == "timeout"
    assert request.end - request.due == pytest.approx(0.1, abs=0.05)
    assert recorder.journeys[0].error == "create failed"


async def test_waiting_too_long_for_a_connection_is_a_client_pool_timeout() -> None:
    """The generator's own connection limit, not the gateway, made the request time out."""

    async def slow_then_fine(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(0.5)
        return web.json_response({})

    async with serving(slow_then_fine, max_connections=1, request_timeout=1.0) as gateway:
        holder = Journeys(gateway, MERCHANTS, Recorder(), FAST, run_id="r1")
        holding = asyncio.create_task(holder.call(GET, True, time.monotonic(), "GET", "/slow"))
        await asyncio.sleep(0.05)  # it has the only connection, for 0.5 s
        gateway.request_timeout = 0.1
        recorder = await journey(gateway)
        await holding
    [request] = recorder.requests
    assert request.error == "client pool timeout"
    assert request.end - request.due == pytest.approx(0.1, abs=0.05)
    assert [r.error for r in holder.recorder.requests] == [None]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_refused_connection_is_a_connection_error() -> None:
    recorder = Recorder()
    async with Gateway(f"http://127.0.0.1:{closed_port()}", 8, 2.0) as gateway:
        await journey(gateway, recorder=recorder)
    assert [r.error for r in recorder.requests] == ["connection error (ClientConnectorError)"]
    assert recorder.journeys[0].error == "create failed"


async def test_a_connection_closed_without_an_answer_is_a_connection_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Gateway(f"http://127.0.0.1:{port}", 8, 2.0) as gateway:
        recorder = await journey(gateway)
    assert [r.error for r in recorder.requests] == ["connection error (ServerDisconnectedError)"]


async def test_failed_polls_are_counted_and_polling_goes_on() -> None:
    fake = FakeGateway(polls_to_final=3)

    async def flaky(request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and fake.reads.get("PAY_1") == 0:
            fake.reads["PAY_1"] += 1
            return web.Response(status=503, text="upstream connect error")
        return await fake.handle(request)

    recorder = await run_one(flaky)
    assert [(r.op, r.error) for r in recorder.requests] == [
        (CREATE, None),
        (GET, "HTTP 503"),
        (GET, None),
        (GET, None),
    ]
    assert recorder.examples["get: HTTP 503"] == "upstream connect error"
    assert recorder.journeys[0].error is None


async def test_a_refusal_is_counted_by_the_bound_that_refused_it() -> None:
    """Load shedding's 503s say which bound refused them (the error's `cause`), so a run past
    saturation shows where it shed; other errors keep their plain kind."""
    fake = FakeGateway(polls_to_final=1)
    refusals = iter(["admission.loop_lag", "fraud_check.in_flight"])

    async def shedding(request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and (cause := next(refusals, None)):
            error = {
                "code": 14,
                "message": "the gateway is at capacity",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "OVERLOADED",
                        "metadata": {"cause": cause},
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "1s"},
                ],
            }
            return web.json_response(error, status=503, headers={"Retry-After": "1"})
        return await fake.handle(request)

    recorders = [await run_one(shedding) for _ in range(3)]
    assert [r.requests[0].error for r in recorders] == [
        "HTTP 503 (admission.loop_lag)",
        "HTTP 503 (fraud_check.in_flight)",
        None,
    ]


async def test_latency_counts_from_when_the_request_was_due() -> None:
    """A creation that starts late (a busy generator) is charged the delay: no omission."""
    async with serving(FakeGateway(polls_to_final=1).handle) as gateway:
        recorder = await journey(gateway, due=time.monotonic() - 0.5)
    create = recorder.requests[0]
    assert create.end - create.due >= 0.5
    assert recorder.journeys[0].end - recorder.journeys[0].due >= 0.5


async def test_merchants_are_created_as_admin_with_their_own_tokens() -> None:
    seen: list[tuple[str, str]] = []

    async def admin_api(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers["Authorization"]))
        return web.json_response({"merchant_id": f"MER_{len(seen)}"})

    async with serving(admin_api) as gateway:
        merchants = await create_merchants(
            gateway, {"Authorization": "Bearer admin"}, 3, "r1", lambda m: f"tok-{m}"
        )
    assert [m.merchant_id for m in merchants] == ["MER_1", "MER_2", "MER_3"]
    assert merchants[1].headers == {"Authorization": "Bearer tok-MER_2"}
    assert set(seen) == {("/api/v1/admin/merchants", "Bearer admin")}


async def test_a_refused_merchant_creation_stops_the_setup() -> None:
    async def forbidden(request: web.Request) -> web.StreamResponse:
        return web.json_response({"code": 7, "message": "admin role required"}, status=403)

    async with serving(forbidden) as gateway:
        with pytest.raises(SetupError, match="HTTP 403"):
            await create_merchants(gateway, {}, 2, "r1", lambda m: m)
