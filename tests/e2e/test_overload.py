"""Admission of new payments through Envoy (gateway_core.admission, issue 13): past
MAX_PAYMENTS_IN_FLIGHT creations at once in the orchestrator, a new payment is refused at the
door with 503, reason OVERLOADED and Retry-After, before anything is stored; its retry with the
same Idempotency-Key is then an ordinary first attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from orchestrator.settings import Settings

Token = Callable[..., str]
IN_FLIGHT = Settings.model_fields["max_payments_in_flight"].default
EXTRA = 8


@pytest.fixture
async def merchant_auth(gateway_url: str, mint_token: Token) -> AsyncIterator[dict[str, str]]:
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as api:
        reply = await api.post(
            "/api/v1/admin/merchants", json={"name": f"Door {uuid.uuid4().hex[:6]}"}, headers=admin
        )
        yield {"Authorization": f"Bearer {mint_token(reply.json()['merchant_id'])}"}


def body(user: int) -> dict[str, object]:
    # timeout@upi: the switch hangs until the orchestrator's UPI deadline (2 s), so every
    # admitted creation stays in flight while the others arrive; a later inquiry settles it.
    return {
        "user_id": f"door-user-{user}",
        "amount_paisa": 100,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "timeout@upi"},
    }


async def test_payments_past_the_in_flight_bound_are_refused_at_the_door_and_store_nothing(
    gateway_url: str, merchant_auth: dict[str, str]
) -> None:
    keys = [f"door-{uuid.uuid4().hex}" for _ in range(IN_FLIGHT + EXTRA)]
    async with httpx.AsyncClient(
        base_url=gateway_url, timeout=30, limits=httpx.Limits(max_connections=len(keys))
    ) as api:

        async def create(user: int, key: str) -> httpx.Response:
            headers = {**merchant_auth, "Idempotency-Key": key}
            return await api.post("/api/v1/payments", json=body(user), headers=headers)

        replies = await asyncio.gather(*(create(i, key) for i, key in enumerate(keys)))

        created = {key: r.json() for key, r in zip(keys, replies, strict=True) if r.is_success}
        refused = {key: r for key, r in zip(keys, replies, strict=True) if r.status_code == 503}
        assert len(created) + len(refused) == len(keys), [r.text for r in replies]
        # Never more than the bound at once; at least the surplus refused (a busy test machine
        # may also refuse some for its event loop's lag).
        assert len(created) <= IN_FLIGHT
        assert len(refused) >= EXTRA
        for reply in refused.values():
            assert reply.headers["retry-after"] == "1"
            error = reply.json()
            assert error["code"] == 14  # UNAVAILABLE
            assert "at capacity" in error["message"]
            [info] = [d for d in error["details"] if d["@type"].endswith("ErrorInfo")]
            assert info["reason"] == "OVERLOADED"
            assert info["metadata"]["cause"] in {"admission.in_flight", "admission.loop_lag"}

        # Nothing was stored for a refused payment.
        listed = await api.get("/api/v1/payments", params={"page_size": 100}, headers=merchant_auth)
        assert {p["payment_id"] for p in listed.json()["payments"]} == {
            p["payment_id"] for p in created.values()
        }

        # As a client should: come back after Retry-After with the same key. Each retry is a
        # first attempt that creates its payment.
        async def retry(key: str) -> httpx.Response:
            for _ in range(10):
                reply = await create(keys.index(key), key)
                if reply.status_code != 503:
                    return reply
                await asyncio.sleep(int(reply.headers["retry-after"]))
            return reply

        retried = await asyncio.gather(*(retry(key) for key in refused))
        assert [r.status_code for r in retried] == [200] * len(refused), [
            r.text for r in retried if not r.is_success
        ]
        listed = await api.get("/api/v1/payments", params={"page_size": 100}, headers=merchant_auth)
        assert len({p["payment_id"] for p in listed.json()["payments"]}) == len(keys)
        assert {p["amount_paisa"] for p in listed.json()["payments"]} == {100}
