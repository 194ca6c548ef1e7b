"""Analytics and the transactions report against a real PostgreSQL: facts kept from events
(once, never going back in time), metrics computed by the service's queries against the same
numbers worked out here from the events, in plain Python."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.errors import InvalidArgument
from gateway_core.kafka import ConsumedEvent
from paygate.disputes.v1 import disputes_pb2
from paygate.events.v1 import events_pb2
from paygate.payments.v1 import payments_pb2
from paygate.reconciliation.v1 import merchant_reporting_pb2 as merchant_pb
from paygate.reconciliation.v1 import reconciliation_pb2 as pb
from reconciliation import analytics, events, transactions_report
from reconciliation.matching import IST
from reconciliation.reporting import Reporting

# 10:00 IST on 5 December 2026.
T0 = datetime(2026, 12, 5, 4, 30, tzinfo=UTC)
SUCCESSFUL = {"SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED"}


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("recon_analytics", "reconciliation")


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "reconciliation", "recon-analytics-tests")
    try:
        yield pool
    finally:
        await pool.close()


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@dataclass
class Sale:
    """A payment as its last event describes it (and the parameters that made it)."""

    payment_id: str
    merchant_id: str
    method: str
    provider: str
    status: str
    amount: int
    created: datetime
    success_ms: int | None = None
    fraud: str = "ALLOW"
    brand: str = ""
    failure: str = ""
    refunds: list[tuple[str, int, str]] = field(default_factory=list)  # id, amount, status

    def event(self, sequence: int, event_id: str | None = None) -> events_pb2.Event:
        payment = payments_pb2.Payment(
            payment_id=self.payment_id,
            merchant_id=self.merchant_id,
            amount_paisa=self.amount,
            currency="INR",
            payment_method=self.method,
            status=self.status,
            provider=self.provider,
            external_txn_id=f"REF_{self.payment_id}",
            failure_reason=self.failure,
            created_at=_ts(self.created),
            updated_at=_ts(self.created + timedelta(seconds=sequence)),
        )
        payment.card.brand = self.brand
        payment.fraud.decision = self.fraud
        if self.status != "CREATED" and self.fraud != "BLOCK":
            payment.status_history.append(
                payments_pb2.StatusTransition(
                    from_status="CREATED", to_status="PENDING", at=_ts(self.created)
                )
            )
        if self.success_ms is not None:
            payment.status_history.append(
                payments_pb2.StatusTransition(
                    from_status="PENDING",
                    to_status="SUCCESS",
                    at=_ts(self.created + timedelta(milliseconds=self.success_ms)),
                )
            )
            payment.captured_amount_paisa = self.amount
        for refund_id, amount, status in self.refunds:
            payment.refunds.append(
                payments_pb2.Refund(
                    refund_id=refund_id,
                    payment_id=self.payment_id,
                    amount_paisa=amount,
                    currency="INR",
                    status=status,
                    kind=payments_pb2.Refund.REFUND,
                    created_at=_ts(self.created + timedelta(minutes=30)),
                )
            )
        return events_pb2.Event(
            event_id=event_id or f"EVT_{self.payment_id}_{sequence}",
            type="payment.updated",
            merchant_id=self.merchant_id,
            payment_id=self.payment_id,
            payment=payment,
            sequence=sequence,
            occurred_at=_ts(self.created + timedelta(seconds=sequence)),
        )


def dispute_event(
    dispute_id: str, sale: Sale, status: str, sequence: int, amount: int | None = None
) -> events_pb2.Event:
    dispute = disputes_pb2.Dispute(
        dispute_id=dispute_id,
        payment_id=sale.payment_id,
        merchant_id=sale.merchant_id,
        amount_paisa=amount if amount is not None else sale.amount,
        currency="INR",
        reason_code="4853",
        phase=disputes_pb2.Dispute.CHARGEBACK,
        status=status,
        created_at=_ts(sale.created + timedelta(hours=1)),
        updated_at=_ts(sale.created + timedelta(hours=1, seconds=sequence)),
    )
    return events_pb2.Event(
        event_id=f"EVT_{dispute_id}_{status}",
        type=f"dispute.{status.lower()}",
        merchant_id=sale.merchant_id,
        payment_id=sale.payment_id,
        dispute=dispute,
        sequence=sequence,
    )


def request(**fields: Any) -> pb.GetPaymentAnalyticsRequest:
    return pb.GetPaymentAnalyticsRequest(**fields)


async def compute(
    pool: asyncpg.Pool, merchant: str | None = None, **fields: Any
) -> pb.PaymentAnalytics:
    """A merchant's analytics, or an admin's with `merchant` None."""
    return await Reporting(pool).analytics(request(**fields), merchant_id=merchant)


def expected(sales: Iterable[Sale], disputes: Iterable[tuple[int, str]] = ()) -> dict[str, Any]:
    """The metrics worked out from the sales, independently of the service's SQL."""
    sales = list(sales)
    success = [s for s in sales if s.status in SUCCESSFUL]
    reached = [s for s in sales if s.status != "CREATED" and s.fraud != "BLOCK"]
    processed = sum(s.amount for s in success)
    durations = sorted(s.success_ms for s in success if s.success_ms is not None)
    refunds = [r for s in sales for r in s.refunds if r[2] == "PROCESSED"]
    disputes = list(disputes)

    def rank(p: float) -> int:
        return durations[math.ceil(p * len(durations)) - 1] if durations else 0

    return {
        "payment_count": len(sales),
        "success_count": len(success),
        "failed_count": sum(s.status == "FAILED" for s in sales),
        "reached_provider_count": len(reached),
        "success_rate": len(success) / len(reached) if reached else 0.0,
        "conversion_rate": len(success) / len(sales) if sales else 0.0,
        "processed_amount_paisa": processed,
        "average_ticket_paisa": int(
            (Decimal(processed) / len(success)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        )
        if success
        else 0,
        "refund_count": len(refunds),
        "refund_amount_paisa": sum(r[1] for r in refunds),
        "fraud_block_count": sum(s.fraud == "BLOCK" for s in sales),
        "fraud_review_count": sum(s.fraud == "REVIEW" for s in sales),
        "dispute_opened_count": len(disputes),
        "dispute_won_count": sum(d[1] == "WON" for d in disputes),
        "dispute_lost_count": sum(d[1] == "LOST" for d in disputes),
        "dispute_accepted_count": sum(d[1] == "ACCEPTED" for d in disputes),
        "dispute_amount_paisa": sum(d[0] for d in disputes),
        "time_to_success_p50_ms": rank(0.5),
        "time_to_success_p95_ms": rank(0.95),
    }


def as_dict(metrics: pb.PaymentMetrics) -> dict[str, Any]:
    return {f.name: getattr(metrics, f.name) for f in pb.PaymentMetrics.DESCRIPTOR.fields}


def sales_of(merchant: str, start: datetime) -> list[Sale]:
    """Every method and outcome, a minute apart from `start`."""
    at = [start + timedelta(minutes=i) for i in range(10)]
    upi, card, wallet, bank = "UPI", "CARD", "WALLET", "NET_BANKING"
    return [
        Sale(f"{merchant}_U1", merchant, upi, "upi_core", "SUCCESS", 10_000, at[0], 1_200),
        Sale(f"{merchant}_U2", merchant, upi, "upi_core", "FAILED", 5_000, at[1], failure="u30"),
        Sale(f"{merchant}_U3", merchant, upi, "upi_core", "PENDING", 7_000, at[2]),
        Sale(
            f"{merchant}_C1",
            merchant,
            card,
            "razorpay",
            "PARTIALLY_REFUNDED",
            20_001,
            at[3],
            2_500,
            fraud="REVIEW",
            brand="VISA",
            refunds=[(f"{merchant}_R1", 5_000, "PROCESSED"), (f"{merchant}_R2", 1_000, "FAILED")],
        ),
        Sale(
            f"{merchant}_C2",
            merchant,
            card,
            "razorpay",
            "FAILED",
            30_000,
            at[4],
            brand="MASTERCARD",
            failure="card_declined",
        ),
        Sale(
            f"{merchant}_C3",
            merchant,
            card,
            "razorpay",
            "FAILED",
            40_000,
            at[5],
            fraud="BLOCK",
            brand="VISA",
            failure="fraud_blocked",
        ),
        Sale(f"{merchant}_W1", merchant, wallet, "paytm", "SUCCESS", 15_000, at[6], 300),
        Sale(
            f"{merchant}_W2",
            merchant,
            wallet,
            "paytm",
            "FAILED",
            9_000,
            at[7],
            failure="insufficient_balance",
        ),
        Sale(
            f"{merchant}_N1",
            merchant,
            bank,
            "netbanking",
            "REFUNDED",
            12_000,
            at[8],
            45_000,
            refunds=[(f"{merchant}_R3", 12_000, "PROCESSED")],
        ),
        Sale(f"{merchant}_N2", merchant, bank, "netbanking", "CREATED", 3_000, at[9]),
    ]


async def apply_all(pool: asyncpg.Pool, evts: Iterable[events_pb2.Event]) -> None:
    async with pool.acquire() as conn:
        for e in evts:
            await events.apply(conn, e)


async def test_metrics_equal_what_the_events_say(pool: asyncpg.Pool) -> None:
    sales = sales_of("MA", T0)
    # Delivered out of order: the final snapshot first, an older one (lower sequence) later.
    early = [
        Sale(**{**s.__dict__, "status": "PENDING", "success_ms": None, "refunds": []})
        for s in sales
    ]
    await apply_all(pool, [s.event(5) for s in sales])
    await apply_all(pool, [s.event(2) for s in early])
    await apply_all(pool, [s.event(5) for s in sales])  # redelivered: nothing changes
    c1 = sales[3]
    await apply_all(
        pool,
        [
            dispute_event("DSP_MA1", c1, "NEEDS_RESPONSE", 6),
            dispute_event("DSP_MA1", c1, "WON", 8),
            dispute_event("DSP_MA1", c1, "UNDER_REVIEW", 7),  # late: WON stays
            dispute_event("DSP_MA2", sales[0], "LOST", 9, amount=4_000),
        ],
    )
    disputes = [(c1.amount, "WON"), (4_000, "LOST")]

    answer = await compute(pool, "MA", from_date="2026-12-05", to_date="2026-12-05")

    assert as_dict(answer.totals) == expected(sales, disputes)
    assert answer.start_time == "2026-12-05T00:00:00+05:30"
    assert answer.end_time == "2026-12-06T00:00:00+05:30"
    assert answer.totals.success_rate == 4 / 8  # 4 captured; 8 reached a provider
    assert answer.totals.conversion_rate == 4 / 10


async def test_groups_and_filters_by_dimension(pool: asyncpg.Pool) -> None:
    sales = sales_of("MB", T0)
    await apply_all(pool, [s.event(5) for s in sales])

    answer = await compute(
        pool, "MB", from_date="2026-12-05", to_date="2026-12-05", group_by=["payment_method"]
    )
    groups = {g.dimensions.payment_method: as_dict(g.metrics) for g in answer.groups}
    assert set(groups) == {"UPI", "CARD", "WALLET", "NET_BANKING"}
    for method, metrics in groups.items():
        assert metrics == expected(s for s in sales if s.method == method)

    answer = await compute(
        pool,
        "MB",
        from_date="2026-12-05",
        to_date="2026-12-05",
        card_brand=["VISA"],
        group_by=["status,failure_reason"],
    )
    visa = [s for s in sales if s.brand == "VISA"]
    assert as_dict(answer.totals) == expected(visa)
    assert {(g.dimensions.status, g.dimensions.failure_reason) for g in answer.groups} == {
        ("PARTIALLY_REFUNDED", ""),
        ("FAILED", "fraud_blocked"),
    }


async def test_a_merchant_sees_only_its_own_and_admins_see_all(pool: asyncpg.Pool) -> None:
    mine, theirs = sales_of("MC", T0), sales_of("MD", T0)[:3]
    await apply_all(pool, [s.event(5) for s in mine + theirs])

    own = await compute(pool, "MC", from_date="2026-12-05", to_date="2026-12-05")
    assert as_dict(own.totals) == expected(mine)

    admin = await compute(
        pool,
        from_date="2026-12-05",
        to_date="2026-12-05",
        merchant_id=["MC", "MD"],
        group_by=["merchant_id"],
    )
    assert as_dict(admin.totals) == expected(mine + theirs)
    by_merchant = {g.dimensions.merchant_id: as_dict(g.metrics) for g in admin.groups}
    assert by_merchant == {"MC": expected(mine), "MD": expected(theirs)}


async def test_time_series_buckets_are_ist_and_include_empty_ones(pool: asyncpg.Pool) -> None:
    # 23:58 IST on the 6th: the last two minutes of that IST day, then the next day's first.
    start = datetime(2026, 12, 6, 18, 28, tzinfo=UTC)
    sales = sales_of("ME", start)[:4]
    await apply_all(pool, [s.event(5) for s in sales])

    answer = await compute(
        pool,
        "ME",
        from_date="2026-12-06T23:00:00+05:30",
        to_date="2026-12-07T01:00:00+05:30",
        granularity="hour",
    )
    starts = [b.start_time for b in answer.time_series]
    assert starts == ["2026-12-06T23:00:00+05:30", "2026-12-07T00:00:00+05:30"]
    assert as_dict(answer.time_series[0].metrics) == expected(sales[:2])
    assert as_dict(answer.time_series[1].metrics) == expected(sales[2:])

    by_day = await compute(
        pool, "ME", from_date="2026-12-06", to_date="2026-12-08", granularity="DAY"
    )
    assert [(b.start_time, b.metrics.payment_count) for b in by_day.time_series] == [
        ("2026-12-06T00:00:00+05:30", 2),
        ("2026-12-07T00:00:00+05:30", 2),
        ("2026-12-08T00:00:00+05:30", 0),
    ]

    by_minute = await compute(
        pool,
        "ME",
        from_date="2026-12-06T23:58:00+05:30",
        to_date="2026-12-07T00:02:00+05:30",
        granularity="minute",
        group_by=["payment_method"],
    )
    assert [[g.dimensions.payment_method for g in b.groups] for b in by_minute.time_series] == [
        ["UPI"],
        ["UPI"],
        ["UPI"],
        ["CARD"],
    ]


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"from_date": "", "to_date": "2026-12-05"}, "from"),
        ({"from_date": "2026-02-30", "to_date": "2026-12-05"}, "from"),
        ({"from_date": "2026-12-05T10:00:00", "to_date": "2026-12-06"}, "from"),
        ({"from_date": "yesterday", "to_date": "2026-12-06"}, "from"),
        ({"from_date": "2026-12-01", "to_date": "9999-12-31"}, "to"),
        ({"from_date": "0001-01-01T00:00:00+14:00", "to_date": "2026-12-06"}, "from"),
        ({"from_date": "2026-12-06", "to_date": "2026-12-05"}, "to"),
        (
            {"from_date": "2026-12-01", "to_date": "2026-12-31", "granularity": "minute"},
            "granularity",
        ),
        (
            {"from_date": "2026-12-01", "to_date": "2026-12-02", "granularity": "week"},
            "granularity",
        ),
        ({"from_date": "2026-12-01", "to_date": "2026-12-02", "group_by": ["colour"]}, "group_by"),
        (
            {"from_date": "2026-12-01", "to_date": "2026-12-02", "group_by": ["merchant_id"]},
            "group_by",
        ),
        (
            {"from_date": "2026-12-01", "to_date": "2026-12-02", "merchant_id": ["MX"]},
            "merchant_id",
        ),
        ({"from_date": "2026-12-01", "to_date": "2026-12-02", "status": ["PAID"]}, "status"),
        (
            {"from_date": "2026-12-01", "to_date": "2026-12-02", "payment_method": ["CASH"]},
            "payment_method",
        ),
        ({"from_date": "2026-12-01", "to_date": "2026-12-02", "currency": ["inr"]}, "currency"),
    ],
)
def test_a_bad_query_names_the_field(fields: dict[str, Any], field_name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        analytics.parse_query(request(**fields), admin=False)
    assert field_name in [v.field for v in raised.value.field_violations]


def test_a_date_is_a_whole_ist_day_and_a_time_is_exact() -> None:
    whole = analytics.parse_range("2026-12-05", "2026-12-05")
    assert (whole.start, whole.end) == (
        datetime(2026, 12, 5, tzinfo=IST),
        datetime(2026, 12, 6, tzinfo=IST),
    )
    exact = analytics.parse_range("2026-12-05T04:30:00Z", "2026-12-05T10:00:00.5+05:30")
    assert exact.start == T0
    assert exact.end == T0 + timedelta(milliseconds=500)


async def test_the_transactions_report_has_a_row_per_payment_and_refund(pool: asyncpg.Pool) -> None:
    sales = sales_of("MF", T0)
    other = sales_of("MG", T0)[:1]
    await apply_all(pool, [s.event(5) for s in sales + other])
    time_range = analytics.parse_range("2026-12-05", "2026-12-05")

    async with pool.acquire() as conn, conn.transaction(readonly=True):
        body = b"".join([c async for c in transactions_report.csv_chunks(conn, time_range, "MF")])
    rows = list(csv.DictReader(io.StringIO(body.decode())))

    refunds = [(r[0], r[1]) for s in sales for r in s.refunds]
    assert len(rows) == len(sales) + len(refunds)
    assert {r["merchant_id"] for r in rows} == {"MF"}
    first = rows[0]
    assert (first["type"], first["payment_id"], first["created_at"]) == (
        "payment",
        "MF_U1",
        "2026-12-05T10:00:00+05:30",
    )
    assert (first["amount_paisa"], first["amount"], first["completed_at"]) == (
        "10000",
        "100.00",
        "2026-12-05T10:00:01+05:30",
    )
    card = next(r for r in rows if r["payment_id"] == "MF_C1" and r["type"] == "payment")
    assert (card["card_brand"], card["amount"], card["status"]) == (
        "VISA",
        "200.01",
        "PARTIALLY_REFUNDED",
    )
    found_refunds = [
        (r["refund_id"], int(r["amount_paisa"])) for r in rows if r["type"] == "refund"
    ]
    assert sorted(found_refunds) == sorted(refunds)
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)


async def test_each_event_id_is_counted_once_for_the_dashboard(pool: asyncpg.Pool) -> None:
    sale = sales_of("MH", T0)[6]  # a wallet payment that succeeded
    record = ConsumedEvent(
        topic="payments.events",
        partition=0,
        offset=1,
        key=sale.payment_id,
        value=json_format.MessageToJson(sale.event(5)).encode(),
    )
    labels = {"event_type": "payment.updated", "payment_method": "WALLET"}
    before = REGISTRY.get_sample_value("payment_events_total", labels) or 0.0
    ingest = events.EventIngestor(pool)

    await ingest(record)
    await ingest(record)  # redelivered

    assert REGISTRY.get_sample_value("payment_events_total", labels) == before + 1
    async with pool.acquire() as conn:
        status = await conn.fetchval(
            "SELECT status FROM analytics_payments WHERE payment_id = $1", sale.payment_id
        )
    assert status == "SUCCESS"


@pytest.mark.parametrize(
    ("merchant_request", "admin_request"),
    [
        (merchant_pb.GetMerchantPaymentAnalyticsRequest, pb.GetPaymentAnalyticsRequest),
        (merchant_pb.ExportMerchantTransactionsReportRequest, pb.ExportTransactionsReportRequest),
    ],
)
def test_a_merchants_request_is_the_admins_without_merchant_id(
    merchant_request: Any, admin_request: Any
) -> None:
    """The merchant service reads its requests as the admin's (their bytes): every field must
    be the same field."""

    def shape(message: Any) -> dict[int, tuple[str, int, bool, str]]:
        return {
            f.number: (f.name, f.type, f.is_repeated, f.json_name)
            for f in message.DESCRIPTOR.fields
        }

    admin = shape(admin_request)
    merchant = shape(merchant_request)
    assert {n: f for n, f in admin.items() if f[0] != "merchant_id"} == merchant


async def test_too_many_groups_is_a_clear_400(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_all(pool, [s.event(5) for s in sales_of("MI", T0)])
    monkeypatch.setattr(analytics, "MAX_GROUPS", 5)

    with pytest.raises(InvalidArgument) as raised:
        await compute(
            pool,
            "MI",
            from_date="2026-12-05",
            to_date="2026-12-05",
            granularity="minute",
            group_by=["payment_method"],
        )

    assert raised.value.reason == "TOO_MANY_GROUPS"
    assert [v.field for v in raised.value.field_violations] == ["group_by"]
