"""Validation of merchant input: each rule names its field; all violations come back at once.

Every request the orchestrator's public API takes is checked here, before any arithmetic, any
provider call and any idempotency record; the limits themselves live in `gateway_core.limits`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from gateway_core import limits
from gateway_core.limits import FieldProblems
from orchestrator.connectors.registry import CONNECTOR_TYPES, MANUAL_CAPTURE_METHODS, METHODS
from orchestrator.connectors.upi.link import is_valid_vpa
from orchestrator.servicers.wire import details_input
from paygate.merchants.v1 import merchants_pb2
from paygate.payments.v1 import payment_methods_pb2, payments_pb2

SUPPORTED_CURRENCIES = frozenset({"INR"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_MCC = re.compile(r"\d{4}")
MAX_EXPIRE_AFTER_SECONDS = 86_400
_METHOD_NAMES = {number: name for name, number in payments_pb2.PaymentMethod.items()}


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

    # Each method's details are its connector's to check (connectors/<method>/).
    connector = CONNECTOR_TYPES.get(_METHOD_NAMES.get(request.payment_method, ""))
    if connector is None:
        bad("payment_method", f"is required: one of {', '.join(METHODS)}")
    else:
        connector.validate_details(details_input(request.payment_details), bad)

    manual = request.capture_method == payments_pb2.Payment.MANUAL
    if manual and (connector is None or not connector.manual_capture):
        bad(
            "capture_method",
            f"MANUAL capture is available for {' and '.join(MANUAL_CAPTURE_METHODS)} payments only",
        )
    if request.payment_details.emi_plan_id and (connector is None or not connector.offers_emi):
        emi_methods = " and ".join(m for m, c in CONNECTOR_TYPES.items() if c.offers_emi)
        bad("payment_details.emi_plan_id", f"EMI is available for {emi_methods} payments only")
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


def _validate_url(field: str, url: str, problems: FieldProblems) -> None:
    if not url:
        return
    problems.text(field, url, limits.MAX_URL_CHARS)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.add(field, "must be an absolute http(s) URL")
