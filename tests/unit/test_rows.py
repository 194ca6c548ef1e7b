"""Storage rows and the domain model (orchestrator.rows), through a real PostgreSQL: what the
repository writes reads back as the same domain values, and the wire shows a payment only its
own method's details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.db import create_pool
from gateway_core.ids import new_id
from orchestrator.connectors.card import CardDetails
from orchestrator.connectors.registry import DETAILS_TYPES
from orchestrator.connectors.upi import UpiDetails
from orchestrator.domain.payment import FraudSignal, FraudVerdict, MethodDetails
from orchestrator.domain.states import Status
from orchestrator.repository import NewPayment, Repository
from orchestrator.rows import column_value, fraud_columns, fraud_from_row, merchant_from_row
from orchestrator.servicers.wire import encode_event, payment_message


@pytest.fixture(scope="module")
async def pool(postgres_server: ScratchServer) -> AsyncIterator[asyncpg.Pool]:
    settings = await postgres_server.database("rows", "orchestrator")
    pool = await create_pool(settings, "orchestrator", "rows-tests")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> Repository:
    return Repository(pool, "payments.events", encode_event, DETAILS_TYPES)


def new_payment(
    merchant_id: str, method: str, details: MethodDetails, fraud: FraudVerdict | None
) -> NewPayment:
    return NewPayment(
        payment_id=new_id("PAY"),
        merchant_id=merchant_id,
        user_id="u",
        amount_paisa=20_000,
        currency="INR",
        payment_method=method,
        description="rows",
        callback_url="",
        metadata={"order": "42"},
        payment_details=details,
        capture_method="AUTOMATIC",
        payment_url="",
        provider="razorpay" if method == "CARD" else "upi_core",
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        fraud=fraud,
    )


async def test_a_payment_reads_back_as_it_was_written(repo: Repository) -> None:
    merchant = await repo.create_merchant(
        merchant_id=new_id("MER"), name="Shop", email="s@x", vpa="shop@pg", category="5411"
    )
    assert await repo.get_merchant(merchant.merchant_id) == merchant
    details = CardDetails(
        card_token="tok_1",
        last4="4242",
        brand="VISA",
        emi_plan_id="emi_6m_no_cost",
        emi_tenure_months=6,
        emi_merchant_discount_paisa=1234,
    )
    verdict = FraudVerdict(12, "ALLOW", (FraudSignal("velocity_user_1m", 12, "3 in 1m"),))
    created = await repo.create_payment(new_payment(merchant.merchant_id, "CARD", details, verdict))
    payment = await repo.get_payment(created.payment_id, merchant.merchant_id)
    assert payment == created
    assert payment.payment_details == details
    assert payment.fraud == verdict
    assert payment.currency == "INR"  # char(3), unpadded
    assert payment.metadata == {"order": "42"}
    assert [(s.from_status, s.to_status) for s in payment.history] == [(None, Status.CREATED)]
    assert [(a.attempt_number, a.provider) for a in payment.attempts] == [(1, "razorpay")]


async def test_an_unscreened_payment_has_no_verdict(repo: Repository) -> None:
    merchant = await repo.create_merchant(
        merchant_id=new_id("MER"), name="Shop", email="", vpa="shop2@pg", category="5411"
    )
    upi = UpiDetails(vpa="user@okbank")
    created = await repo.create_payment(new_payment(merchant.merchant_id, "UPI", upi, None))
    payment = await repo.get_payment(created.payment_id, None)
    assert payment.fraud is None
    assert payment.payment_details == upi
    # Only the method's own details on the wire: no empty wallet, phone, bank or card fields.
    wire = payment_message(payment)
    assert [f.name for f, _ in wire.payment_details.ListFields()] == ["vpa", "upi_flow"]
    assert not wire.HasField("fraud")


def test_fraud_columns_and_the_verdict_map_both_ways() -> None:
    verdict = FraudVerdict(55, "REVIEW", (FraudSignal("rule:a", 30), FraudSignal("ml", 25, "x")))
    score, decision, signals = fraud_columns(verdict)
    row = {"fraud_score": score, "fraud_decision": decision, "fraud_signals": signals}
    assert fraud_from_row(row) == verdict
    assert fraud_columns(None) == (None, None, [])
    assert (
        fraud_from_row({"fraud_score": None, "fraud_decision": None, "fraud_signals": []}) is None
    )


def test_details_are_stored_as_their_json_and_other_values_as_they_are() -> None:
    assert column_value(UpiDetails(vpa="a@b", flow="COLLECT")) == {
        "vpa": "a@b",
        "upi_flow": "COLLECT",
    }
    assert column_value("declined") == "declined"
    assert column_value({"rrn": "1"}) == {"rrn": "1"}


def test_a_merchant_row_maps_field_by_field() -> None:
    now = datetime.now(UTC)
    row = {
        "merchant_id": "MER_1",
        "name": "Shop",
        "email": "s@x",
        "vpa": "shop@pg",
        "category": "5411",
        "status": "ACTIVE",
        "created_at": now,
        "updated_at": now,  # columns the domain does not hold are left out
    }
    merchant = merchant_from_row(row)
    assert (merchant.merchant_id, merchant.status, merchant.created_at) == ("MER_1", "ACTIVE", now)
