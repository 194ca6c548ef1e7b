"""Card gateway routing rules and the per-gateway circuit breaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_core.services import BY_NAME
from orchestrator.connectors.card.routing import (
    BreakerState,
    CircuitBreaker,
    RoutingConfigError,
    RoutingTable,
)

SHIPPED = BY_NAME["orchestrator"].directory / "config" / "card-routing.yaml"


def test_the_shipped_table_routes_by_brand_then_amount_then_default() -> None:
    table = RoutingTable.load(SHIPPED)
    assert table.route("AMEX", 1000) == ("ccavenue", "payu", "razorpay")
    assert table.route("VISA", 5_000_000) == ("payu", "razorpay", "ccavenue")
    assert table.route("VISA", 4_999_999) == ("razorpay", "payu", "ccavenue")


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ([], "must be a mapping"),
        ({"gateways": []}, "non-empty list"),
        ({"gateways": ["a"], "default": ["b"]}, "unknown gateway(s) b"),
        ({"gateways": ["a"], "rules": [{"when": {"colour": "red"}, "route": ["a"]}]}, "colour"),
        (
            {"gateways": ["a"], "rules": [{"when": {"min_amount_paisa": 1.5}, "route": ["a"]}]},
            "whole numbers",
        ),
    ],
)
def test_a_bad_table_is_refused_with_the_place_named(document: object, complaint: str) -> None:
    with pytest.raises(RoutingConfigError) as info:
        RoutingTable.parse(document)
    assert complaint in str(info.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "routing.yaml"
    broken.write_text("gateways: [a\n")
    with pytest.raises(RoutingConfigError, match=r"routing\.yaml"):
        RoutingTable.load(broken)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_back() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_seconds=30, clock=clock)
    for _ in range(2):
        assert breaker.allow("razorpay")
        breaker.record_failure("razorpay")
    assert breaker.state("razorpay") == BreakerState.CLOSED
    assert breaker.allow("razorpay")
    breaker.record_failure("razorpay")
    assert breaker.state("razorpay") == BreakerState.OPEN
    assert not breaker.allow("razorpay")

    clock.now += 30
    assert breaker.state("razorpay") == BreakerState.HALF_OPEN
    assert breaker.allow("razorpay")  # the one probe
    assert not breaker.allow("razorpay")  # nobody else while it is out
    breaker.record_success("razorpay")
    assert breaker.state("razorpay") == BreakerState.CLOSED


def test_a_failed_probe_reopens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_seconds=10, clock=clock)
    breaker.record_failure("payu")
    clock.now += 10
    assert breaker.allow("payu")
    breaker.record_failure("payu")
    assert breaker.state("payu") == BreakerState.OPEN
    clock.now += 9
    assert not breaker.allow("payu")


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(threshold=2)
    breaker.record_failure("ccavenue")
    breaker.record_success("ccavenue")
    breaker.record_failure("ccavenue")
    assert breaker.state("ccavenue") == BreakerState.CLOSED
