"""Card data never leaves a process in clear: one pure function masks PANs and drops CVVs.

Logging runs every event through `mask_sensitive`, and error statuses run their messages through
it, so PCI safety does not depend on every call site remembering to mask.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway_core.pan import DIGIT_RUN, MAX_LENGTH, MIN_LENGTH, luhn_valid, without_separators

REDACTED = "[REDACTED]"

# Compared after lower-casing and dropping separators, so cardNumber, card-number and
# CARD_NUMBER all match.
_SECRET_KEYS = frozenset(
    {
        "cardnumber",
        "pan",
        "primaryaccountnumber",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "cvn",
        "securitycode",
        "cardsecuritycode",
    }
)
_KEY_SEPARATORS = re.compile(r"[^a-z0-9]")


def mask_sensitive(value: Any) -> Any:
    """Return a copy of `value` in which no full card number or security code is left.

    Strings keep only the last four digits of any long digit run (`************1111`); mapping
    entries whose key names card data become "[REDACTED]"; containers are walked recursively;
    unknown objects are rendered with `str()` and masked, because a renderer would print them
    anyway.
    """
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, str):
        # Every run of card-number length or longer, Luhn-valid or not.
        return DIGIT_RUN.sub(_mask_run, value)
    if isinstance(value, int):
        # Integers are ids, amounts and epoch timestamps far more often than cards: only a
        # Luhn-valid PAN-length number is treated as a card (its sign is not a digit).
        digits = str(abs(value))
        if not (MIN_LENGTH <= len(digits) <= MAX_LENGTH and luhn_valid(digits)):
            return value
        return ("-" if value < 0 else "") + _mask_digits(digits)
    if isinstance(value, Mapping):
        return {
            mask_sensitive(k): REDACTED if _is_secret_key(k) else mask_sensitive(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_sensitive(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return mask_sensitive(bytes(value).decode("utf-8", errors="replace"))
    return mask_sensitive(str(value))


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _KEY_SEPARATORS.sub("", key.lower()) in _SECRET_KEYS


def _mask_run(match: re.Match[str]) -> str:
    return _mask_digits(without_separators(match.group()))


def _mask_digits(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]
