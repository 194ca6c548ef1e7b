"""Validation of merchant input: each rule names its field; all violations come back at once.

Every request the orchestrator's public API takes is checked here, before any arithmetic, any
provider call and any idempotency record; the limits themselves live in `gateway_core.limits`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from gateway_core import limits
from gateway_core.limits import FieldProblems
from orchestrator.domain.upi import is_valid_vpa
from paygate.merchants.v1 import merchants_pb2
from paygate.payments.v1 import payment_methods_pb2, payments_pb2

SUPPORTED_CURRENCIES = frozenset({"INR"})
WALLETS = frozenset({"PAYTM", "PHONEPE", "GOOGLE_PAY", "AMAZON_PAY"})
_PHONE = re.compile(r"[6-9]\d{9}")
_BANK_CODE = re.compile(r"[A-Z]{4}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_MCC = re.compile(r"\d{4}")
MAX_EXPIRE_AFTER_SECONDS = 86_400
UPI_FLOWS = frozenset({"", "INTENT", "COLLECT"})

# Records one violation: (field, rule it breaks).
Reporter = Callable[[str, str], None]


def validate_create_payment(
    request: payments_pb2.CreatePaymentRequest, *, max_amount_paisa: int
) -> None:
    """Raise InvalidArgument listing every field that breaks a rule; return if all is well."""
    problems = FieldProblems()
    bad = problems.add

    problems.amount("amount_paisa", request.amount_paisa, max_amount_paisa)

    if not request.currency:
        bad("currency", "is required (ISO 4217 code, e.g. INR)")
    elif request.currency not in SUPPORTED_CURRENCIES:
        bad("currency", f"must be INR; {request.currency!r} is not supported")

    method = request.payment_method
    if method == payments_pb2.PAYMENT_METHOD_UNSPECIFIED:
        bad("payment_method", "is required: one of UPI, CARD, WALLET, NET_BANKING")
    elif method == payments_pb2.UPI:
        _validate_upi(request.payment_details, bad)
    elif method == payments_pb2.WALLET:
        _validate_wallet(request.payment_details, bad)
    elif method == payments_pb2.NET_BANKING:
        _validate_net_banking(request.payment_details, bad)
    elif method == payments_pb2.CARD:
        _validate_card(request.payment_details, bad)

    manual = request.capture_method == payments_pb2.Payment.MANUAL
    if manual and method not in (payments_pb2.WALLET, payments_pb2.CARD):
        bad("capture_method", "MANUAL capture is available for CARD and WALLET payments only")
    if request.payment_details.emi_plan_id and method != payments_pb2.CARD:
        bad("payment_details.emi_plan_id", "EMI is available for CARD payments only")
    if not 0 <= request.expire_after_seconds <= MAX_EXPIRE_AFTER_SECONDS:
        bad("expire_after_seconds", f"must be between 1 and {MAX_EXPIRE_AFTER_SECONDS}")

    # Free text: bounded, and never a place for card data (the card's own fields are).
    problems.text(
        "payment_details.card.holder_name",
        request.payment_details.card.holder_name,
        limits.MAX_HOLDER_NAME_CHARS,
    )
    problems.text("user_id", request.user_id, limits.MAX_USER_ID_CHARS)
    problems.text("description", request.description, limits.MAX_DESCRIPTION_CHARS)
    _validate_url("callback_url", request.callback_url, problems)
    problems.metadata("metadata", request.metadata)
    device = request.device
    problems.text(
        "device.fingerprint_id", device.fingerprint_id, limits.MAX_DEVICE_FINGERPRINT_CHARS
    )
    problems.text("device.user_agent", device.user_agent, limits.MAX_USER_AGENT_CHARS)
    problems.text("device.ip_address", device.ip_address, limits.MAX_IP_ADDRESS_CHARS)

    problems.raise_if_any()


def validate_refund(request: payments_pb2.RefundPaymentRequest, *, max_amount_paisa: int) -> None:
    """An omitted amount means "everything still refundable"; a given one, 0 included, is
    checked like any amount."""
    problems = FieldProblems()
    if request.HasField("amount_paisa"):
        problems.amount("amount_paisa", request.amount_paisa, max_amount_paisa)
    problems.text("reason", request.reason, limits.MAX_REASON_CHARS)
    problems.metadata("metadata", request.metadata)
    problems.raise_if_any()


def validate_capture(request: payments_pb2.CapturePaymentRequest, *, max_amount_paisa: int) -> None:
    """An omitted amount means "the authorized amount"; a given one, 0 included, is checked."""
    problems = FieldProblems()
    if request.HasField("amount_paisa"):
        problems.amount("amount_paisa", request.amount_paisa, max_amount_paisa)
    problems.raise_if_any()


def validate_cancel(request: payments_pb2.CancelPaymentRequest) -> None:
    problems = FieldProblems()
    problems.text("reason", request.reason, limits.MAX_REASON_CHARS)
    problems.raise_if_any()


def validate_emi_query(request: payments_pb2.ListEmiPlansRequest, *, max_amount_paisa: int) -> None:
    """No payment above the ceiling can use a plan, and the plans' totals must fit the API."""
    problems = FieldProblems()
    problems.amount("amount_paisa", request.amount_paisa, max_amount_paisa)
    problems.raise_if_any()


def validate_tokenize(request: payment_methods_pb2.TokenizePaymentMethodRequest) -> None:
    """The fields around the card; the card's own fields are the vault's to check."""
    problems = FieldProblems()
    _check_user_id(request.user_id, problems)
    if request.type != payments_pb2.CARD:
        problems.add("type", "must be CARD (the only method saved today)")
    if not request.details.card_number:
        problems.add("details.card_number", "is required")
    problems.text("details.holder_name", request.details.holder_name, limits.MAX_HOLDER_NAME_CHARS)
    # Ignored on input, but a card number in it is still the caller's mistake to hear about.
    problems.text("display_name", request.display_name, limits.MAX_DISPLAY_NAME_CHARS)
    problems.raise_if_any()


def validate_user_id(user_id: str) -> None:
    """A saved-methods path's `user_id`: required, bounded, no card number."""
    problems = FieldProblems()
    _check_user_id(user_id, problems)
    problems.raise_if_any()


def validate_create_merchant(request: merchants_pb2.CreateMerchantRequest) -> None:
    problems = FieldProblems()
    name = request.name.strip()
    if not name:
        problems.add("name", "is required")
    else:
        problems.text("name", name, limits.MAX_MERCHANT_NAME_CHARS)
    if request.email:
        problems.text("email", request.email, limits.MAX_EMAIL_CHARS)
        if not _EMAIL.fullmatch(request.email):
            problems.add("email", "must be an email address")
    if request.vpa and not is_valid_vpa(request.vpa):
        problems.add("vpa", "must look like name@handle")
    if request.category and not _MCC.fullmatch(request.category):
        problems.add("category", "must be a 4-digit merchant category code")
    problems.raise_if_any()


def _check_user_id(user_id: str, problems: FieldProblems) -> None:
    if not user_id:
        problems.add("user_id", "is required")
    else:
        problems.text("user_id", user_id, limits.MAX_USER_ID_CHARS)


def _validate_upi(details: payments_pb2.PaymentDetails, bad: Reporter) -> None:
    if not details.vpa:
        bad("payment_details.vpa", "is required for UPI payments")
    elif not is_valid_vpa(details.vpa):
        bad("payment_details.vpa", "must look like name@handle (e.g. user@okbank)")
    if details.upi_flow not in UPI_FLOWS:
        bad("payment_details.upi_flow", "must be INTENT or COLLECT")


def _validate_wallet(details: payments_pb2.PaymentDetails, bad: Reporter) -> None:
    if not details.wallet:
        bad("payment_details.wallet", f"is required: one of {', '.join(sorted(WALLETS))}")
    elif details.wallet not in WALLETS:
        bad("payment_details.wallet", f"unknown wallet; one of {', '.join(sorted(WALLETS))}")
    if not _PHONE.fullmatch(details.phone):
        bad("payment_details.phone", "must be a 10-digit Indian mobile number")


def _validate_net_banking(details: payments_pb2.PaymentDetails, bad: Reporter) -> None:
    if not _BANK_CODE.fullmatch(details.bank_code):
        bad("payment_details.bank_code", "must be a 4-letter bank code, e.g. HDFC, ICIC, SBIN")


def _validate_card(details: payments_pb2.PaymentDetails, bad: Reporter) -> None:
    # The card's own fields (Luhn, expiry, CVV) are checked by the vault, which alone may
    # look at them; here only which of the two ways to pay by card was chosen.
    has_card = bool(details.card.card_number)
    if has_card == bool(details.card_token):
        bad("payment_details", "give exactly one of card (card details) or card_token")


def _validate_url(field: str, url: str, problems: FieldProblems) -> None:
    if not url:
        return
    problems.text(field, url, limits.MAX_URL_CHARS)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.add(field, "must be an absolute http(s) URL")
