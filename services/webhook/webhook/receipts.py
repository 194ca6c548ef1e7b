"""Email receipts: on `payment.success` and `refund.processed`, one email to the payment's
`metadata.customer_email`.

The content is plain data (`receipt_from_event`, `render_receipt`, no I/O): the merchant's name,
the payment id, the method (the VPA, or the card's brand and last four digits, never more), the
amount in rupees with Indian digit grouping (₹1,00,000.00) and the time in IST. `ReceiptIssuer`
is the event handler around it: it asks the orchestrator for the merchant's name and queues the
email (webhook.mail), keyed by the event id, so an event consumed twice sends one receipt. A
payment without a valid address gets no receipt, and nothing else changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jinja2
from babel.dates import format_datetime
from email_validator import EmailNotValidError, validate_email

from gateway_core.auth import MERCHANT_ID_KEY, ROLE_KEY
from gateway_core.errors import NotFound
from gateway_core.kafka import ConsumedEvent
from gateway_core.logging import get_logger
from gateway_core.money import format_inr
from paygate.merchants.v1 import merchants_pb2, merchants_pb2_grpc
from webhook.mail import queue_email

log = get_logger(__name__)

RECEIPT_EVENTS = frozenset({"payment.success", "refund.processed"})
CUSTOMER_EMAIL_KEY = "customer_email"
# India has one time zone and no daylight saving: a fixed offset needs no tz database.
IST = timezone(timedelta(hours=5, minutes=30), "IST")
ORCHESTRATOR_TIMEOUT_SECONDS = 5.0
_CARD_BRANDS = {
    "VISA": "Visa",
    "MASTERCARD": "Mastercard",
    "RUPAY": "RuPay",
    "AMEX": "American Express",
    "DINERS": "Diners Club",
}
_WALLETS = {
    "PAYTM": "Paytm",
    "PHONEPE": "PhonePe",
    "GOOGLE_PAY": "Google Pay",
    "AMAZON_PAY": "Amazon Pay",
}
_LAST_FOUR = re.compile(r"\d{4}")
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    # Merchant names and descriptions are the merchant's text: escaped in the HTML part.
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class MalformedEvent(ValueError):
    """A record that is not a usable payment or refund event (logged and skipped)."""


@dataclass(frozen=True)
class Receipt:
    """What one receipt says, from its event."""

    event_id: str
    kind: str  # "payment" or "refund"
    merchant_id: str
    payment_id: str
    refund_id: str
    amount_paisa: int
    method: str
    description: str
    at: datetime
    customer_email: str  # as given; checked by `customer_address`


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def receipt_from_event(document: dict[str, Any]) -> Receipt | None:
    """The receipt an event asks for, or None if its type gets none."""
    event_type = document.get("type")
    if event_type not in RECEIPT_EVENTS:
        return None
    try:
        payment: dict[str, Any] = document["payment"]
        refund: dict[str, Any] = document.get("refund") or {}
        kind = "refund" if event_type == "refund.processed" else "payment"
        if kind == "refund" and not refund.get("refund_id"):
            raise KeyError("refund")
        source = refund if kind == "refund" else payment
        receipt = Receipt(
            event_id=str(document["event_id"]),
            kind=kind,
            merchant_id=str(document["merchant_id"]),
            payment_id=str(payment["payment_id"]),
            refund_id=str(refund.get("refund_id", "")),
            amount_paisa=int(source["amount_paisa"]),
            method=describe_method(payment),
            description=str(payment.get("description", "")),
            at=_parse_time(
                source.get("processed_at") or document.get("occurred_at") or payment["updated_at"]
            ),
            customer_email=str((payment.get("metadata") or {}).get(CUSTOMER_EMAIL_KEY, "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvent(f"not a usable {event_type} event: {exc!r}") from None
    return receipt


def describe_method(payment: dict[str, Any]) -> str:
    """How the customer paid, safe to print: the VPA, the card's brand and last four digits,
    the wallet or the bank. Never more of a card than its last four."""
    method = payment.get("payment_method", "")
    details: dict[str, Any] = payment.get("payment_details") or {}
    if method == "UPI":
        vpa = str(details.get("vpa", ""))
        return f"UPI ({vpa})" if vpa else "UPI"
    if method == "CARD":
        card: dict[str, Any] = payment.get("card") or {}
        brand = _CARD_BRANDS.get(str(card.get("brand", "")).upper(), "Card")
        last4 = str(card.get("last4", ""))
        return f"{brand} card ending {last4}" if _LAST_FOUR.fullmatch(last4) else f"{brand} card"
    if method == "WALLET":
        wallet = str(details.get("wallet", ""))
        return f"{_WALLETS.get(wallet, 'Wallet')} wallet"
    if method == "NET_BANKING":
        bank = str(details.get("bank_code", ""))
        return f"Net banking ({bank})" if bank else "Net banking"
    return "Other"


def rupees(amount_paisa: int) -> str:
    """₹ with Indian digit grouping: 10000000 paisa is ₹1,00,000.00."""
    return format_inr(amount_paisa)


def ist(at: datetime) -> str:
    """`5 Dec 2026, 11:43 pm IST`."""
    text = format_datetime(at.astimezone(IST), "d MMM yyyy, h:mm a", locale="en_IN")
    return f"{text} IST"


def customer_address(receipt: Receipt) -> str | None:
    """The normalized address to send to, or None when there is none or it is not an address."""
    given = receipt.customer_email.strip()
    if not given:
        return None
    try:
        checked = validate_email(given, check_deliverability=False)
    except EmailNotValidError:
        return None
    normalized: str = checked.normalized
    return normalized


def render_receipt(receipt: Receipt, merchant_name: str) -> RenderedEmail:
    amount = rupees(receipt.amount_paisa)
    # A header must stay one line whatever the merchant's name holds.
    merchant = " ".join(merchant_name.split()) or "your merchant"
    if receipt.kind == "refund":
        heading = "Refund processed"
        subject = f"Refund of {amount} from {merchant}"
    else:
        heading = "Payment successful"
        subject = f"Receipt for your payment of {amount} to {merchant}"
    values = {
        "kind": receipt.kind,
        "heading": heading,
        "merchant_name": merchant,
        "amount": amount,
        "payment_id": receipt.payment_id,
        "refund_id": receipt.refund_id,
        "method": receipt.method,
        "when": ist(receipt.at),
        "description": receipt.description,
    }
    return RenderedEmail(
        subject=subject,
        text=_TEMPLATES.get_template("receipt.txt").render(values),
        html=_TEMPLATES.get_template("receipt.html").render(values),
    )


class MerchantNames:
    """Merchants' display names from the orchestrator (never from its tables), asked as the
    merchant itself."""

    def __init__(self, orchestrator: grpc.aio.Channel) -> None:
        self._merchants = merchants_pb2_grpc.MerchantServiceStub(orchestrator)

    async def name(self, merchant_id: str) -> str:
        merchant: merchants_pb2.Merchant = await self._merchants.GetMerchant(
            merchants_pb2.GetMerchantRequest(merchant_id=merchant_id),
            metadata=((MERCHANT_ID_KEY, merchant_id), (ROLE_KEY, "merchant")),
            timeout=ORCHESTRATOR_TIMEOUT_SECONDS,
        )
        return merchant.name


class ReceiptIssuer:
    """The `payments.events` handler that queues receipts (run by a group consumer)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        merchants: MerchantNames,
        *,
        queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._merchants = merchants
        self._queued = queued

    async def handle(self, event: ConsumedEvent) -> None:
        try:
            receipt = receipt_from_event(json.loads(event.value))
        except (ValueError, AttributeError) as exc:
            log.warning("no receipt: malformed event", offset=event.offset, error=str(exc))
            return
        if receipt is None:
            return
        address = customer_address(receipt)
        if address is None:
            log.info(
                "no receipt: the payment has no valid metadata.customer_email",
                payment_id=receipt.payment_id,
                event_id=receipt.event_id,
            )
            return
        try:
            merchant_name = await self._merchants.name(receipt.merchant_id)
        except NotFound:
            log.warning("no receipt: unknown merchant", merchant_id=receipt.merchant_id)
            return
        email = render_receipt(receipt, merchant_name)
        async with self._pool.acquire() as conn:
            queued = await queue_email(
                conn,
                dedupe_key=receipt.event_id,
                to=address,
                subject=email.subject,
                text=email.text,
                html=email.html,
            )
        if not queued:
            log.info(
                "receipt already queued for this event",
                payment_id=receipt.payment_id,
                event_id=receipt.event_id,
            )
            return
        log.info("receipt queued", payment_id=receipt.payment_id, event_id=receipt.event_id)
        self._queued()


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str) or not value:
        raise ValueError("no timestamp")
    # proto3 JSON writes up to nanoseconds; fromisoformat takes at most microseconds.
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
