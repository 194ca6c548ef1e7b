"""Admission of new payments through Envoy (gateway_core.admission, issue 13): past
MAX_PAYMENTS_IN_FLIGHT payments being screened and stored at once in the orchestrator,
a new payment is refused at the door with 503, reason OVERLOADED and Retry-After, before
anything is stored; its retry with the same Idempotency-Key is then an ordinary first attempt."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from devstack import Stack
from orchestrator.settings import Settings

IN_FLIGHT = Settings.model_fields["max_payments_in_flight"].default
EXTRA = 8


def body(user: int) -> dict[str, object]:
    return {
        "user_id": f"door-user-{user}",
        "amount_paisa": 100,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
    }


def cause(reply: httpx.Response) -> str:
    [info] = [d for d in reply.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["reason"] == "OVERLOADED"
    value: str = info["metadata"]["cause"]
    return value


async def test_payments_past_the_in_flight_bound_are_refused_at_the_door_and_store_nothing(
    gateway_url: str, merchant_auth: dict[str, str], stack: Stack
) -> None:
    keys = [f"door-{uuid.uuid4().hex}" for _ in range(IN_FLIGHT + EXTRA)]
    async with httpx.AsyncClient(
        base_url=gateway_url, timeout=30, limits=httpx.Limits(max_connections=len(keys))
    ) as api:

        async def create(key: str) -> httpx.Response:
            headers = {**merchant_auth, "Idempotency-Key": key}
            user = keys.index(key) if key in keys else -1
            return await api.post("/api/v1/payments", json=body(user), headers=headers)

        # One ordinary payment first: the orchestrator's channel to the scorer is connected (a
        # scorer it cannot reach at all gets FRAUD_FAIL_POLICY at once, as a down one should).
        warm = await create(f"door-warm-{uuid.uuid4().hex}")
        assert warm.status_code == 200, warm.text
        # A frozen scorer keeps every admitted payment in its screening (for two fraud
        # deadlines), so the first IN_FLIGHT hold their places while the rest arrive.
        stack.freeze("fraud")
        try:
            replies = dict(zip(keys, await asyncio.gather(*map(create, keys)), strict=True))
        finally:
            stack.thaw("fraud")

        assert {r.status_code for r in replies.values()} <= {200, 503}, [
            r.text for r in replies.values()
        ]
        refused = [key for key, r in replies.items() if r.status_code == 503]
        for key in refused:
            assert replies[key].headers["retry-after"] == "1"
            assert replies[key].json()["code"] == 14  # UNAVAILABLE
        at_the_door = [key for key in refused if cause(replies[key]).startswith("admission.")]
        # The admitted ones met the frozen scorer (shed by the fraud check, or the one that
        # waited alone let through by FRAUD_FAIL_POLICY); the surplus never got that far.
        assert len(at_the_door) >= EXTRA
        assert {cause(replies[key]) for key in at_the_door} <= {
            "admission.in_flight",
            "admission.loop_lag",
        }
        assert "at capacity" in replies[at_the_door[0]].json()["message"]
        created = [r.json() for r in replies.values() if r.status_code == 200]
        assert len(created) <= 1, [(p["fraud"], p["status"]) for p in created][:3]

        # Nothing was stored for a refused payment.
        listed = await api.get("/api/v1/payments", params={"page_size": 100}, headers=merchant_auth)
        assert {p["payment_id"] for p in listed.json()["payments"]} == {
            p["payment_id"] for p in [warm.json(), *created]
        }

        # As a client should: come back after Retry-After with the same key. Each retry is a
        # first attempt that creates its payment, scored.
        async def retry(key: str) -> httpx.Response:
            for _ in range(10):
                reply = await create(key)
                if reply.status_code != 503:
                    return reply
                await asyncio.sleep(int(reply.headers["retry-after"]))
            return reply

        retried = await asyncio.gather(*map(retry, at_the_door))
        assert [r.status_code for r in retried] == [200] * len(at_the_door), [
            r.text for r in retried if not r.is_success
        ]
        assert {r.json()["fraud"]["decision"] for r in retried} == {"ALLOW"}
        listed = await api.get("/api/v1/payments", params={"page_size": 100}, headers=merchant_auth)
        assert len(listed.json()["payments"]) == 1 + len(created) + len(at_the_door)
