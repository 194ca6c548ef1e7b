"""checkout.session.* events on payments.events: webhooks deliver them, the status stream and
reconciliation pass them by."""

from __future__ import annotations

import json

import pytest

from reconciliation.events import decode, is_checkout_event
from webhook.events import EVENT_TYPES, event_filter_problem, parse_event
from webhook.stream import update_from_event

COMPLETED = json.dumps(
    {
        "event_id": "EVT_1",
        "type": "checkout.session.completed",
        "occurred_at": "2026-12-06T03:00:00.123456789Z",
        "merchant_id": "MER_1",
        "payment_id": "PAY_1",
        "sequence": "1",
        "checkout_session": {
            "checkout_session_id": "CS_1",
            "status": "COMPLETE",
            "payment_id": "PAY_1",
            "amount_paisa": 100,
        },
    }
).encode()


def test_merchants_can_subscribe_to_session_events() -> None:
    assert {"checkout.session.completed", "checkout.session.expired"} <= set(EVENT_TYPES)
    assert event_filter_problem(["checkout.session.completed"]) is None


def test_a_session_event_is_delivered_with_the_session_as_data() -> None:
    event = parse_event(COMPLETED)
    assert (event.event_type, event.merchant_id, event.payment_id) == (
        "checkout.session.completed",
        "MER_1",
        "PAY_1",
    )
    assert event.callback_url == ""
    body = json.loads(event.body)
    assert body["type"] == "checkout.session.completed"
    assert body["data"]["checkout_session_id"] == "CS_1"
    assert body["data"]["status"] == "COMPLETE"


def test_the_status_stream_ignores_session_events() -> None:
    assert update_from_event(COMPLETED) is None


def test_reconciliation_recognizes_session_events_as_nothing_to_book() -> None:
    with pytest.raises(ValueError, match="without event_id"):
        decode(COMPLETED)
    assert is_checkout_event(COMPLETED)
    assert not is_checkout_event(b'{"type": "payment.success"}')
    assert not is_checkout_event(b"not json")
