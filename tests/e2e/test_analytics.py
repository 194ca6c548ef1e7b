"""Analytics and the transactions report end to end through Envoy (issue 11, items 4 and 5).

A merchant makes payments of every method and outcome (UPI, cards approved, declined and
blocked by fraud, wallets, net banking, refunds, chargebacks won, lost and accepted); the
numbers the gateway answers must equal those worked out here, independently, from the events
read back from Kafka (payments.events), and they must be fresh within seconds.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

IST = ZoneInfo("Asia/Kolkata")
FUTURE_YEAR = str(time.gmtime().tm_year + 3)
SUCCESSFUL = {"SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED"}
# A payment still waiting for someone (the customer on a bank page) is as final as it gets.
FINAL = SUCCESSFUL | {"FAILED", "EXPIRED", "CANCELLED"}
DISPUTE_FINAL = {"WON", "LOST", "ACCEPTED"}
FRESH_WITHIN_S = 10
# Card numbers the tests pay with: none may appear in a report.
CARDS = {
    "visa": "4242424242424242",
    "mastercard": "5555555555554444",
    "declined": "4000000000000002",
    "chargeback": "4000000000000259",
}


def card(number: str, amount: int, **extra: Any) -> dict[str, Any]:
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
            }
        },
        **extra,
    }


def upi(vpa: str, amount: int) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
    }


def wallet(phone: str, amount: int) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": phone},
    }


def net_banking(amount: int) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "NET_BANKING",
        "payment_details": {"bank_code": "HDFC"},
    }


# -- what the events say ---------------------------------------------------------------------


async def read_events(stack: Stack, payment_ids: set[str]) -> list[dict[str, Any]]:
    """Every event on payments.events about these payments, up to the topic's current end."""
    topic = stack.env.get("KAFKA_TOPIC_PAYMENTS", "payments.events")
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            await consumer._client.force_metadata_update()
            numbers = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            assert time.monotonic() < deadline, "could not read payments.events to its end"
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found += [
                    json.loads(r.value)
                    for r in records
                    if r.key is not None and r.key.decode() in payment_ids
                ]
        return found
    finally:
        await consumer.stop()


def latest(events: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last snapshot of each payment (highest sequence, later in its partition on a tie)
    and the last state of each dispute (its latest update)."""
    payments: dict[str, dict[str, Any]] = {}
    disputes: dict[str, dict[str, Any]] = {}
    for event in events:
        payment = event["payment"]
        sequence = int(event.get("sequence", 0))
        held = payments.get(payment["payment_id"])
        if held is None or sequence >= held["_sequence"]:
            payments[payment["payment_id"]] = {**payment, "_sequence": sequence}
        if dispute := event.get("dispute"):
            known = disputes.get(dispute["dispute_id"])
            if known is None or dispute["updated_at"] >= known["updated_at"]:
                disputes[dispute["dispute_id"]] = dispute
    return payments, disputes


def _moment(text: str) -> datetime:
    """An RFC 3339 time of proto3 JSON (up to 9 fractional digits) to the microsecond."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


def _nearest_rank(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(fraction * len(ordered)) - 1] if ordered else 0


def expected_metrics(
    payments: Iterable[dict[str, Any]], disputes: Iterable[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The issue's metrics, worked out from the events' snapshots."""
    payments, disputes = list(payments), list(disputes)
    success = [p for p in payments if p["status"] in SUCCESSFUL]
    blocked = [p for p in payments if p.get("fraud", {}).get("decision") == "BLOCK"]
    reached = [p for p in payments if p["status"] != "CREATED" and p not in blocked]
    processed = sum(int(p.get("captured_amount_paisa") or p["amount_paisa"]) for p in success)
    durations = []
    for p in success:
        moved = [t["at"] for t in p.get("status_history", []) if t.get("to_status") == "SUCCESS"]
        elapsed = _moment(moved[0]) - _moment(p["created_at"])
        durations.append(elapsed // timedelta(milliseconds=1))
    refunds = [r for p in payments for r in p.get("refunds", []) if r["status"] == "PROCESSED"]
    average = Decimal(processed) / len(success) if success else Decimal(0)
    return {
        "payment_count": len(payments),
        "success_count": len(success),
        "failed_count": sum(p["status"] == "FAILED" for p in payments),
        "reached_provider_count": len(reached),
        "success_rate": len(success) / len(reached) if reached else 0,
        "conversion_rate": len(success) / len(payments) if payments else 0,
        "processed_amount_paisa": processed,
        "average_ticket_paisa": int(average.quantize(Decimal(1), rounding=ROUND_HALF_UP)),
        "refund_count": len(refunds),
        "refund_amount_paisa": sum(int(r["amount_paisa"]) for r in refunds),
        "fraud_block_count": len(blocked),
        "fraud_review_count": sum(p.get("fraud", {}).get("decision") == "REVIEW" for p in payments),
        "dispute_opened_count": len(disputes),
        "dispute_won_count": sum(d["status"] == "WON" for d in disputes),
        "dispute_lost_count": sum(d["status"] == "LOST" for d in disputes),
        "dispute_accepted_count": sum(d["status"] == "ACCEPTED" for d in disputes),
        "dispute_amount_paisa": sum(int(d["amount_paisa"]) for d in disputes),
        "time_to_success_p50_ms": _nearest_rank(durations, 0.5),
        "time_to_success_p95_ms": _nearest_rank(durations, 0.95),
    }


def numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """The answer's metrics as numbers (proto3 JSON writes int64 as strings)."""
    return {k: v if isinstance(v, float) else int(v) for k, v in metrics.items()}


# -- the seeded merchant ---------------------------------------------------------------------


class Shop:
    """A merchant of its own, paying through Envoy."""

    def __init__(self, api: httpx.AsyncClient, stack: Stack, merchant: dict[str, Any]) -> None:
        self.api = api
        self.stack = stack
        self.merchant = merchant
        self.auth = merchant["auth"]
        self.admin = merchant["admin"]
        self.payment_ids: list[str] = []

    async def pay(self, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.api.post("/api/v1/payments", json=body, headers=self.auth)
        assert reply.status_code == 200, reply.text
        payment: dict[str, Any] = reply.json()
        self.payment_ids.append(payment["payment_id"])
        return payment

    async def get(self, payment_id: str) -> dict[str, Any]:
        reply = await self.api.get(f"/api/v1/payments/{payment_id}", headers=self.auth)
        assert reply.status_code == 200, reply.text
        found: dict[str, Any] = reply.json()
        return found

    async def settled(self, payment_id: str, within: float = 30) -> dict[str, Any]:
        """The payment once it reached a final status."""
        deadline = time.monotonic() + within
        while (payment := await self.get(payment_id))["status"] not in FINAL:
            assert time.monotonic() < deadline, f"{payment_id} stayed {payment['status']}"
            await asyncio.sleep(0.2)
        return payment

    async def refund(self, payment_id: str, amount: int | None = None) -> None:
        body = {} if amount is None else {"amount_paisa": amount}
        reply = await self.api.post(
            f"/api/v1/payments/{payment_id}/refund", json=body, headers=self.auth
        )
        assert reply.status_code == 200, reply.text
        deadline = time.monotonic() + 30
        while any(r["status"] == "PENDING" for r in (await self.get(payment_id))["refunds"]):
            assert time.monotonic() < deadline, f"a refund of {payment_id} stayed PENDING"
            await asyncio.sleep(0.2)

    async def dispute(self, payment_id: str, within: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            reply = await self.api.get(
                "/api/v1/disputes", params={"payment_id": payment_id}, headers=self.auth
            )
            assert reply.status_code == 200, reply.text
            if found := reply.json()["disputes"]:
                dispute: dict[str, Any] = found[0]
                return dispute
            assert time.monotonic() < deadline, f"no dispute on {payment_id}"
            await asyncio.sleep(0.2)

    async def dispute_decided(self, dispute_id: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            reply = await self.api.get(f"/api/v1/disputes/{dispute_id}", headers=self.auth)
            assert reply.status_code == 200, reply.text
            if reply.json()["status"] in DISPUTE_FINAL:
                return
            assert time.monotonic() < deadline, f"{dispute_id} was never decided"
            await asyncio.sleep(0.2)

    async def analytics(self, **params: Any) -> dict[str, Any]:
        reply = await self.api.get("/api/v1/analytics/payments", params=params, headers=self.auth)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer

    async def admin_analytics(self, **params: Any) -> dict[str, Any]:
        reply = await self.api.get(
            "/api/v1/admin/analytics/payments", params=params, headers=self.admin
        )
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer


async def new_shop(api: httpx.AsyncClient, stack: Stack, mint_token: Any) -> Shop:
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    reply = await api.post(
        "/api/v1/admin/merchants", json={"name": f"Shop {uuid.uuid4().hex[:6]}"}, headers=admin
    )
    assert reply.status_code == 200, reply.text
    merchant: dict[str, Any] = reply.json()
    merchant["auth"] = {"Authorization": f"Bearer {mint_token(merchant['merchant_id'])}"}
    merchant["admin"] = admin
    return Shop(api, stack, merchant)


async def pay_at_the_bank(payment: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=10) as browser:
        reply = await browser.post(
            payment["next_action"]["redirect_url"], data={"action": "approve"}
        )
    assert reply.status_code == 303, reply.text


async def seed(shop: Shop) -> None:
    """Payments of every method and outcome, refunds, and three chargebacks decided three ways."""
    upi_ok = await shop.pay(upi("success@upi", 10_000))
    await shop.pay(upi("failure@upi", 5_000))
    await shop.pay(upi("success@upi", 5_000_000))  # ₹50,000: the fraud check reviews it
    visa = await shop.pay(card(CARDS["visa"], 20_001))
    await shop.pay(card(CARDS["mastercard"], 30_000))
    await shop.pay(card(CARDS["declined"], 7_500))
    # A high amount from a documentation network's address: blocked before any provider.
    blocked = upi("success@upi", 5_000_000)
    await shop.pay({**blocked, "device": {"fingerprint_id": "dev-1", "ip_address": "203.0.113.7"}})
    paytm = await shop.pay(wallet("9999999999", 15_000))
    await shop.pay(wallet("9000000000", 4_000))  # no balance
    bank = await shop.pay(net_banking(25_000))
    await pay_at_the_bank(bank)
    unpaid = await shop.pay(net_banking(12_000))  # the customer never pays at the bank
    disputed = [await shop.pay(card(CARDS["chargeback"], 50_000 + i)) for i in range(3)]

    for payment_id in shop.payment_ids:
        if payment_id != unpaid["payment_id"]:
            await shop.settled(payment_id)
    await shop.refund(visa["payment_id"], 5_000)
    await shop.refund(paytm["payment_id"])
    await shop.refund(upi_ok["payment_id"], 2_500)

    won, lost, accepted = [await shop.dispute(p["payment_id"]) for p in disputed]
    for dispute, summary in ((won, "Signed delivery: winning_evidence"), (lost, "We shipped")):
        reply = await shop.api.post(
            f"/api/v1/disputes/{dispute['dispute_id']}/evidence",
            json={"evidence": {"summary": summary}},
            headers=shop.auth,
        )
        assert reply.status_code == 200, reply.text
    reply = await shop.api.post(
        f"/api/v1/disputes/{accepted['dispute_id']}/accept", json={}, headers=shop.auth
    )
    assert reply.status_code == 200, reply.text
    for dispute in (won, lost, accepted):
        await shop.dispute_decided(dispute["dispute_id"])


@pytest.fixture(scope="module")
async def seeded(stack: Stack, mint_token: Any) -> dict[str, Any]:
    """The seeded merchant, another merchant with payments of its own, and the range."""
    started = datetime.now(UTC) - timedelta(seconds=5)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as api:
        shop = await new_shop(api, stack, mint_token)
        other = await new_shop(api, stack, mint_token)
        for body in (upi("success@upi", 77_700), card(CARDS["mastercard"], 88_800)):
            payment = await other.pay(body)
            await other.settled(payment["payment_id"])
        await seed(shop)
    return {
        "shop": shop.merchant,
        "shop_ids": shop.payment_ids,
        "other": other.merchant,
        "other_ids": other.payment_ids,
        "from": started.astimezone(IST).isoformat(),
        "to": (datetime.now(UTC) + timedelta(hours=1)).astimezone(IST).isoformat(),
    }


def shop_of(api: httpx.AsyncClient, stack: Stack, merchant: dict[str, Any]) -> Shop:
    return Shop(api, stack, merchant)


async def fresh(
    stack: Stack, ids: Iterable[str], answer_of: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The events' snapshots and disputes, and the answer, once the answer agrees with them
    (or FRESH_WITHIN_S has passed: the caller's assertion then shows the difference)."""
    deadline = time.monotonic() + FRESH_WITHIN_S
    while True:
        payments, disputes = latest(await read_events(stack, set(ids)))
        answer = await answer_of()
        if numbers(answer["totals"]) == expected_metrics(payments.values(), disputes.values()):
            return payments, disputes, answer
        if time.monotonic() > deadline:
            return payments, disputes, answer
        await asyncio.sleep(0.5)


# -- the tests -------------------------------------------------------------------------------


async def test_a_merchants_analytics_equal_what_its_events_say(
    api: httpx.AsyncClient, stack: Stack, seeded: dict[str, Any]
) -> None:
    shop = shop_of(api, stack, seeded["shop"])

    payments, disputes, answer = await fresh(
        stack,
        seeded["shop_ids"],
        lambda: shop.analytics(**{"from": seeded["from"], "to": seeded["to"]}),
    )

    want = expected_metrics(payments.values(), disputes.values())
    assert numbers(answer["totals"]) == want
    assert set(payments) == set(seeded["shop_ids"])
    # The seed covers what the metrics count: every one of these is at work.
    assert min(want["success_count"], want["failed_count"], want["refund_count"]) > 0
    assert min(want["fraud_block_count"], want["fraud_review_count"]) > 0
    disputes_decided = ("dispute_won_count", "dispute_lost_count", "dispute_accepted_count")
    assert [want[name] for name in disputes_decided] == [1, 1, 1]
    assert 0 < want["conversion_rate"] < want["success_rate"] < 1
    assert answer["time_zone"] == "Asia/Kolkata"
    assert answer["start_time"].endswith("+05:30")


async def test_groups_by_method_add_up_and_match_the_events(
    api: httpx.AsyncClient, stack: Stack, seeded: dict[str, Any]
) -> None:
    shop = shop_of(api, stack, seeded["shop"])
    payments, disputes, _ = await fresh(
        stack,
        seeded["shop_ids"],
        lambda: shop.analytics(**{"from": seeded["from"], "to": seeded["to"]}),
    )

    answer = await shop.analytics(
        **{"from": seeded["from"], "to": seeded["to"], "group_by": "payment_method,provider"}
    )

    by_group: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for payment in payments.values():
        by_group[(payment["payment_method"], payment["provider"])].append(payment)
    found = {
        (g["dimensions"]["payment_method"], g["dimensions"]["provider"]): numbers(g["metrics"])
        for g in answer["groups"]
    }
    assert set(found) == set(by_group)
    for key, members in by_group.items():
        ids = {p["payment_id"] for p in members}
        theirs = [d for d in disputes.values() if d["payment_id"] in ids]
        assert found[key] == expected_metrics(members, theirs), key
    assert {m for m, _ in found} == {"UPI", "CARD", "WALLET", "NET_BANKING"}

    declined = await shop.analytics(
        **{"from": seeded["from"], "to": seeded["to"], "failure_reason": "card_declined"}
    )
    assert int(declined["totals"]["payment_count"]) == 1
    assert declined["totals"]["success_rate"] == 0


async def test_a_merchant_never_sees_another_merchants_payments(
    api: httpx.AsyncClient, stack: Stack, seeded: dict[str, Any]
) -> None:
    shop = shop_of(api, stack, seeded["shop"])
    other = shop_of(api, stack, seeded["other"])
    window = {"from": seeded["from"], "to": seeded["to"]}

    mine = await shop.analytics(**window)
    theirs = await other.analytics(**window)

    payments, _ = latest(await read_events(stack, set(seeded["other_ids"])))
    assert numbers(theirs["totals"]) == expected_metrics(payments.values())
    assert int(theirs["totals"]["payment_count"]) == 2
    assert int(mine["totals"]["payment_count"]) == len(seeded["shop_ids"])
    # A merchant's request has no merchant to name: naming another changes nothing.
    named = await shop.analytics(**window, merchant_id=seeded["other"]["merchant_id"])
    assert named["totals"] == mine["totals"]
    grouped = await api.get(
        "/api/v1/analytics/payments",
        params={**window, "group_by": "merchant_id"},
        headers=shop.auth,
    )
    assert grouped.status_code == 400, grouped.text
    forbidden = await api.get("/api/v1/admin/analytics/payments", params=window, headers=shop.auth)
    assert forbidden.status_code == 403, forbidden.text

    both = await shop.admin_analytics(
        **window,
        merchant_id=[seeded["shop"]["merchant_id"], seeded["other"]["merchant_id"]],
        group_by="merchant_id",
    )
    per_merchant = {
        g["dimensions"]["merchant_id"]: int(g["metrics"]["payment_count"]) for g in both["groups"]
    }
    assert per_merchant == {
        seeded["shop"]["merchant_id"]: len(seeded["shop_ids"]),
        seeded["other"]["merchant_id"]: 2,
    }


async def test_the_time_series_counts_each_payment_in_its_ist_minute(
    api: httpx.AsyncClient, stack: Stack, seeded: dict[str, Any]
) -> None:
    shop = shop_of(api, stack, seeded["shop"])
    payments, _ = latest(await read_events(stack, set(seeded["shop_ids"])))

    answer = await shop.analytics(
        **{"from": seeded["from"], "to": seeded["to"], "granularity": "minute"}
    )

    per_minute: dict[str, int] = defaultdict(int)
    for payment in payments.values():
        moment = _moment(payment["created_at"]).astimezone(IST).replace(second=0, microsecond=0)
        per_minute[moment.isoformat()] += 1
    buckets = {b["start_time"]: int(b["metrics"]["payment_count"]) for b in answer["time_series"]}
    assert {k: v for k, v in buckets.items() if v} == dict(per_minute)
    # Every minute of the range, empty ones included, on IST minute boundaries.
    starts = [datetime.fromisoformat(start) for start in buckets]
    first = datetime.fromisoformat(seeded["from"]).replace(second=0, microsecond=0)
    assert starts[0] == first
    assert starts[-1] < datetime.fromisoformat(seeded["to"])
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    assert all(start.endswith("+05:30") for start in buckets)


async def test_bad_parameters_are_400_naming_the_field(
    api: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    auth = seeded["shop"]["auth"]
    cases = [
        ({"from": "2026-13-01", "to": "2026-12-05"}, "from"),
        ({"from": "2026-12-05T10:00:00", "to": "2026-12-06"}, "from"),
        ({"from": "2026-12-06", "to": "2026-12-05"}, "to"),
        ({"from": "2026-12-05", "to": "2026-12-05", "granularity": "fortnight"}, "granularity"),
        ({"from": "2026-12-05", "to": "2026-12-05", "group_by": "colour"}, "group_by"),
    ]
    for params, field in cases:
        reply = await api.get("/api/v1/analytics/payments", params=params, headers=auth)
        assert reply.status_code == 400, (params, reply.text)
        violations = [
            v["field"] for d in reply.json()["details"] for v in d.get("field_violations", [])
        ]
        assert field in violations, (params, reply.text)


async def test_the_transactions_report_lists_a_merchants_payments_and_refunds(
    api: httpx.AsyncClient, stack: Stack, seeded: dict[str, Any]
) -> None:
    payments, _ = latest(await read_events(stack, set(seeded["shop_ids"])))

    reply = await api.get(
        "/api/v1/reports/transactions",
        params={"from": seeded["from"], "to": seeded["to"]},
        headers=seeded["shop"]["auth"],
    )

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    for number in CARDS.values():
        assert number not in reply.text
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert {r["merchant_id"] for r in rows} == {seeded["shop"]["merchant_id"]}
    listed = {r["payment_id"]: r for r in rows if r["type"] == "payment"}
    assert set(listed) == set(payments)
    for payment_id, payment in payments.items():
        row = listed[payment_id]
        assert (row["status"], int(row["amount_paisa"])) == (
            payment["status"],
            int(payment["amount_paisa"]),
        )
        assert Decimal(row["amount"]) * 100 == int(payment["amount_paisa"])
        created = _moment(payment["created_at"]).astimezone(IST).isoformat(timespec="seconds")
        assert row["created_at"] == created
    refunds = {r["refund_id"]: r for r in rows if r["type"] == "refund"}
    assert refunds.keys() == {
        r["refund_id"] for p in payments.values() for r in p.get("refunds", [])
    }
    assert all(r["created_at"].endswith("+05:30") for r in rows)

    admin = await api.get(
        "/api/v1/admin/reports/transactions",
        params={
            "from": seeded["from"],
            "to": seeded["to"],
            "merchant_id": seeded["other"]["merchant_id"],
        },
        headers=seeded["shop"]["admin"],
    )
    assert admin.status_code == 200, admin.text
    other_rows = list(csv.DictReader(io.StringIO(admin.text)))
    assert {r["payment_id"] for r in other_rows} == set(seeded["other_ids"])
    named = await api.get(
        "/api/v1/reports/transactions",
        params={
            "from": seeded["from"],
            "to": seeded["to"],
            "merchant_id": seeded["other"]["merchant_id"],
        },
        headers=seeded["shop"]["auth"],
    )
    assert named.status_code == 200, named.text
    assert named.text == reply.text  # still the caller's own


# -- a large report ----------------------------------------------------------------------------

BULK_ROWS = 100_000
# What streaming may add to the service's memory while it serves the report: buffering 100,000
# rows (~25 MB of CSV, several times that as Python records) would cost far more.
BULK_MEMORY_BUDGET = 40 * 1024 * 1024


async def test_a_report_of_100000_rows_streams_in_bounded_memory(
    api: httpx.AsyncClient, stack: Stack, mint_token: Any
) -> None:
    merchant_id = f"MER_BULK_{uuid.uuid4().hex[:8]}"
    day = datetime(2001, 1, 1, tzinfo=IST)
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "reconciliation"})
    try:
        await conn.copy_records_to_table(
            "analytics_payments",
            columns=(
                "payment_id",
                "merchant_id",
                "payment_method",
                "provider",
                "status",
                "currency",
                "amount_paisa",
                "captured_paisa",
                "created_at",
                "changed_at",
                "sequence",
            ),
            records=(
                (
                    f"PAY_BULK_{merchant_id}_{i:06d}",
                    merchant_id,
                    "UPI",
                    "upi_core",
                    "SUCCESS",
                    "INR",
                    1_000 + i,
                    1_000 + i,
                    day + timedelta(milliseconds=i * 100),
                    day + timedelta(milliseconds=i * 100),
                    3,
                )
                for i in range(BULK_ROWS)
            ),
        )
    finally:
        await conn.close()
    status = Path(f"/proc/{stack.pid('reconciliation')}/status")

    def resident() -> int:
        """The service's resident memory, in bytes (Linux reports kB)."""
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    baseline = peak = resident()
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, resident())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    rows = downloaded = 0
    try:
        async with api.stream(
            "GET",
            "/api/v1/admin/reports/transactions",
            params={"from": "2001-01-01", "to": "2001-01-01", "merchant_id": merchant_id},
            headers=admin,
            timeout=120,
        ) as reply:
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                rows += 1
                if rows == 2:
                    assert line.startswith(f"payment,PAY_BULK_{merchant_id}_000000,")
            downloaded = reply.num_bytes_downloaded
    finally:
        sampling = False
        sampler.join()
    assert rows == BULK_ROWS + 1  # the header, then one row per payment
    assert downloaded > 10 * 1024 * 1024
    grown = (peak - baseline) / 2**20
    assert peak - baseline < BULK_MEMORY_BUDGET, (
        f"the service grew {grown:.1f} MB serving {downloaded / 2**20:.1f} MB of CSV"
    )
