"""Amounts are integers in paisa everywhere; rupees exist only as text at the edges.

Only integer arithmetic is used: a float cannot represent most paisa amounts exactly.
"""

from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import format_currency

from gateway_core.errors import invalid_field

PAISA_PER_RUPEE = 100
_RUPEES = re.compile(r"^(-?)(\d+)(?:\.(\d{1,2}))?$")


def rupees_string(paisa: int) -> str:
    """10050 -> "100.50"; -5 -> "-0.05"."""
    sign = "-" if paisa < 0 else ""
    rupees, rest = divmod(abs(paisa), PAISA_PER_RUPEE)
    return f"{sign}{rupees}.{rest:02d}"


def format_inr(paisa: int) -> str:
    """₹ with Indian digit grouping, for people: 10000000 paisa is ₹1,00,000.00."""
    return str(format_currency(Decimal(paisa) / PAISA_PER_RUPEE, "INR", locale="en_IN"))


def paisa_from_rupees(text: str) -> int:
    """Parse "100.5" as 10050 paisa: the reverse of `rupees_string`, for settlement files."""
    match = _RUPEES.match(text.strip())
    if match is None:
        raise ValueError(f"not a rupee amount with at most 2 decimals: {text!r}")
    sign, rupees, fraction = match.groups()
    paisa = int(rupees) * PAISA_PER_RUPEE + int((fraction or "0").ljust(2, "0"))
    return -paisa if sign else paisa


def check_positive_paisa(
    amount: int, field: str = "amount_paisa", maximum: int | None = None
) -> int:
    """The amount if it is above zero and at most `maximum`; else InvalidArgument on `field`."""
    if amount <= 0:
        raise invalid_field(field, "must be greater than 0", reason="AMOUNT_NOT_POSITIVE")
    if maximum is not None and amount > maximum:
        raise invalid_field(field, f"must be at most {maximum} paisa", reason="AMOUNT_TOO_LARGE")
    return amount


def check_non_negative_paisa(amount: int, field: str) -> int:
    """For amounts that may be zero (fees, discounts): InvalidArgument on `field` if negative."""
    if amount < 0:
        raise invalid_field(field, "must not be negative", reason="AMOUNT_NEGATIVE")
    return amount
