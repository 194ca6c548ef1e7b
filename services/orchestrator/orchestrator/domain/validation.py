"""Validation of merchant input: each rule names its field; all violations come back at once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from gateway_core.errors import FieldViolation, InvalidArgument
from orchestrator.domain.upi import is_valid_vpa
from paygate.payments.v1 import payments_pb2

SUPPORTED_CURRENCIES = frozenset({"INR"})
WALLETS = frozenset({"PAYTM", "PHONEPE", "GOOGLE_PAY", "AMAZON_PAY"})
_PHONE = re.compile(r"[6-9]\d{9}")
_BANK_CODE = re.compile(r"[A-Z]{4}")
MAX_EXPIRE_AFTER_SECONDS = 86_400
UPI_FLOWS = frozenset({"", "INTENT", "COLLECT"})
MAX_DESCRIPTION = 255
MAX_USER_ID = 255
MAX_URL = 2048
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500

# Records one violation: (field, rule it breaks).
Reporter = Callable[[str, str], None]


def validate_create_payment(
    request: payments_pb2.CreatePaymentRequest, *, max_amount_paisa: int
) -> None:
    """Raise InvalidArgument listing every field that breaks a rule; return if all is well."""
    problems: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        problems.append(FieldViolation(field, description))

    if request.amount_paisa <= 0:
        bad("amount_paisa", "must be a positive whole number of paisa")
    elif request.amount_paisa > max_amount_paisa:
        bad("amount_paisa", f"must not exceed {max_amount_paisa} paisa")

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

    if len(request.user_id) > MAX_USER_ID:
        bad("user_id", f"must be at most {MAX_USER_ID} characters")
    if len(request.description) > MAX_DESCRIPTION:
        bad("description", f"must be at most {MAX_DESCRIPTION} characters")
    if request.callback_url and not _is_http_url(request.callback_url):
        bad("callback_url", "must be an absolute http(s) URL of at most 2048 characters")
    _validate_metadata(request.metadata, bad)

    if problems:
        raise InvalidArgument.for_fields(problems)


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


def _validate_metadata(metadata: Mapping[str, str], bad: Reporter) -> None:
    items = dict(metadata)
    if len(items) > MAX_METADATA_KEYS:
        bad("metadata", f"must have at most {MAX_METADATA_KEYS} keys")
    for key, value in items.items():
        if not key or len(key) > MAX_METADATA_KEY:
            bad(f"metadata.{key}", f"keys must be 1-{MAX_METADATA_KEY} characters")
        if len(value) > MAX_METADATA_VALUE:
            bad(f"metadata.{key}", f"values must be at most {MAX_METADATA_VALUE} characters")


def _is_http_url(url: str) -> bool:
    if len(url) > MAX_URL:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
