"""Two orchestrators and two webhook services against one database: nothing is done twice.

The stack runs REPLICAS=orchestrator=2,webhook=2 (Envoy balances every request over both
copies; both run every background job). Payments, refunds, expiries, status inquiries, refund
retries and webhook deliveries go through both, and the books show each happened once: one
ledger entry per capture and per refund, one event per change, each event delivered once to
the merchant's endpoint (by the receiver's own count), and the providers' books agreeing with
the gateway's one for one (checked after the module, tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import Stack
from devstack.webhook_receiver import WebhookReceiver

REPLICAS = "orchestrator=2,webhook=2"
pytestmark = pytest.mark.parametrize("stack", [REPLICAS], indirect=True, ids=["replicas"])

# Sandbox magic values (README, "Sandbox"): approved by callback, found by inquiry (no
# callback), declined, never approved (expires); a wallet whose refund answers are lost, so
# the refund-retry job settles them.
CALLBACK, INQUIRY, DECLINE, NEVER = "success@upi", "timeout@upi", "failure@upi", "manual@upi"
LOST_REFUND_ANSWERS = "9000000003"


def upi(vpa: str, amount: int = 10_000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
    }


def wallet(phone: str, amount: int = 10_000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PHONEPE", "phone": phone},
    }


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver()
    await running.start()
    yield running
    await running.stop()


async def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples with these labels, on one process."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(f"{name}{{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def settled(payments: Any, ids: list[str], want: dict[str, str], within: float) -> None:
    """Until every payment in `ids` has the status `want` names for it."""
    deadline = time.monotonic() + within
    while True:
        found = {i: (await payments.get(i))["status"] for i in ids}
        late = {i: s for i, s in found.items() if s != want[i]}
        if not late:
            return
        assert time.monotonic() < deadline, f"still not settled: {late}"
        await asyncio.sleep(0.5)


async def expire_now(stack: Stack, payment_ids: list[str]) -> None:
    """Move these payments' deadline into the past, as if their time had run out."""
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        await conn.execute(
            "UPDATE payments SET expires_at = now() - interval '1 second'"
            " WHERE payment_id = ANY($1::text[])",
            payment_ids,
        )
    finally:
        await conn.close()


async def test_two_orchestrators_and_two_webhook_services_do_each_thing_once(
    stack: Stack, payments: Any, receiver: WebhookReceiver
) -> None:
    endpoint = f"replicas-{payments.merchant['merchant_id']}"
    reply = await payments.api.post(
        "/api/v1/webhooks",
        json={"url": receiver.endpoint(endpoint), "events": ["*"]},
        headers=payments.merchant["auth"],
    )
    assert reply.status_code == 200, reply.text

    # Payments, spread by Envoy over both orchestrators.
    kinds = [CALLBACK] * 10 + [INQUIRY] * 6 + [DECLINE] * 4 + [NEVER] * 4
    created = await asyncio.gather(*(payments.create(upi(vpa)) for vpa in kinds))
    wallets = await asyncio.gather(
        *(payments.create(wallet(LOST_REFUND_ANSWERS)) for _ in range(3))
    )
    want = {
        p["payment_id"]: {CALLBACK: "SUCCESS", INQUIRY: "SUCCESS", DECLINE: "FAILED"}.get(
            vpa, "EXPIRED"
        )
        for p, vpa in zip(created, kinds, strict=True)
    } | {w["payment_id"]: "SUCCESS" for w in wallets}
    never = [p["payment_id"] for p, vpa in zip(created, kinds, strict=True) if vpa == NEVER]
    await expire_now(stack, never)
    await settled(payments, list(want), want, within=60)

    # Refunds: full ones, and two halves of one payment racing (likely on two orchestrators);
    # the wallet's refunds are settled by the retry job of whichever replica claims them.
    paid = [i for i, status in want.items() if status == "SUCCESS"]
    full, halves, retried = paid[:4], paid[4:7], [w["payment_id"] for w in wallets]
    replies = await asyncio.gather(
        *(payments.act(i, "refund") for i in full + retried),
        *(payments.act(i, "refund", {"amount_paisa": 5_000}) for i in halves for _ in range(2)),
    )
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    want |= dict.fromkeys(full + halves + retried, "REFUNDED")
    await settled(payments, list(want), want, within=90)

    # Both orchestrators served the API (Envoy's cluster lists both copies).
    for name in ("orchestrator", "orchestrator-2"):
        handled = await metric(
            stack.copies[name].metrics_port, "grpc_server_handled_total", method="CreatePayment"
        )
        assert handled > 0, f"{name} served no CreatePayment"

    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        history = await conn.fetch(
            "SELECT payment_id, to_status, count(*) AS times FROM payment_status_history"
            " WHERE payment_id = ANY($1::text[]) GROUP BY 1, 2",
            list(want),
        )
        journals = await conn.fetch(
            "SELECT kind, payment_id, refund_id FROM journal_entries"
            " WHERE payment_id = ANY($1::text[])",
            list(want),
        )
        refunds = await conn.fetch(
            "SELECT refund_id, payment_id, status FROM refunds WHERE payment_id = ANY($1::text[])",
            list(want),
        )
        outbox = await conn.fetch(
            "SELECT event_key, convert_from(payload, 'UTF8')::jsonb ->> 'type' AS type"
            " FROM outbox WHERE event_key = ANY($1::text[])",
            list(want),
        )
    finally:
        await conn.close()

    # Every status was entered once: no transition was applied twice.
    assert [dict(r) for r in history if r["times"] != 1] == []
    # One capture entry per captured payment, one refund entry per processed refund.
    captured = [i for i in want if want[i] == "REFUNDED"] + [
        i for i in want if want[i] == "SUCCESS"
    ]
    assert Counter(r["payment_id"] for r in journals if r["kind"] == "capture") == Counter(captured)
    assert len(refunds) == len(full) + 2 * len(halves) + len(retried)
    assert all(r["status"] == "PROCESSED" for r in refunds)
    assert Counter(r["refund_id"] for r in journals if r["kind"] == "refund") == Counter(
        r["refund_id"] for r in refunds
    )
    # One event per change: each payment's outbox has each of its changes once.
    events = Counter((r["event_key"], r["type"]) for r in outbox)
    for payment_id, status in want.items():
        assert events[(payment_id, "payment.created")] == 1
        final = {"SUCCESS": "payment.success", "FAILED": "payment.failed"}.get(status)
        if final:
            assert events[(payment_id, final)] == 1
    for refund in refunds:
        assert events[(refund["payment_id"], "refund.processed")] == sum(
            1 for r in refunds if r["payment_id"] == refund["payment_id"]
        )
    assert all(events[(i, "payment.expired")] == 1 for i in never)

    # Each event reached the endpoint once, whichever webhook service delivered it.
    delivered = await receiver.wait_for(endpoint, sum(events.values()), within=60)
    await asyncio.sleep(3)  # a duplicate would arrive after the last expected delivery
    delivered = receiver.to(endpoint)
    assert len({d.webhook_id for d in delivered}) == len(delivered), "a delivery came twice"
    assert Counter((d.document["data"]["payment_id"], d.type) for d in delivered) == events
    attempts = [
        await metric(stack.copies[name].metrics_port, "webhook_delivery_attempts_total")
        for name in ("webhook", "webhook-2")
    ]
    assert sum(attempts) >= len(delivered)
