"""Card data as types that validate on parse and cannot print themselves in clear.

`CardNumber` is the only way a PAN travels through our code: building one checks the digits,
the Luhn sum and the brand's length, and its `str`/`repr`/`format` show only the last four
digits, so a PAN that reaches a log line, an error or an f-string is masked by its type rather
than by every call site remembering to mask (hyperswitch's `CardNumber`, in Python). The clear
number is read only through `expose()`, a name that stands out in review. `Cvv` does the same
for the security code.

Every validator raises `gateway_core.errors.InvalidArgument` with field violations that name
the field (`card_number`, `expiry_month`, `expiry_year`, `cvv`, under an optional `prefix` such
as `payment_details.card`) and describe the rule; no message ever repeats the value.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from gateway_core.errors import FieldViolation, GatewayError, InvalidArgument
from gateway_core.pan import DIGIT_RUN
from gateway_core.pan import MAX_LENGTH as MAX_LENGTH
from gateway_core.pan import MIN_LENGTH as MIN_LENGTH
from gateway_core.pan import luhn_valid as luhn_valid
from gateway_core.pan import without_separators as without_separators


class CardBrand(StrEnum):
    """Card networks we accept; values are the API's enum names (`paygate.vault.v1.CardBrand`)."""

    VISA = "VISA"
    MASTERCARD = "MASTERCARD"
    RUPAY = "RUPAY"
    AMEX = "AMEX"
    DINERS = "DINERS"


# IIN (leading digits) ranges, inclusive: a number belongs to a range when its first
# len(str(first)) digits lie in [first, last]. No two ranges overlap (a unit test checks), so
# the first match is the only one. Sources: the networks' public acceptance guides; RuPay's
# ranges are NPCI's, minus nothing, as none of them meets a Visa (4) or Mastercard (51-55,
# 2221-2720) range. What this table deliberately leaves out: Discover (6011, 644-649, 65 is
# RuPay here, as Indian acquirers route it), Maestro (50, 56-69 except RuPay's), JCB outside
# the RuPay-JCB co-brand ranges 353 and 356, and UnionPay (62).
IIN_RANGES: tuple[tuple[int, int, CardBrand], ...] = (
    (4, 4, CardBrand.VISA),
    (51, 55, CardBrand.MASTERCARD),
    (2221, 2720, CardBrand.MASTERCARD),
    (34, 34, CardBrand.AMEX),
    (37, 37, CardBrand.AMEX),
    (300, 305, CardBrand.DINERS),
    (36, 36, CardBrand.DINERS),
    (38, 39, CardBrand.DINERS),
    (60, 60, CardBrand.RUPAY),
    (65, 65, CardBrand.RUPAY),
    (81, 82, CardBrand.RUPAY),
    (508, 508, CardBrand.RUPAY),
    (353, 353, CardBrand.RUPAY),
    (356, 356, CardBrand.RUPAY),
)

# Card number lengths each network issues (Visa's 13-digit cards are legacy but still valid).
LENGTHS: dict[CardBrand, tuple[int, ...]] = {
    CardBrand.VISA: (13, 16, 19),
    CardBrand.MASTERCARD: (16,),
    CardBrand.RUPAY: (16,),
    CardBrand.AMEX: (15,),
    CardBrand.DINERS: (14,),
}
CVV_LENGTH: dict[CardBrand, int] = {brand: 3 for brand in CardBrand} | {CardBrand.AMEX: 4}

# Issuer names by BIN (first six digits), for display only. This is the sandbox's table: the
# well-known test numbers every gateway's test mode accepts (4242424242424242, 5555555555554444,
# 4000000000000002, 4000000000009995, 4000000000003220, 4000008400001629, 378282246310005,
# 30569309025904) and a RuPay test BIN. Their outcomes (success, decline, insufficient funds,
# 3DS challenge...) are the sandbox's business, not this table's. A real deployment loads a
# licensed BIN database instead; an unknown BIN has issuer "".
SANDBOX_ISSUERS: dict[str, str] = {
    "424242": "PayGate Test Bank",
    "400000": "PayGate Sandbox Bank",
    "555555": "PayGate Test Bank",
    "222300": "PayGate Test Bank",
    "378282": "American Express Test",
    "305693": "Diners Club Test",
    "608001": "PayGate RuPay Test Bank",
}

MAX_EXPIRY_YEARS = 20


def _one_of(numbers: tuple[int, ...]) -> str:
    """(13, 16, 19) -> "13, 16 or 19"."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def field_name(name: str, prefix: str = "") -> str:
    """`card_number` or, under a prefix, `payment_details.card.card_number`."""
    return f"{prefix}.{name}" if prefix else name


def detect_brand(digits: str) -> CardBrand | None:
    """The network whose IIN range the number falls in, or None for networks we do not take."""
    for first, last, brand in IIN_RANGES:
        width = len(str(first))
        if len(digits) >= width and first <= int(digits[:width]) <= last:
            return brand
    return None


def issuer_for(bin6: str) -> str:
    """The issuing bank's display name for a BIN, or "" when the table does not know it."""
    return SANDBOX_ISSUERS.get(bin6, "")


def contains_card_number(text: str) -> bool:
    """True when free text carries a number that would pass as a card (grouped by spaces or
    dashes or not): for fields that must never hold one (holder names, user ids). A caller that
    puts a card number in the wrong field must not get it stored in clear.

    Only whole digit runs that parse as a CardNumber count, so phone numbers and order ids
    (which rarely pass Luhn, a known IIN range and that network's length together) are left alone.
    """
    for match in DIGIT_RUN.finditer(text):
        try:
            CardNumber(match.group())
        except InvalidArgument:
            continue
        return True
    return False


class CardNumber:
    """A validated primary account number that never prints itself in clear.

    `CardNumber(" 4242-4242 4242 4242 ")` strips spaces and dashes and raises InvalidArgument
    (field `card_number`, under `prefix`) unless the rest is 12-19 digits, passes Luhn, falls in
    a supported network's IIN range and has a length that network issues.
    """

    __slots__ = ("_brand", "_digits")

    _digits: str
    _brand: CardBrand

    def __init__(self, value: str, *, prefix: str = "") -> None:
        field = field_name("card_number", prefix)

        def bad(description: str, reason: str = "INVALID_CARD_NUMBER") -> InvalidArgument:
            return InvalidArgument.for_fields([FieldViolation(field, description)], reason=reason)

        digits = without_separators(value or "")
        if not digits:
            raise bad("is required")
        if not digits.isascii() or not digits.isdigit():
            raise bad("must contain only digits (spaces and dashes are ignored)")
        if not MIN_LENGTH <= len(digits) <= MAX_LENGTH:
            raise bad(f"must have {MIN_LENGTH} to {MAX_LENGTH} digits")
        if not luhn_valid(digits):
            raise bad("is not a valid card number (check digit mismatch)")
        brand = detect_brand(digits)
        if brand is None:
            raise bad(
                "belongs to a card network we do not accept "
                "(Visa, Mastercard, RuPay, Amex and Diners are accepted)",
                reason="CARD_BRAND_UNSUPPORTED",
            )
        if len(digits) not in LENGTHS[brand]:
            lengths = _one_of(LENGTHS[brand])
            raise bad(f"has the wrong length: {brand.value} card numbers have {lengths} digits")
        object.__setattr__(self, "_digits", digits)
        object.__setattr__(self, "_brand", brand)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CardNumber is immutable")

    @property
    def brand(self) -> CardBrand:
        return self._brand

    @property
    def last4(self) -> str:
        return self._digits[-4:]

    @property
    def bin(self) -> str:
        """The first six digits (the issuer identification number)."""
        return self._digits[:6]

    @property
    def issuer(self) -> str:
        return issuer_for(self.bin)

    @property
    def masked(self) -> str:
        """`**** **** **** 1111`, whatever the length: shows no more than the last four."""
        return f"**** **** **** {self.last4}"

    def expose(self) -> str:
        """The full number, for the one place that must have it (the vault's encryption)."""
        return self._digits

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"CardNumber({self._brand.value} {self.masked})"

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CardNumber):
            return NotImplemented
        return hmac.compare_digest(self._digits, other._digits)

    def __hash__(self) -> int:
        return hash((CardNumber, self._digits))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the clear number wherever the pickle goes (a cache, a queue).
        raise TypeError("a CardNumber cannot be pickled")

    def __copy__(self) -> CardNumber:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> CardNumber:
        return self


class Cvv:
    """A card security code that checked out for its brand; prints as `***`."""

    __slots__ = ("_digits",)

    _digits: str

    def __init__(self, value: str, brand: CardBrand | None = None, *, prefix: str = "") -> None:
        field = field_name("cvv", prefix)
        lengths = (CVV_LENGTH[brand],) if brand is not None else (3, 4)
        expected = _one_of(lengths)
        if not value:
            description = "is required"
        elif not (value.isascii() and value.isdigit() and len(value) in lengths):
            description = f"must be {expected} digits"
        else:
            object.__setattr__(self, "_digits", value)
            return
        raise InvalidArgument.for_fields([FieldViolation(field, description)], reason="INVALID_CVV")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Cvv is immutable")

    def expose(self) -> str:
        return self._digits

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Cvv(***)"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cvv):
            return NotImplemented
        return hmac.compare_digest(self._digits, other._digits)

    def __hash__(self) -> int:
        return hash((Cvv, self._digits))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Cvv cannot be pickled")

    def __copy__(self) -> Cvv:
        return self

    def __deepcopy__(self, memo: object) -> Cvv:
        return self


def validate_cvv(cvv: str, brand: CardBrand | None, *, prefix: str = "") -> Cvv:
    """The security code, checked for the brand's length (4 digits for Amex, else 3).

    With no brand (the number itself was invalid) either length passes, so a client fixing its
    card number is not also told about a CVV that may be right.
    """
    return Cvv(cvv, brand, prefix=prefix)


def validate_expiry(month: str, year: str, now: datetime, *, prefix: str = "") -> tuple[str, str]:
    """`("MM", "YYYY")` for an expiry that is this month or later.

    `month` is "1"-"12" (one or two digits); `year` is "25" or "2025". A card is valid through
    the last day of its expiry month, so "this month" has not expired yet. Both fields are
    checked, and both violations are reported together.
    """
    month_field = field_name("expiry_month", prefix)
    year_field = field_name("expiry_year", prefix)
    problems: list[FieldViolation] = []
    expired = False
    mm: int | None = None
    yyyy: int | None = None

    month = (month or "").strip()
    if not month:
        problems.append(FieldViolation(month_field, "is required"))
    elif not (month.isascii() and month.isdigit() and len(month) <= 2 and 1 <= int(month) <= 12):
        problems.append(FieldViolation(month_field, "must be a month from 01 to 12"))
    else:
        mm = int(month)

    year = (year or "").strip()
    if not year:
        problems.append(FieldViolation(year_field, "is required"))
    elif not (year.isascii() and year.isdigit() and len(year) in (2, 4)):
        problems.append(FieldViolation(year_field, "must be a year as YY or YYYY"))
    else:
        yyyy = int(year) + (2000 if len(year) == 2 else 0)
        if yyyy < now.year:
            problems.append(FieldViolation(year_field, "is in the past: the card has expired"))
            expired, yyyy = True, None
        elif yyyy > now.year + MAX_EXPIRY_YEARS:
            problems.append(
                FieldViolation(year_field, f"is more than {MAX_EXPIRY_YEARS} years away")
            )
            yyyy = None

    if mm is not None and yyyy is not None and (yyyy, mm) < (now.year, now.month):
        problems.append(FieldViolation(month_field, "is in the past: the card has expired"))
        expired = True
    if problems:
        reason = "CARD_EXPIRED" if expired and len(problems) == 1 else "INVALID_EXPIRY"
        raise InvalidArgument.for_fields(problems, reason=reason)
    assert mm is not None
    assert yyyy is not None
    return f"{mm:02d}", f"{yyyy:04d}"


@dataclass(frozen=True)
class ValidCard:
    """A card that passed every check: what a tokenization needs, safe to print."""

    number: CardNumber
    expiry_month: str  # "MM"
    expiry_year: str  # "YYYY"
    cvv: Cvv | None


_T = TypeVar("_T")


def validate_card(
    number: str,
    expiry_month: str,
    expiry_year: str,
    cvv: str,
    now: datetime,
    *,
    prefix: str = "",
    cvv_required: bool = False,
) -> ValidCard:
    """Every card field at once: one InvalidArgument listing all violations, so a client fixes
    its form in one round trip. An empty `cvv` is allowed unless `cvv_required`."""
    problems: list[FieldViolation] = []
    reasons: list[str] = []

    def attempt(check: Callable[[], _T]) -> _T | None:
        try:
            return check()
        except GatewayError as exc:
            problems.extend(exc.field_violations)
            reasons.append(exc.reason)
            return None

    card_number = attempt(lambda: CardNumber(number, prefix=prefix))
    expiry = attempt(lambda: validate_expiry(expiry_month, expiry_year, now, prefix=prefix))
    brand = card_number.brand if card_number is not None else None
    security_code = (
        attempt(lambda: validate_cvv(cvv, brand, prefix=prefix)) if cvv or cvv_required else None
    )
    if problems:
        raise InvalidArgument.for_fields(
            problems, reason=reasons[0] if len(reasons) == 1 else "INVALID_CARD"
        )
    assert card_number is not None
    assert expiry is not None
    return ValidCard(card_number, expiry[0], expiry[1], security_code)
