"""Every bad field of a payment request is named with the rule it breaks."""

from __future__ import annotations

import pytest

from gateway_core.errors import InvalidArgument
from orchestrator.domain.validation import validate_create_payment
from paygate.payments.v1 import payments_pb2

MAX = 100_000_000


def upi_request(**changes: object) -> payments_pb2.CreatePaymentRequest:
    request = payments_pb2.CreatePaymentRequest(
        amount_paisa=10000,
        currency="INR",
        payment_method=payments_pb2.UPI,
        payment_details=payments_pb2.PaymentDetails(vpa="user@okbank"),
    )
    for name, value in changes.items():
        if name == "vpa":
            request.payment_details.vpa = str(value)
        else:
            setattr(request, name, value)
    return request


def violations(request: payments_pb2.CreatePaymentRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate_create_payment(request, max_amount_paisa=MAX)
    return {v.field: v.description for v in info.value.field_violations}


def test_valid_upi_request_passes() -> None:
    validate_create_payment(upi_request(), max_amount_paisa=MAX)


@pytest.mark.parametrize("amount", [0, -1])
def test_amount_must_be_positive(amount: int) -> None:
    assert "positive" in violations(upi_request(amount_paisa=amount))["amount_paisa"]


def test_amount_has_a_ceiling() -> None:
    assert str(MAX) in violations(upi_request(amount_paisa=MAX + 1))["amount_paisa"]


def test_currency_must_be_inr() -> None:
    assert "INR" in violations(upi_request(currency="USD"))["currency"]
    assert "required" in violations(upi_request(currency=""))["currency"]


def test_method_is_required() -> None:
    found = violations(upi_request(payment_method=payments_pb2.PAYMENT_METHOD_UNSPECIFIED))
    assert "required" in found["payment_method"]


def test_vpa_is_checked_for_upi() -> None:
    assert "name@handle" in violations(upi_request(vpa="not-a-vpa"))["payment_details.vpa"]
    assert "required" in violations(upi_request(vpa=""))["payment_details.vpa"]


def test_all_violations_come_back_together() -> None:
    found = violations(upi_request(amount_paisa=0, currency="USD", vpa="bad"))
    assert set(found) == {"amount_paisa", "currency", "payment_details.vpa"}


def test_callback_url_must_be_http() -> None:
    assert "http" in violations(upi_request(callback_url="ftp://x"))["callback_url"]
