"""The benchmark's UPI journey against a fake gateway (httpx.MockTransport): no stack."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
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
Handler = Callable[[httpx.Request], httpx.Response]


class FakeGateway:
    """Creates PENDING payments; a payment turns `final` after `polls_to_final` reads."""

    def __init__(
        self, polls_to_final: int | None = 2, final: str = "SUCCESS", fraud: str = "ALLOW"
    ) -> None:
        self.polls_to_final = polls_to_final
        self.final = final
        self.fraud = fraud
        self.reads: dict[str, int] = {}
        self.created: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/v1/payments":
            self.created.append(request)
            payment_id = f"PAY_{len(self.created)}"
            self.reads[payment_id] = 0
            created = {"payment_id": payment_id, "status": "PENDING"}
            return httpx.Response(200, json=created | {"fraud": {"decision": self.fraud}})
        payment_id = request.url.path.rsplit("/", 1)[-1]
        self.reads[payment_id] += 1
        done = self.polls_to_final is not None and self.reads[payment_id] >= self.polls_to_final
        return httpx.Response(
            200, json={"payment_id": payment_id, "status": self.final if done else "PENDING"}
        )


async def run_one(
    handler: Handler,
    settings: JourneySettings = FAST,
    due: float | None = None,
    index: int = 0,
    recorder: Recorder | None = None,
) -> Recorder:
    recorder = recorder or Recorder()
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        merchants = [
            Merchant("MER_A", {"Authorization": "Bearer a"}),
            Merchant("MER_B", {"Authorization": "Bearer b"}),
        ]
        journeys = Journeys([client], merchants, recorder, settings, run_id="r1")
        await journeys.run(index, time.monotonic() if due is None else due, measured=True)
    return recorder


async def test_a_journey_creates_then_polls_until_success() -> None:
    gateway = FakeGateway(polls_to_final=3)
    recorder = await run_one(gateway)
    [journey] = recorder.journeys
    assert journey.error is None
    assert journey.polls == 3
    assert journey.last_status == "SUCCESS"
    assert journey.payment_id == "PAY_1"  # the GET phase reads it again
    assert [r.op for r in recorder.requests] == [CREATE, GET, GET, GET]
    assert all(r.error is None and r.measured for r in recorder.requests)
    # Polls are on the cadence: about 3 intervals from the creation to SUCCESS.
    assert journey.end - journey.due == pytest.approx(3 * FAST.poll_interval, abs=0.05)
    [create] = gateway.created
    body: dict[str, Any] = json.loads(create.content)
    assert body["payment_method"] == "UPI"
    assert body["payment_details"] == {"vpa": "success@upi"}
    assert body["amount_paisa"] == 10000
    assert create.headers["Idempotency-Key"] == "bench-r1-0"
    assert create.headers["Authorization"] == "Bearer a"


async def test_user_ids_never_read_as_card_numbers() -> None:
    """A UUID's dashed digit groups now and then passed the gateway's card-number check on
    free text, and the creation came back HTTP 400."""
    gateway = FakeGateway(polls_to_final=1)
    recorder = Recorder()
    for index in range(200):
        await run_one(gateway, index=index, recorder=recorder)
    user_ids = [json.loads(r.content)["user_id"] for r in gateway.created]
    assert len(set(user_ids)) == 200
    assert all(re.fullmatch(r"USR_[0-9A-HJKMNP-TV-Z]{26}", u) for u in user_ids)
    assert not any(contains_card_number(u) for u in user_ids)


async def test_a_creation_let_through_unscored_is_counted() -> None:
    assert (await run_one(FakeGateway(polls_to_final=1))).unscored == 0
    assert (await run_one(FakeGateway(polls_to_final=1, fraud="UNAVAILABLE"))).unscored == 1


async def test_iterations_use_merchants_round_robin_with_unique_idempotency_keys() -> None:
    gateway = FakeGateway(polls_to_final=1)
    recorder = Recorder()
    for index in range(4):
        await run_one(gateway, index=index, recorder=recorder)
    assert [r.headers["Authorization"] for r in gateway.created] == [
        "Bearer a",
        "Bearer b",
        "Bearer a",
        "Bearer b",
    ]
    keys = [r.headers["Idempotency-Key"] for r in gateway.created]
    assert len(set(keys)) == 4
    assert recorder.succeeded == 4


async def test_a_payment_that_stays_pending_never_succeeds_after_the_timeout() -> None:
    recorder = await run_one(FakeGateway(polls_to_final=None))
    [journey] = recorder.journeys
    assert journey.error == "never succeeded (still PENDING after 0.2 s)"
    assert journey.polls == 10  # every 0.02 s for 0.2 s
    assert sum(1 for r in recorder.requests if r.op == GET) == 10


async def test_a_failed_payment_ends_the_journey() -> None:
    recorder = await run_one(FakeGateway(polls_to_final=1, final="FAILED"))
    [journey] = recorder.journeys
    assert journey.error == "ended FAILED"
    assert journey.polls == 1


async def test_a_refused_creation_is_an_http_error_with_its_answer() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"code": 8, "message": "rate limited"})

    recorder = await run_one(limited)
    [journey] = recorder.journeys
    assert journey.error == "create failed"
    [request] = recorder.requests
    assert (request.op, request.error) == (CREATE, "HTTP 429")
    assert "rate limited" in recorder.examples["create: HTTP 429"]


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.PoolTimeout("pool"), "client pool timeout"),
        (httpx.ConnectError("refused"), "connection error (ConnectError)"),
    ],
)
async def test_transport_failures_are_classified(exception: Exception, kind: str) -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        raise exception

    recorder = await run_one(failing)
    assert [r.error for r in recorder.requests] == [kind]
    assert recorder.journeys[0].error == "create failed"


async def test_failed_polls_are_counted_and_polling_goes_on() -> None:
    gateway = FakeGateway(polls_to_final=3)

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and gateway.reads.get("PAY_1") == 0:
            gateway.reads["PAY_1"] += 1
            return httpx.Response(503, text="upstream connect error")
        return gateway(request)

    recorder = await run_one(flaky)
    assert [(r.op, r.error) for r in recorder.requests] == [
        (CREATE, None),
        (GET, "HTTP 503"),
        (GET, None),
        (GET, None),
    ]
    assert recorder.journeys[0].error is None


async def test_latency_counts_from_when_the_request_was_due() -> None:
    """A creation that starts late (a busy generator) is charged the delay: no omission."""
    recorder = await run_one(FakeGateway(polls_to_final=1), due=time.monotonic() - 0.5)
    create = recorder.requests[0]
    assert create.end - create.due >= 0.5
    assert recorder.journeys[0].end - recorder.journeys[0].due >= 0.5


async def test_merchants_are_created_as_admin_with_their_own_tokens() -> None:
    seen: list[httpx.Request] = []

    def admin_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"merchant_id": f"MER_{len(seen)}"})

    transport = httpx.MockTransport(admin_api)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        merchants = await create_merchants(
            client, {"Authorization": "Bearer admin"}, 3, "r1", lambda m: f"tok-{m}"
        )
    assert [m.merchant_id for m in merchants] == ["MER_1", "MER_2", "MER_3"]
    assert merchants[1].headers == {"Authorization": "Bearer tok-MER_2"}
    assert {r.url.path for r in seen} == {"/api/v1/admin/merchants"}
    assert all(r.headers["Authorization"] == "Bearer admin" for r in seen)


async def test_a_refused_merchant_creation_stops_the_setup() -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": 7, "message": "admin role required"})

    transport = httpx.MockTransport(forbidden)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        with pytest.raises(SetupError, match="HTTP 403"):
            await create_merchants(client, {}, 2, "r1", lambda m: m)
