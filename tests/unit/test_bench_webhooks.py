"""The webhook benchmark's own arithmetic and its synthetic events."""

from __future__ import annotations

import json

from bench.stats import Latency
from bench.webhooks import Phase, event

from webhook.events import parse_event


def test_the_synthetic_events_are_payment_events_the_service_reads() -> None:
    payment_id, value = event("MER_1", 7, "RUN")
    parsed = parse_event(value)

    assert parsed.payment_id == payment_id == "PAY_BENCHRUN00000007"
    assert parsed.event_type == "payment.success"
    data = json.loads(parsed.body)["data"]
    assert (data["status"], data["sequence"]) == ("SUCCESS", 3)


def test_throughput_is_deliveries_over_the_time_to_the_last_delivery() -> None:
    phase = Phase(
        events_per_second=60,
        endpoints=10,
        duration=20,
        published=1200,
        expected=12000,
        delivered=12000,
        window_seconds=24.0,
        latency=Latency.of_seconds([0.1, 0.2]),
    )

    assert phase.offered == 600
    assert phase.throughput == 500
