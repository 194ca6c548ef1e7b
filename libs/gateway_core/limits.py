"""Limits on what clients send: amounts, the size of every free-text field and map, and the rule
that free text never carries a card number. One home for them, so every service and the README
agree.

Sizes follow Stripe's where Stripe has one: metadata holds at most 50 keys of up to 40
characters, with values of up to 500; descriptions and reasons hold up to 1,000 characters.
Lengths count characters (Unicode code points), not bytes.

A free-text field whose value parses as a card number (`gateway_core.cards.contains_card_number`)
is refused with reason `CARD_DATA_IN_FREE_TEXT`: stored outside the vault, a PAN would put that
table, its backups, the events and every consumer in PCI scope. The violation names the field
(for a metadata key, only `metadata`) and never repeats the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway_core.cards import contains_card_number
from gateway_core.errors import FieldViolation, InvalidArgument

INVALID_FIELD = "INVALID_FIELD"
CARD_DATA_IN_FREE_TEXT = "CARD_DATA_IN_FREE_TEXT"

# The largest amount any request or setting may carry: ₹1 crore. Per-payment amounts are int32
# on the wire (at most 2,147,483,647); EMI interest adds less than 19 % over the longest tenure,
# so everything computed from an amount below this bound still fits.
MAX_AMOUNT_PAISA = 1_000_000_000

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500
MAX_DESCRIPTION_CHARS = 1_000
MAX_REASON_CHARS = 1_000
MAX_USER_ID_CHARS = 255
MAX_MERCHANT_NAME_CHARS = 200
MAX_HOLDER_NAME_CHARS = 100
MAX_EMAIL_CHARS = 254  # RFC 5321's limit on an address in a mail transaction
MAX_URL_CHARS = 2_048
MAX_DEVICE_FINGERPRINT_CHARS = 255
MAX_USER_AGENT_CHARS = 1_000
MAX_IP_ADDRESS_CHARS = 45  # the longest textual IPv6 address (with an IPv4 tail)
MAX_DISPLAY_NAME_CHARS = 255

NO_CARD_DATA = "must not contain a card number (send card details only in the card fields)"


@dataclass
class FieldProblems:
    """The violations of one request, collected so that the client fixes them all at once.

    `raise_if_any()` raises one InvalidArgument: reason `CARD_DATA_IN_FREE_TEXT` when any field
    held a card number (the fault a merchant must hear about first), else `INVALID_FIELD`.
    """

    violations: list[FieldViolation] = field(default_factory=list)
    card_data: bool = False

    def add(self, field: str, rule: str) -> None:
        violation = FieldViolation(field, rule)
        if violation not in self.violations:
            self.violations.append(violation)

    def card_number_in(self, field: str, rule: str = NO_CARD_DATA) -> None:
        self.card_data = True
        self.add(field, rule)

    def text(self, field: str, value: str, max_chars: int) -> None:
        """`value` has at most `max_chars` characters and no card number."""
        if contains_card_number(value):
            self.card_number_in(field)
        if len(value) > max_chars:
            self.add(field, f"must be at most {max_chars} characters")

    def metadata(self, field: str, metadata: Mapping[str, str]) -> None:
        """At most 50 keys of 1-40 characters, values of at most 500; no card number in either.

        A bad key is reported on `field` itself: naming it would repeat it."""
        if len(metadata) > MAX_METADATA_KEYS:
            self.add(field, f"must have at most {MAX_METADATA_KEYS} keys")
        for key in sorted(metadata):
            if contains_card_number(key):
                self.card_number_in(field, f"keys {NO_CARD_DATA}")
            elif not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
                self.add(field, f"keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")
            else:
                self.text(f"{field}.{key}", metadata[key], MAX_METADATA_VALUE_CHARS)

    def amount(self, field: str, paisa: int, maximum: int) -> None:
        """A positive whole number of paisa, at most `maximum`."""
        if paisa <= 0:
            self.add(field, "must be a positive whole number of paisa")
        elif paisa > maximum:
            self.add(field, f"must be at most {maximum} paisa")

    def raise_if_any(self) -> None:
        if self.violations:
            reason = CARD_DATA_IN_FREE_TEXT if self.card_data else INVALID_FIELD
            raise InvalidArgument.for_fields(self.violations, reason=reason)
