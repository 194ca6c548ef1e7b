"""Stand-ins for what connectors talk to: stored payments, built in memory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.domain.states import Status
from orchestrator.records import PaymentRecord


@pytest.fixture
def make_payment() -> Callable[..., PaymentRecord]:
    def make(**overrides: Any) -> PaymentRecord:
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "payment_id": "PAY_TEST1",
            "merchant_id": "MER_TEST1",
            "user_id": "user-1",
            "amount_paisa": 20_000,
            "currency": "INR",
            "payment_method": "CARD",
            "status": Status.CREATED,
            "fees_paisa": 400,
            "tax_paisa": 72,
            "description": "",
            "callback_url": "",
            "metadata": {},
            "payment_details": {},
            "payment_url": "",
            "capture_method": "AUTOMATIC",
            "provider": "razorpay",
            "external_txn_id": "",
            "gateway_response": {},
            "failure_reason": "",
            "version": 1,
            "fraud_score": 0,
            "fraud_decision": "ALLOW",
            "fraud_signals": [],
            "expires_at": now + timedelta(minutes=15),
            "processed_at": None,
            "created_at": now,
            "updated_at": now,
            "operation": None,
            "operation_from": None,
            "job_failures": 0,
        }
        values.update(overrides)
        return PaymentRecord(**values)

    return make
