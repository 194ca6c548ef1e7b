"""Checkout sessions as plain data: request rules, the session id, the signed return."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway_core.errors import InvalidArgument
from web.passwords import hash_password, password_problem, verify_password
from web.sessions import (
    Customer,
    Session,
    Status,
    looks_like_session_id,
    new_session_id,
    return_location,
    return_signature,
    validate_new_session,
)


def request(**overrides: Any) -> dict[str, Any]:
    return {
        "amount_paisa": 10_000,
        "currency": "inr",
        "description": "Order 7",
        "customer": Customer(name=" Asha ", email="Asha@Example.com", phone="+91 98765 43210"),
        "methods": [],
        "return_url": "https://shop.example/done?order=7",
        "metadata": {"order_id": "7"},
        "expire_after_seconds": 0,
        "max_amount_paisa": 100_000_000,
    } | overrides


def fields_of(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.field_violations}


def test_a_valid_request_is_normalized_with_every_method_and_15_minutes() -> None:
    new = validate_new_session(**request())
    assert new.currency == "INR"
    assert new.methods == ("UPI", "CARD", "WALLET", "NET_BANKING")
    assert new.expires_in == timedelta(minutes=15)
    assert new.customer == Customer(name="Asha", email="Asha@example.com", phone="+919876543210")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount_paisa": 0}, "amount_paisa"),
        ({"amount_paisa": 100_000_001}, "amount_paisa"),
        ({"currency": "USD"}, "currency"),
        ({"return_url": ""}, "return_url"),
        ({"return_url": "javascript:alert(1)"}, "return_url"),
        ({"return_url": "https://u:p@shop.example/"}, "return_url"),
        ({"methods": ["UPI", "UPI"]}, "methods"),
        ({"methods": ["CASH"]}, "methods"),
        ({"expire_after_seconds": 299}, "expire_after_seconds"),
        ({"expire_after_seconds": 86_401}, "expire_after_seconds"),
        ({"customer": Customer(email="not-an-email")}, "customer.email"),
        ({"customer": Customer(phone="12345")}, "customer.phone"),
        ({"description": "card 4242 4242 4242 4242"}, "description"),
        ({"metadata": {"checkout_session_id": "x"}}, "metadata.checkout_session_id"),
        ({"metadata": {"note": "4242424242424242"}}, "metadata.note"),
    ],
)
def test_a_bad_field_is_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_new_session(**request(**overrides))
    assert fields_of(raised.value) == {field}


def test_the_expiry_bounds_are_inclusive() -> None:
    assert validate_new_session(**request(expire_after_seconds=300)).expires_in.seconds == 300
    assert validate_new_session(**request(expire_after_seconds=86_400)).expires_in.days == 1


def test_session_ids_are_long_random_and_recognizable() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(looks_like_session_id(i) for i in ids)
    assert not looks_like_session_id("CS_short")
    assert not looks_like_session_id("PAY_01KAP6W4JZ8M3V7Q2X5R9T1B0C")


def session(**overrides: Any) -> Session:
    fields: dict[str, Any] = {
        "checkout_session_id": "CS_" + "a" * 43,
        "merchant_id": "MER_1",
        "status": Status.OPEN,
        "amount_paisa": 100,
        "currency": "INR",
        "description": "",
        "customer": Customer(email="asha@example.com"),
        "methods": ("UPI",),
        "return_url": "https://shop.example/done?order=7",
        "metadata": {"order_id": "7"},
        "payment_id": "",
        "expires_at": datetime.now(UTC) + timedelta(minutes=5),
        "created_at": datetime.now(UTC),
    }
    return Session(**(fields | overrides))


def test_the_return_carries_the_ids_and_an_hmac_the_merchant_can_check() -> None:
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
    location = return_location(session(), "PAY_1", secret)
    parts = urlsplit(location)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "shop.example", "/done")
    assert query["order"] == "7"  # the merchant's own query is kept
    assert query["payment_id"] == "PAY_1"
    assert query["checkout_session_id"] == "CS_" + "a" * 43
    # What the README tells merchants to compute.
    expected = hmac.new(
        secret.encode(), f"{'CS_' + 'a' * 43}|PAY_1".encode(), hashlib.sha256
    ).hexdigest()
    assert query["signature"] == expected
    assert return_signature("another", "CS_x", "PAY_1") != return_signature(secret, "CS_x", "PAY_1")
    assert return_signature(secret, "CS_x", "PAY_2") != return_signature(secret, "CS_x", "PAY_1")


def test_a_payment_made_on_the_page_carries_the_session_and_the_receipt_address() -> None:
    metadata = session().payment_metadata()
    assert metadata == {
        "order_id": "7",
        "checkout_session_id": "CS_" + "a" * 43,
        "customer_email": "asha@example.com",
    }


def test_a_session_is_open_only_before_its_expiry_and_while_open() -> None:
    now = datetime.now(UTC)
    assert session().is_open_at(now)
    assert not session(expires_at=now).is_open_at(now)
    assert not session(status=Status.COMPLETE).is_open_at(now)


def test_passwords_are_argon2id_hashed_and_verified() -> None:
    hashed = hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse battery staple")
    assert not verify_password(hashed, "correct horse battery stable")
    assert not verify_password(None, "anything at all")
    assert not verify_password("not a hash", "anything at all")
    assert password_problem("short") is not None
    assert password_problem("x" * 129) is not None
    assert password_problem("twelve chars") is None


def test_analytics_become_one_series_per_method_with_gaps_where_nothing_was_tried() -> None:
    from paygate.reconciliation.v1 import reconciliation_pb2 as pb
    from web.analytics import analytics_request, chart_series

    def group(method: str, reached: int, rate: float, amount: int) -> pb.AnalyticsGroup:
        return pb.AnalyticsGroup(
            dimensions=pb.AnalyticsDimensions(payment_method=method),
            metrics=pb.PaymentMetrics(
                payment_count=reached,
                reached_provider_count=reached,
                success_rate=rate,
                processed_amount_paisa=amount,
            ),
        )

    analytics = pb.PaymentAnalytics(
        granularity="hour",
        groups=[group("UPI", 3, 2 / 3, 30_000), group("CARD", 1, 1.0, 50_000)],
        time_series=[
            pb.AnalyticsBucket(
                start_time="2026-12-06T09:00:00+05:30", groups=[group("UPI", 3, 2 / 3, 30_000)]
            ),
            pb.AnalyticsBucket(
                start_time="2026-12-06T10:00:00+05:30", groups=[group("CARD", 1, 1.0, 50_000)]
            ),
        ],
    )
    series = chart_series(analytics)
    assert series["methods"] == ["CARD", "UPI"]
    assert series["times"] == [1796527800, 1796527800 + 3600]
    assert series["volume_paisa"] == {"CARD": [0, 50_000], "UPI": [30_000, 0]}
    assert series["success_rate"] == {"CARD": [None, 1.0], "UPI": [0.6667, None]}
    assert series["totals"]["UPI"]["processed_amount_paisa"] == 30_000

    request = analytics_request("7d", now=datetime(2026, 12, 6, 3, 47, tzinfo=UTC))
    assert (request.from_date, request.to_date) == ("2026-11-29T04:00:00Z", "2026-12-06T04:00:00Z")
    assert (request.granularity, list(request.group_by)) == ("day", ["payment_method"])
    assert analytics_request("nonsense").granularity == "hour"
