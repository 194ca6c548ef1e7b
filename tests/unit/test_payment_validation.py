"""Every bad field of a payment request is named with the rule it breaks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway_core.errors import InvalidArgument
from orchestrator.servicers.validation import (
    validate_cancel,
    validate_capture,
    validate_create_merchant,
    validate_create_payment,
    validate_emi_query,
    validate_refund,
    validate_tokenize,
    validate_user_id,
)
from paygate.merchants.v1 import merchants_pb2
from paygate.payments.v1 import payment_methods_pb2, payments_pb2

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


# --- limits on free text and maps ----------------------------------------------------------

PAN = "4000056655665556"


def reason(call: Callable[[], None]) -> tuple[str, list[str]]:
    with pytest.raises(InvalidArgument) as info:
        call()
    return info.value.reason, [v.field for v in info.value.field_violations]


def test_stripe_sized_description_and_metadata_pass() -> None:
    request = upi_request(description="d" * 1000)
    request.metadata.update({f"key{i}": "v" * 500 for i in range(50)})
    validate_create_payment(request, max_amount_paisa=MAX)


def test_description_and_metadata_beyond_their_limits_are_named() -> None:
    request = upi_request(description="d" * 1001)
    request.metadata.update({f"key{i}": "v" for i in range(51)})
    found = violations(request)
    assert found["description"] == "must be at most 1000 characters"
    assert found["metadata"] == "must have at most 50 keys"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"description": f"card {PAN}"}, "description"),
        ({"user_id": PAN}, "user_id"),
        ({"callback_url": f"https://shop.example/return?card={PAN}"}, "callback_url"),
        ({"metadata": {"note": PAN}}, "metadata.note"),
        ({"metadata": {PAN: "x"}}, "metadata"),
        ({"holder_name": f"A {PAN}"}, "payment_details.card.holder_name"),
        ({"user_agent": PAN}, "device.user_agent"),
    ],
)
def test_a_card_number_in_any_free_text_of_a_payment_is_refused(
    change: dict[str, object], field: str
) -> None:
    request = upi_request()
    for name, value in change.items():
        if name == "metadata":
            request.metadata.update(value)  # type: ignore[call-overload]
        elif name == "holder_name":
            request.payment_details.card.holder_name = str(value)
        elif name == "user_agent":
            request.device.user_agent = str(value)
        else:
            setattr(request, name, value)
    assert reason(lambda: validate_create_payment(request, max_amount_paisa=MAX)) == (
        "CARD_DATA_IN_FREE_TEXT",
        [field],
    )


def test_the_card_fields_themselves_may_hold_the_card() -> None:
    request = payments_pb2.CreatePaymentRequest(
        amount_paisa=10000,
        currency="INR",
        payment_method=payments_pb2.CARD,
        payment_details=payments_pb2.PaymentDetails(
            card=payments_pb2.CardDetails(card_number=PAN, cvv="123", holder_name="Asha Rao")
        ),
    )
    validate_create_payment(request, max_amount_paisa=MAX)


# --- refunds, captures, cancels, EMI --------------------------------------------------------


def test_an_omitted_refund_amount_means_the_rest_and_zero_is_refused() -> None:
    validate_refund(payments_pb2.RefundPaymentRequest(payment_id="PAY_1"), max_amount_paisa=MAX)
    zero = payments_pb2.RefundPaymentRequest(payment_id="PAY_1", amount_paisa=0)
    assert reason(lambda: validate_refund(zero, max_amount_paisa=MAX)) == (
        "INVALID_FIELD",
        ["amount_paisa"],
    )


@pytest.mark.parametrize("amount", [-1, MAX + 1, 2_147_483_647])
def test_a_refund_amount_is_bounded(amount: int) -> None:
    request = payments_pb2.RefundPaymentRequest(payment_id="PAY_1", amount_paisa=amount)
    assert reason(lambda: validate_refund(request, max_amount_paisa=MAX))[1] == ["amount_paisa"]


def test_refund_reason_and_metadata_follow_the_free_text_rules() -> None:
    long = payments_pb2.RefundPaymentRequest(payment_id="PAY_1", reason="r" * 1001)
    assert reason(lambda: validate_refund(long, max_amount_paisa=MAX)) == (
        "INVALID_FIELD",
        ["reason"],
    )
    carded = payments_pb2.RefundPaymentRequest(
        payment_id="PAY_1", reason=PAN, metadata={"ticket": f"{PAN[:8]} {PAN[8:]}"}
    )
    assert reason(lambda: validate_refund(carded, max_amount_paisa=MAX)) == (
        "CARD_DATA_IN_FREE_TEXT",
        ["reason", "metadata.ticket"],
    )
    validate_refund(
        payments_pb2.RefundPaymentRequest(payment_id="PAY_1", reason="r" * 1000),
        max_amount_paisa=MAX,
    )


def test_an_omitted_capture_amount_means_all_and_zero_is_refused() -> None:
    validate_capture(payments_pb2.CapturePaymentRequest(payment_id="PAY_1"), max_amount_paisa=MAX)
    zero = payments_pb2.CapturePaymentRequest(payment_id="PAY_1", amount_paisa=0)
    assert reason(lambda: validate_capture(zero, max_amount_paisa=MAX))[1] == ["amount_paisa"]
    huge = payments_pb2.CapturePaymentRequest(payment_id="PAY_1", amount_paisa=MAX + 1)
    assert reason(lambda: validate_capture(huge, max_amount_paisa=MAX))[1] == ["amount_paisa"]


def test_a_cancel_reason_follows_the_free_text_rules() -> None:
    validate_cancel(payments_pb2.CancelPaymentRequest(payment_id="PAY_1", reason="r" * 1000))
    carded = payments_pb2.CancelPaymentRequest(payment_id="PAY_1", reason=f"card {PAN}")
    assert reason(lambda: validate_cancel(carded)) == ("CARD_DATA_IN_FREE_TEXT", ["reason"])


@pytest.mark.parametrize("amount", [0, -1, MAX + 1, 2_147_483_647])
def test_an_emi_query_amount_is_positive_and_bounded(amount: int) -> None:
    request = payments_pb2.ListEmiPlansRequest(amount_paisa=amount)
    assert reason(lambda: validate_emi_query(request, max_amount_paisa=MAX))[1] == ["amount_paisa"]


# --- saved cards and merchants --------------------------------------------------------------


def test_tokenize_refuses_a_card_number_outside_the_card_number_field() -> None:
    request = payment_methods_pb2.TokenizePaymentMethodRequest(
        user_id=PAN,
        type=payments_pb2.CARD,
        details=payments_pb2.CardDetails(card_number=PAN, holder_name=PAN),
        display_name=PAN,
    )
    assert reason(lambda: validate_tokenize(request)) == (
        "CARD_DATA_IN_FREE_TEXT",
        ["user_id", "details.holder_name", "display_name"],
    )


def test_a_user_id_in_a_path_is_required_bounded_and_card_free() -> None:
    validate_user_id("cust-42")
    assert reason(lambda: validate_user_id(""))[1] == ["user_id"]
    assert reason(lambda: validate_user_id("u" * 256))[1] == ["user_id"]
    assert reason(lambda: validate_user_id(PAN)) == ("CARD_DATA_IN_FREE_TEXT", ["user_id"])


def test_merchant_name_and_email_are_bounded_and_card_free() -> None:
    validate_create_merchant(merchants_pb2.CreateMerchantRequest(name="Chai Point"))
    long = merchants_pb2.CreateMerchantRequest(name="n" * 201, email=f"{'e' * 250}@x.in")
    assert reason(lambda: validate_create_merchant(long)) == ("INVALID_FIELD", ["name", "email"])
    carded = merchants_pb2.CreateMerchantRequest(name=f"Shop {PAN}")
    assert reason(lambda: validate_create_merchant(carded)) == (
        "CARD_DATA_IN_FREE_TEXT",
        ["name"],
    )
