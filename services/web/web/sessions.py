"""Checkout sessions as plain data: what a valid request is, what a session looks like, and the
signature a merchant's server checks on the customer's return. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from email_validator import EmailNotValidError, validate_email

from gateway_core.cards import contains_card_number
from gateway_core.errors import FieldViolation, InvalidArgument

SESSION_PREFIX = "CS_"
# 32 random bytes: the session id is the page's only credential, so it must be unguessable.
_SESSION_RANDOM_BYTES = 32
_SESSION_ID = re.compile(r"^CS_[A-Za-z0-9_-]{43}$")

METHODS = ("UPI", "CARD", "WALLET", "NET_BANKING")
DEFAULT_EXPIRY = timedelta(minutes=15)
MIN_EXPIRY = timedelta(minutes=5)
MAX_EXPIRY = timedelta(hours=24)
MAX_DESCRIPTION = 1000
MAX_NAME = 100
MAX_URL = 2048
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
_PHONE = re.compile(r"^(?:\+91)?[6-9]\d{9}$")

# The payment's metadata key that names its session (a payment made on the page carries it).
SESSION_METADATA_KEY = "checkout_session_id"
# Metadata keys the session sets on its payment itself; a merchant's own would be overwritten.
RESERVED_METADATA_KEYS = frozenset({SESSION_METADATA_KEY, "customer_email"})

EVENT_COMPLETED = "checkout.session.completed"
EVENT_EXPIRED = "checkout.session.expired"


class Status(StrEnum):
    OPEN = "OPEN"
    COMPLETE = "COMPLETE"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Customer:
    name: str = ""
    email: str = ""
    phone: str = ""


@dataclass(frozen=True)
class NewSession:
    """A validated create request."""

    amount_paisa: int
    currency: str
    description: str
    customer: Customer
    methods: tuple[str, ...]
    return_url: str
    metadata: dict[str, str]
    expires_in: timedelta

    def digest(self) -> str:
        """What an idempotent retry must repeat exactly."""
        document = {
            "amount_paisa": self.amount_paisa,
            "currency": self.currency,
            "description": self.description,
            "customer": [self.customer.name, self.customer.email, self.customer.phone],
            "methods": list(self.methods),
            "return_url": self.return_url,
            "metadata": self.metadata,
            "expires_in": self.expires_in.total_seconds(),
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    checkout_session_id: str
    merchant_id: str
    status: Status
    amount_paisa: int
    currency: str
    description: str
    customer: Customer
    methods: tuple[str, ...]
    return_url: str
    metadata: dict[str, str]
    payment_id: str
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def is_open_at(self, now: datetime) -> bool:
        return self.status is Status.OPEN and now < self.expires_at

    def payment_metadata(self) -> dict[str, str]:
        """The metadata of a payment made on the page: the merchant's, plus the session's id
        and the customer's email (the receipt goes there)."""
        metadata = dict(self.metadata) | {SESSION_METADATA_KEY: self.checkout_session_id}
        if self.customer.email:
            metadata["customer_email"] = self.customer.email
        return metadata


def new_session_id() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(_SESSION_RANDOM_BYTES)


def looks_like_session_id(text: str) -> bool:
    return bool(_SESSION_ID.fullmatch(text))


def validate_new_session(
    *,
    amount_paisa: int,
    currency: str,
    description: str,
    customer: Customer,
    methods: list[str],
    return_url: str,
    metadata: dict[str, str],
    expire_after_seconds: int,
    max_amount_paisa: int,
) -> NewSession:
    """The request as a NewSession, or InvalidArgument naming every bad field at once."""
    problems: list[FieldViolation] = []

    def bad(name: str, description: str) -> None:
        problems.append(FieldViolation(name, description))

    if amount_paisa <= 0:
        bad("amount_paisa", "must be a positive whole number of paisa")
    elif amount_paisa > max_amount_paisa:
        bad("amount_paisa", f"must be at most {max_amount_paisa} paisa")
    currency = currency.strip().upper()
    if currency != "INR":
        bad("currency", 'must be "INR" (the only currency accepted today)')
    if len(description) > MAX_DESCRIPTION:
        bad("description", f"must be at most {MAX_DESCRIPTION} characters")
    elif contains_card_number(description):
        bad("description", "must not contain a card number")
    name = customer.name.strip()
    if len(name) > MAX_NAME:
        bad("customer.name", f"must be at most {MAX_NAME} characters")
    elif contains_card_number(name):
        bad("customer.name", "must not contain a card number")
    email = customer.email.strip()
    if email:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            bad("customer.email", f"is not an email address ({exc})")
    phone = customer.phone.replace(" ", "").replace("-", "")
    if phone and not _PHONE.fullmatch(phone):
        bad("customer.phone", "must be a 10-digit Indian mobile number, optionally with +91")
    chosen = tuple(methods) or METHODS
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        bad("methods", f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    elif len(set(chosen)) != len(chosen):
        bad("methods", "names a method twice")
    url_problem = _url_problem(return_url)
    if url_problem:
        bad("return_url", url_problem)
    if len(metadata) > MAX_METADATA_KEYS:
        bad("metadata", f"must have at most {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if key in RESERVED_METADATA_KEYS:
            bad(f"metadata.{key}", "is set by the checkout session itself")
        elif not key or len(key) > MAX_METADATA_KEY:
            bad("metadata", f"keys must be 1 to {MAX_METADATA_KEY} characters")
        elif len(value) > MAX_METADATA_VALUE:
            bad(f"metadata.{key}", f"must be at most {MAX_METADATA_VALUE} characters")
        elif contains_card_number(value) or contains_card_number(key):
            bad(f"metadata.{key}", "must not contain a card number")
    expires_in = DEFAULT_EXPIRY
    if expire_after_seconds:
        expires_in = timedelta(seconds=expire_after_seconds)
        if not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
            bad(
                "expire_after_seconds",
                f"must be between {int(MIN_EXPIRY.total_seconds())} (5 minutes) and "
                f"{int(MAX_EXPIRY.total_seconds())} (24 hours)",
            )
    if problems:
        raise InvalidArgument.for_fields(problems)
    return NewSession(
        amount_paisa=amount_paisa,
        currency=currency,
        description=description,
        customer=Customer(name=name, email=email, phone=phone),
        methods=chosen,
        return_url=return_url,
        metadata=dict(metadata),
        expires_in=expires_in,
    )


def _url_problem(url: str) -> str | None:
    if not url:
        return "is required: where the customer goes after paying"
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.username or parts.password:
        return "must not contain user:password@"
    return None


def return_signature(secret: str, checkout_session_id: str, payment_id: str) -> str:
    """Hex HMAC-SHA256 of "<checkout_session_id>|<payment_id>" keyed by the merchant's
    callback secret (its UTF-8 bytes, as `GET /api/v1/callback-secret` returns it)."""
    message = f"{checkout_session_id}|{payment_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def return_location(session: Session, payment_id: str, secret: str) -> str:
    """The merchant's return_url with the payment, the session and the signature added."""
    parts = urlsplit(session.return_url)
    query = [
        *parse_qsl(parts.query, keep_blank_values=True),
        ("checkout_session_id", session.checkout_session_id),
        ("payment_id", payment_id),
        ("signature", return_signature(secret, session.checkout_session_id, payment_id)),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))
