"""HttpScorer (FRAUD_ML_API_URL) against a local aiohttp endpoint on an ephemeral port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from fraud.model import HttpScorer, ModelUnavailable
from fraud.model.features import FEATURE_NAMES, Features

FEATURES = Features(
    amount_paisa=12_345_00,
    payment_method="CARD",
    occurred_at=datetime(2026, 3, 4, 21, 0, tzinfo=UTC),
    email="someone@example.in",
    card_is_new=True,
)


class Endpoint:
    def __init__(self) -> None:
        self.answer: Any = {"probability": 0.4321, "version": "ext-7"}
        self.status = 200
        self.delay_s = 0.0
        self.received: list[Any] = []
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(await request.json())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(self.answer, str):
            return web.Response(text=self.answer, status=self.status)
        return web.json_response(self.answer, status=self.status)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    app = web.Application()
    app.router.add_post("/score", ep.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ep.base = f"http://127.0.0.1:{port}"
    yield ep
    await runner.cleanup()


async def test_success(endpoint: Endpoint) -> None:
    scorer = HttpScorer(f"{endpoint.base}/score")
    try:
        s = await scorer.score(FEATURES)
    finally:
        await scorer.aclose()
    assert s.probability_bps == 4321
    assert s.points == 17
    assert s.version == "ext-7"
    (body,) = endpoint.received
    assert body["amount_paisa"] == 12_345_00
    assert body["feature_names"] == list(FEATURE_NAMES)
    assert body["vector"] == list(FEATURES.vector())
    assert body["email_domain"] == "example.in"
    assert "someone" not in str(body)


async def test_version_defaults_to_external(endpoint: Endpoint) -> None:
    endpoint.answer = {"probability": 1}
    scorer = HttpScorer(f"{endpoint.base}/score")
    try:
        s = await scorer.score(FEATURES)
    finally:
        await scorer.aclose()
    assert (s.probability_bps, s.points, s.version) == (10_000, 40, "external")


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (500, {"error": "boom"}),
        (200, "not json"),
        (200, ["probability", 0.5]),
        (200, {"probability": "0.5"}),
        (200, {"probability": 1.5}),
        (200, {"probability": True}),
        (200, {}),
    ],
)
async def test_bad_answers_raise(endpoint: Endpoint, status: int, answer: Any) -> None:
    endpoint.status, endpoint.answer = status, answer
    scorer = HttpScorer(f"{endpoint.base}/score")
    try:
        with pytest.raises(ModelUnavailable):
            await scorer.score(FEATURES)
    finally:
        await scorer.aclose()


async def test_timeout_raises(endpoint: Endpoint) -> None:
    endpoint.delay_s = 1.0
    scorer = HttpScorer(f"{endpoint.base}/score", timeout_s=0.05)
    try:
        with pytest.raises(ModelUnavailable):
            await scorer.score(FEATURES)
    finally:
        await scorer.aclose()


async def test_connection_refused_raises(endpoint: Endpoint) -> None:
    scorer = HttpScorer(
        f"{endpoint.base}/nothing-here".replace(endpoint.base, "http://127.0.0.1:9")
    )
    try:
        with pytest.raises(ModelUnavailable):
            await scorer.score(FEATURES)
    finally:
        await scorer.aclose()
