"""Money safety end to end (issue 8): operations that race, callers that go away, providers
that hang or refuse, background jobs that meet a broken payment, authorizations nobody captures.

Every module's end checks the ledger and the providers' own books against the gateway's
(tests/e2e/conftest.py); these tests add what each scenario must end as.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

AMPLE = "9999999999"  # the sandbox wallet with ₹10,00,000
FUTURE_YEAR = str(time.gmtime().tm_year + 3)


def wallet(phone: str = AMPLE, amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PHONEPE", "phone": phone},
        **extra,
    }


def upi(vpa: str, amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
        **extra,
    }


def card(number: str, amount: int = 20000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": number,
                "expiry_month": "12",
                "expiry_year": FUTURE_YEAR,
                "cvv": "123",
                "holder_name": "Asha Rao",
            }
        },
        **extra,
    }


async def merchant_balance(payments: Any) -> dict[str, Any]:
    merchant = payments.merchant
    reply = await payments.api.get(
        f"/api/v1/admin/merchants/{merchant['merchant_id']}/balance", headers=merchant["admin"]
    )
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


# -- item 1: one operation at a time ------------------------------------------------------------


async def test_capture_racing_cancel_has_exactly_one_winner_and_the_money_agrees(
    payments: Any, stack: Stack, provider_books: Any
) -> None:
    """Sent together on a held wallet payment, capture and cancel cannot both win: before,
    cancel refunded the wallet while capture credited the merchant."""
    outcomes: list[str] = []
    for _ in range(6):
        held = await payments.create(wallet(capture_method="MANUAL"))
        assert held["status"] == "AUTHORIZED"
        captured, cancelled = await asyncio.gather(
            payments.act(held["payment_id"], "capture"),
            payments.act(held["payment_id"], "cancel", {"reason": "out of stock"}),
        )
        codes = sorted([captured.status_code, cancelled.status_code])
        assert codes == [200, 409], (captured.text, cancelled.text)
        loser = captured if captured.status_code == 409 else cancelled
        assert payments.reason(loser) in (
            "PAYMENT_OPERATION_IN_PROGRESS",
            "PAYMENT_NOT_AUTHORIZED",
            "PAYMENT_NOT_CANCELLABLE",
        ), loser.text
        final = "SUCCESS" if captured.status_code == 200 else "CANCELLED"
        done = await payments.wait_for(held["payment_id"], final)
        assert await provider_books.holds(held["payment_id"]) == (
            10000 if final == "SUCCESS" else 0
        )
        assert done["captured_amount_paisa"] == (10000 if final == "SUCCESS" else 0)
        outcomes.append(final)
    money = await merchant_balance(payments)
    assert int(money["captured_paisa"]) == 10000 * outcomes.count("SUCCESS")


# -- item 5: an authorization nobody captures ---------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [wallet(capture_method="MANUAL"), card("4242424242424242", capture_method="MANUAL")],
    ids=["wallet", "card"],
)
async def test_an_uncaptured_authorization_is_voided_and_expires_after_its_ttl(
    payments: Any, stack: Stack, provider_books: Any, body: dict[str, Any]
) -> None:
    held = await payments.create(body)
    assert held["status"] == "AUTHORIZED"
    deadline = _parse(held["expires_at"])
    # AUTHORIZATION_TTL (5 days by default) from the authorization.
    assert 4.9 * 86400 < deadline - time.time() < 5.1 * 86400
    await time_travel_past_expiry(stack, held["payment_id"])
    expired = await payments.wait_for(held["payment_id"], "EXPIRED")
    assert [s["to_status"] for s in expired["status_history"]][-2:] == ["CANCELLING", "EXPIRED"]
    assert await provider_books.holds(held["payment_id"]) == 0
    late = await payments.act(held["payment_id"], "capture")
    assert late.status_code == 409
    assert payments.reason(late) == "PAYMENT_NOT_AUTHORIZED"
    assert (await merchant_balance(payments))["captured_paisa"] == "0"


# -- item 3: one bad payment does not stop expiry for everyone ----------------------------------


async def test_a_poisoned_expiry_queue_does_not_stop_a_healthy_payment_expiring(
    payments: Any, stack: Stack
) -> None:
    """Payments whose expiry raises (here: stored without their bank code, as a bug or a
    hand edit might leave them) are ahead in the queue; a healthy one behind them still
    expires, and a payment the bank never heard of is resolved as EXPIRED too."""
    merchant_id = payments.merchant["merchant_id"]
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    poisoned = [f"PAY_POISON_{uuid.uuid4().hex[:10].upper()}" for _ in range(60)]
    unknown_to_bank = f"PAY_NOBANK_{uuid.uuid4().hex[:10].upper()}"
    try:
        await conn.executemany(
            "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
            " payment_method, status, payment_details, provider, created_at, expires_at)"
            " VALUES ($1, $2, 1000, 'INR', 'NET_BANKING', 'CREATED', $3, 'netbanking',"
            " now() - interval '2 hours', now() - interval '1 hour')",
            [(p, merchant_id, "{}") for p in poisoned]
            + [(unknown_to_bank, merchant_id, '{"bank_code": "ZZZZ"}')],
        )
        healthy = await payments.create(upi("manual@upi", expire_after_seconds=2))
        expired = await payments.wait_for(healthy["payment_id"], "EXPIRED", within=20)
        assert expired["status_history"][-1]["from_status"] == "PENDING"
        await payments.wait_for(unknown_to_bank, "EXPIRED")
        rows = await conn.fetch(
            "SELECT status, job_failures FROM payments WHERE payment_id = ANY($1::text[])",
            poisoned,
        )
        # Each was tried, failed, and backed off; none moved, none blocked the rest.
        assert {r["status"] for r in rows} == {"CREATED"}
        assert min(r["job_failures"] for r in rows) >= 1
        assert await job_failures_counted(stack) >= len(poisoned)
    finally:
        # Out of the way of later modules' expiry rounds.
        await conn.execute(
            "UPDATE payments SET status = 'FAILED', failure_reason = 'test cleanup'"
            " WHERE payment_id = ANY($1::text[]) AND status = 'CREATED'",
            poisoned,
        )
        await conn.close()


async def test_a_bank_the_provider_does_not_list_is_refused_before_any_payment(
    payments: Any,
) -> None:
    """Before: such a payment stayed CREATED, and its expiry raised on every round."""
    reply = await payments.api.post(
        "/api/v1/payments",
        json={
            "amount_paisa": 5000,
            "currency": "INR",
            "payment_method": "NET_BANKING",
            "payment_details": {"bank_code": "ZZZZ"},
        },
        headers=payments.merchant["auth"],
    )
    assert reply.status_code == 400, reply.text
    violations = [v for d in reply.json()["details"] for v in d.get("field_violations", [])]
    assert [v["field"] for v in violations] == ["payment_details.bank_code"]
    assert "HDFC" in violations[0]["description"]
    listed = await payments.api.get("/api/v1/payments", headers=payments.merchant["auth"])
    assert listed.json()["payments"] == []


async def job_failures_counted(stack: Stack) -> float:
    _, metrics_port = stack.ports.services["orchestrator"]
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('orchestrator_job_failures_total{job="expiry"')
    )


async def time_travel_past_expiry(stack: Stack, payment_id: str) -> None:
    """Move the payment's deadline into the past, as if its TTL had run out."""
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        await conn.execute(
            "UPDATE payments SET expires_at = now() - interval '1 second' WHERE payment_id = $1",
            payment_id,
        )
    finally:
        await conn.close()


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- item 2: a caller that goes away ------------------------------------------------------------

SLOW_CARD = "4000000000005001"  # the acquirer answers after about 3 s


async def test_a_retry_after_a_client_timeout_during_a_slow_authorization_charges_once(
    payments: Any, stack: Stack, provider_books: Any, gateway_url: str
) -> None:
    """The client gives up after 1 s of a 3 s card authorization and retries with the same
    key: it is told the first is still in progress, then gets the first answer. Before, the
    disconnect released the key and the retry charged the card again."""
    key = f"order-{uuid.uuid4()}"
    headers = {**payments.merchant["auth"], "Idempotency-Key": key}
    body = card(SLOW_CARD, amount=31400)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=1.0) as impatient:
        with pytest.raises(httpx.TimeoutException):
            await impatient.post("/api/v1/payments", json=body, headers=headers)
    busy = await payments.api.post("/api/v1/payments", json=body, headers=headers)
    assert busy.status_code == 409, busy.text
    assert payments.reason(busy) == "IDEMPOTENCY_IN_PROGRESS"
    deadline = time.monotonic() + 20
    while True:
        retry = await payments.api.post("/api/v1/payments", json=body, headers=headers)
        if retry.status_code != 409 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "SUCCESS"
    again = await payments.api.post("/api/v1/payments", json=body, headers=headers)
    assert again.text == retry.text
    listed = await payments.api.get("/api/v1/payments", headers=payments.merchant["auth"])
    assert [p["payment_id"] for p in listed.json()["payments"]] == [retry.json()["payment_id"]]
    assert await provider_books.holds(retry.json()["payment_id"]) == 31400


# -- item 1: a void or capture the provider refuses or does not answer --------------------------

REFUND_FAILS = "9000000004"  # the wallet refuses every refund (a wallet void is a refund)
REFUND_HANGS = "9000000003"  # the first call per refund is processed, then answers too late
VOID_REFUSED_CARD = "4000000000005399"
VOID_HANGS_CARD = "4000000000005340"
CAPTURE_HANGS_CARD = "4000000000005241"


@pytest.mark.parametrize(
    "body",
    [
        wallet(REFUND_FAILS, capture_method="MANUAL"),
        card(VOID_REFUSED_CARD, capture_method="MANUAL"),
    ],
    ids=["wallet", "card"],
)
async def test_a_refused_void_leaves_the_payment_authorized_and_capturable(
    payments: Any, stack: Stack, provider_books: Any, body: dict[str, Any]
) -> None:
    held = await payments.create(body)
    assert held["status"] == "AUTHORIZED"
    refused = await payments.act(held["payment_id"], "cancel")
    assert refused.status_code == 400, refused.text
    assert payments.reason(refused) == "VOID_REFUSED"
    assert (await payments.get(held["payment_id"]))["status"] == "AUTHORIZED"
    captured = await payments.act(held["payment_id"], "capture")
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "SUCCESS"
    assert await provider_books.holds(held["payment_id"]) == body["amount_paisa"]


@pytest.mark.parametrize(
    "body",
    [wallet(REFUND_HANGS, capture_method="MANUAL"), card(VOID_HANGS_CARD, capture_method="MANUAL")],
    ids=["wallet", "card"],
)
async def test_a_void_that_times_out_holds_the_payment_until_the_inquiry_knows(
    payments: Any, stack: Stack, provider_books: Any, body: dict[str, Any]
) -> None:
    """Before: 500, and the payment stayed AUTHORIZED and capturable while the money was
    already going back to the customer."""
    held = await payments.create(body)
    cancelling = await payments.act(held["payment_id"], "cancel")
    assert cancelling.status_code == 200, cancelling.text
    assert cancelling.json()["status"] == "CANCELLING"
    capture = await payments.act(held["payment_id"], "capture")
    assert capture.status_code == 409, capture.text
    assert payments.reason(capture) in ("PAYMENT_OPERATION_IN_PROGRESS", "PAYMENT_NOT_AUTHORIZED")
    cancelled = await payments.wait_for(held["payment_id"], "CANCELLED", within=30)
    assert cancelled["captured_amount_paisa"] == 0
    assert await provider_books.holds(held["payment_id"]) == 0


async def test_a_capture_that_times_out_is_finished_by_the_inquiry(
    payments: Any, stack: Stack, provider_books: Any
) -> None:
    held = await payments.create(card(CAPTURE_HANGS_CARD, capture_method="MANUAL"))
    capturing = await payments.act(held["payment_id"], "capture")
    assert capturing.status_code == 200, capturing.text
    assert capturing.json()["status"] == "CAPTURING"
    cancel = await payments.act(held["payment_id"], "cancel")
    assert cancel.status_code == 409, cancel.text
    done = await payments.wait_for(held["payment_id"], "SUCCESS", within=30)
    assert done["captured_amount_paisa"] == 20000
    assert await provider_books.holds(held["payment_id"]) == 20000


# -- item 11: cancel against a late provider result ---------------------------------------------

DEBIT_HANGS = "9000000001"  # the wallet debits, then answers too late


async def test_cancelling_a_upi_payment_whose_switch_timed_out_tells_the_switch(
    payments: Any, stack: Stack, provider_books: Any
) -> None:
    """timeout@upi: the switch does not answer the initiation in time but has the request,
    and left alone approves it 2.5 s later. The cancel withdraws it at the switch; if the
    customer got there first, the money goes back as a reversal. Either way no money stays
    with the provider, and the gateway's books say so."""
    payment = await payments.create(upi("timeout@upi"))
    assert payment["status"] == "PENDING"
    cancelled = await payments.act(payment["payment_id"], "cancel")
    assert cancelled.status_code == 200, cancelled.text
    await payments.wait_for(payment["payment_id"], "CANCELLED")
    await until_final_at_the_provider(provider_books, payment["payment_id"])
    final = await payments.get(payment["payment_id"])
    assert final["status"] == "CANCELLED"
    assert [(r["kind"], r["status"]) for r in final["refunds"]] in (
        [],
        [("REVERSAL", "PROCESSED")],
    )
    assert await provider_books.holds(payment["payment_id"]) == 0


async def test_a_customer_who_paid_before_the_cancel_gets_a_real_reversal(
    payments: Any, stack: Stack, provider_books: Any, kafka_events: Any
) -> None:
    """A wallet debit whose answer was lost (PENDING); the merchant cancels; the wallet says
    the customer was debited. The money goes back as a refund of kind REVERSAL, with its
    ledger postings and events, and the payment stays CANCELLED."""
    for _ in range(3):
        payment = await payments.create(wallet(DEBIT_HANGS, amount=5000))
        assert payment["status"] == "PENDING"
        cancelled = await payments.act(payment["payment_id"], "cancel")
        if cancelled.status_code == 200:
            break
        # The status inquiry (1 s after the timeout) found the debit first: the payment is
        # SUCCESS and cannot be cancelled any more, which is right too; try again.
        assert payments.reason(cancelled) == "PAYMENT_NOT_CANCELLABLE", cancelled.text
    else:
        pytest.fail("the inquiry beat every cancel")
    final = await payments.wait_for(payment["payment_id"], "CANCELLED")
    reversal = await wait_for_refund(payments, payment["payment_id"], "PROCESSED")
    assert (reversal["kind"], reversal["amount_paisa"]) == ("REVERSAL", 5000)
    assert final["refunded_amount_paisa"] in (0, 5000)
    assert await provider_books.holds(payment["payment_id"]) == 0
    events = await kafka_events(payment["payment_id"], want=6)
    types = [e["type"] for e in events]
    assert {"payment.cancelled", "refund.created", "refund.processed"} <= set(types)
    money = await merchant_balance(payments)
    assert (money["captured_paisa"], money["refunded_paisa"], money["fees_paisa"]) == (
        "5000",
        "5000",
        "0",
    )


async def until_final_at_the_provider(
    provider_books: Any, payment_id: str, within: float = 20
) -> None:
    """Polls the provider's own books until its transaction is settled one way or the other."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        books = await provider_books.all()
        entries = [p for p in books["payments"] if p["payment_id"] == payment_id]
        if entries and all(p["status"] != "PENDING" for p in entries):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{payment_id} is still pending at its provider")


async def wait_for_refund(
    payments: Any, payment_id: str, status: str, within: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for refund in (await payments.get(payment_id))["refunds"]:
            if refund["status"] == status:
                found: dict[str, Any] = refund
                return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"{payment_id} has no {status} refund")


DEBIT_ARRIVES_LATE = "9000000005"  # the wallet gets the debit request after the caller gave up


async def test_a_cancel_before_a_late_debit_lands_still_gives_the_money_back(
    payments: Any, provider_books: Any
) -> None:
    """The debit request reaches the wallet after the gateway's deadline. A cancel sent before
    it lands finds nothing at the wallet; closing the payment then would leave the customer
    debited with nothing left to notice. The cancel waits out the start window instead, finds
    the debit, and reverses it."""
    payment = await payments.create(wallet(DEBIT_ARRIVES_LATE, amount=4200))
    assert payment["status"] == "PENDING"
    cancelling = await payments.act(payment["payment_id"], "cancel")
    assert cancelling.status_code == 200, cancelling.text
    assert cancelling.json()["status"] == "CANCELLING"
    reversal = await wait_for_refund(payments, payment["payment_id"], "PROCESSED", within=90)
    assert (reversal["kind"], reversal["amount_paisa"]) == ("REVERSAL", 4200)
    assert (await payments.get(payment["payment_id"]))["status"] == "CANCELLED"
    assert await provider_books.holds(payment["payment_id"]) == 0


async def test_an_authorization_whose_void_is_refused_at_expiry_is_retried_a_day_later(
    payments: Any, stack: Stack, provider_books: Any
) -> None:
    held = await payments.create(card(VOID_REFUSED_CARD, capture_method="MANUAL"))
    await time_travel_past_expiry(stack, held["payment_id"])
    deadline = time.monotonic() + 20
    while True:
        payment = await payments.get(held["payment_id"])
        if payment["status"] == "AUTHORIZED" and _parse(payment["expires_at"]) > time.time():
            break
        assert time.monotonic() < deadline, payment
        await asyncio.sleep(0.2)
    # Tried once, refused, and left for a day: not voided again on every backoff round.
    assert 0.9 * 86400 < _parse(payment["expires_at"]) - time.time() < 1.1 * 86400
    steps = [s["to_status"] for s in payment["status_history"]]
    assert steps.count("CANCELLING") == 1
    assert await provider_books.holds(held["payment_id"]) == 0  # authorized, not captured
    captured = await payments.act(held["payment_id"], "capture")
    assert captured.status_code == 200, captured.text
