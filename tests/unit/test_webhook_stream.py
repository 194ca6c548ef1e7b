"""The status stream's messages and its per-replica fan-out (no servers: the e2e tests in
tests/e2e/test_payment_stream.py run it through Envoy)."""

from __future__ import annotations

import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paygate.payments.v1 import payments_pb2
from webhook.stream import StatusHub, StatusUpdate, update_from_event, update_from_payment

S = payments_pb2.Payment.Status


def record(event_type: str, status: str, sequence: int) -> bytes:
    return json.dumps(
        {
            "event_id": "EVT_1",
            "type": event_type,
            "occurred_at": "2026-12-05T10:00:00.123Z",
            "payment_id": "PAY_1",
            "sequence": str(sequence),
            "payment": {"payment_id": "PAY_1", "status": status},
        }
    ).encode()


def test_a_payment_event_becomes_a_message() -> None:
    update = update_from_event(record("payment.success", "SUCCESS", 3))

    assert update == StatusUpdate(
        "PAY_1", "SUCCESS", "payment.success", 3, "2026-12-05T10:00:00.123Z"
    )
    assert json.loads(update.to_json()) == {
        "payment_id": "PAY_1",
        "status": "SUCCESS",
        "event_type": "payment.success",
        "sequence": 3,
        "at": "2026-12-05T10:00:00.123Z",
    }


def test_refund_events_change_no_status_and_send_nothing() -> None:
    assert update_from_event(record("refund.created", "SUCCESS", 3)) is None


@pytest.mark.parametrize("value", [b"not json", b"{}", b'{"type": "payment.success"}'])
def test_a_record_that_is_not_an_event_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a payment event"):
        update_from_event(value)


def test_the_current_status_carries_the_sequence_of_the_event_that_led_to_it() -> None:
    at = Timestamp()
    at.FromJsonString("2026-12-05T10:00:01Z")
    payment = payments_pb2.Payment(payment_id="PAY_1", status=S.PENDING)
    payment.status_history.add(to_status=S.CREATED)
    payment.status_history.add(from_status=S.CREATED, to_status=S.PENDING, at=at)

    update = update_from_payment(payment)

    assert update == StatusUpdate("PAY_1", "PENDING", "payment.pending", 2, "2026-12-05T10:00:01Z")


async def test_the_hub_fans_out_to_every_stream_of_the_payment_and_only_to_them() -> None:
    hub = StatusHub()
    update = StatusUpdate("PAY_1", "SUCCESS", "payment.success", 3, "")
    with hub.subscribe("PAY_1") as first, hub.subscribe("PAY_1") as second:
        with hub.subscribe("PAY_2") as other:
            hub.publish(update)
            assert other.empty()
        assert (first.get_nowait(), second.get_nowait()) == (update, update)
        assert hub.streams == 2
    assert hub.streams == 0


async def test_a_feed_that_comes_back_asks_every_stream_to_read_its_payment_again() -> None:
    hub = StatusHub()
    with hub.subscribe("PAY_1") as queue:
        hub.feed_down()
        assert not hub.live.is_set()
        hub.feed_up()
        assert hub.live.is_set()
        assert queue.get_nowait() is None
