"""A card number (PAN) as digits: the Luhn check, the lengths, how one is grouped and how one
shows in free text.

The bottom layer of the card primitives. gateway_core.cards builds `CardNumber` on it (and
re-exports `luhn_valid`, the name callers use); gateway_core.masking uses it to recognise a
card number in a log line or an error. It imports nothing of ours, because masking sits below
gateway_core.errors, which gateway_core.cards needs: importing cards from masking would be a
cycle.
"""

from __future__ import annotations

import re

# Card numbers have 12 to 19 digits (ISO/IEC 7812).
MIN_LENGTH = 12
MAX_LENGTH = 19

# What card numbers are grouped by when written ("4242 4242 4242 4242", "4242-4242-...").
_SEPARATORS = re.compile(r"[ -]")

# MIN_LENGTH or more digits, maybe grouped by single spaces or dashes, not inside a longer
# run. Longer runs count too: a PAN glued to its CVV or expiry must still be caught.
DIGIT_RUN = re.compile(rf"(?<!\d)\d(?:[ -]?\d){{{MIN_LENGTH - 1},}}(?!\d)")


def without_separators(text: str) -> str:
    """`text` without the spaces and dashes a card number may be grouped by."""
    return _SEPARATORS.sub("", text)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every card number passes; `digits` holds digits only."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
