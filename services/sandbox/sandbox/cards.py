"""Card data as the simulated acquirers and ACS see it, and the one place that touches the PAN.

The orchestrator sends the card in the clear (detokenized from the vault for that one call).
`read_card` checks it and keeps only what may be kept and shown: brand, last four digits, a
keyed fingerprint to recognise the same card again, the expiry, whether the CVV has the right
length, and the magic outcome the number stands for. The PAN and the CVV themselves are
dropped there: no state, log line or error message of the sandbox holds them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gateway_core.cards import (
    CVV_LENGTH,
    MAX_LENGTH,
    MIN_LENGTH,
    detect_brand,
    luhn_valid,
    without_separators,
)
from sandbox.magic import CardOutcome, card_outcome
from sandbox.validation import Violations

# Per process: fingerprints only compare cards within one sandbox run, and reveal nothing.
_FINGERPRINT_KEY = secrets.token_bytes(32)
_DIGITS = re.compile(r"\d+")


class CardFields(Protocol):
    """A card as a request carries it (paygate.sandbox.v1.CardDetails is one)."""

    @property
    def card_number(self) -> str: ...
    @property
    def expiry_month(self) -> str: ...
    @property
    def expiry_year(self) -> str: ...
    @property
    def cvv(self) -> str: ...


@dataclass(frozen=True)
class Card:
    brand: str  # VISA, MASTERCARD, AMEX, DINERS, RUPAY or UNKNOWN
    last4: str
    fingerprint: str
    expiry_month: int
    expiry_year: int
    # True when no CVV was sent (the vault no longer holds it) or it has the brand's length.
    cvv_ok: bool
    outcome: CardOutcome

    @property
    def masked(self) -> str:
        return f"**** {self.last4}"

    def expired(self, now: float) -> bool:
        """A card is valid through the last day of its expiry month."""
        moment = datetime.fromtimestamp(now, UTC)
        return (moment.year, moment.month) > (self.expiry_year, self.expiry_month)


def brand_of(digits: str) -> str:
    """The network by the number's IIN (gateway_core.cards' table), or UNKNOWN: the simulated
    acquirers take any Luhn-valid number, networks the gateway accepts or not."""
    brand = detect_brand(digits)
    return brand.value if brand is not None else "UNKNOWN"


def fingerprint(digits: str) -> str:
    return hmac.new(_FINGERPRINT_KEY, digits.encode(), hashlib.sha256).hexdigest()


def card_number_problem(card_number: str) -> str:
    """Why `card_number` cannot be a card number ("" when it can); never quotes the number."""
    digits = without_separators(card_number)
    if not digits:
        return "is required"
    if not _DIGITS.fullmatch(digits) or not MIN_LENGTH <= len(digits) <= MAX_LENGTH:
        return f"must be {MIN_LENGTH} to {MAX_LENGTH} digits"
    if not luhn_valid(digits):
        return "is not a valid card number (Luhn check failed)"
    return ""


def read_card(problems: Violations, details: CardFields, prefix: str) -> Card | None:
    """The card, or None with `problems` saying which fields are malformed. An expired card or
    a CVV of the wrong length is well-formed: the issuer declines it, the request is valid."""
    found = len(problems)
    number_problem = card_number_problem(details.card_number)
    if number_problem:
        problems.add(f"{prefix}.card_number", number_problem)
    month = _number(details.expiry_month, (1, 2))
    if month is None or not 1 <= month <= 12:
        problems.add(f"{prefix}.expiry_month", 'must be "01" to "12"')
    year = _number(details.expiry_year, (2, 4))
    if year is None:
        problems.add(f"{prefix}.expiry_year", 'must be two or four digits, e.g. "30" or "2030"')
    if len(problems) != found or month is None or year is None:
        return None
    digits = without_separators(details.card_number)
    network = detect_brand(digits)
    cvv_length = CVV_LENGTH[network] if network is not None else 3
    cvv = details.cvv
    return Card(
        brand=brand_of(digits),
        last4=digits[-4:],
        fingerprint=fingerprint(digits),
        expiry_month=month,
        expiry_year=year + 2000 if year < 100 else year,
        cvv_ok=not cvv or (len(cvv) == cvv_length and cvv.isascii() and cvv.isdigit()),
        outcome=card_outcome(digits),
    )


def _number(value: str, lengths: tuple[int, ...]) -> int | None:
    text = value.strip()
    if len(text) not in lengths or not text.isascii() or not text.isdigit():
        return None
    return int(text)
