"""The providers' settlement file format: parsing and validation, line by line.

One CSV per provider per IST day, UTF-8, with this header (README "Settlement files"):

    provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,settlement_id,utr,method

Amounts are rupees with exactly two decimals, never negative except an adjustment's amount;
they become integer paisa without ever passing through a float. Every line carries the same
settlement_id and utr (one settlement per provider per day). The first line that breaks a
rule stops the file with `MalformedFile`, naming its line number (the header is line 1) and
the rule: a file is taken whole or not at all.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

HEADER = (
    "provider_reference",
    "merchant_reference",
    "type",
    "amount",
    "fee",
    "tax",
    "currency",
    "settled_at",
    "settlement_id",
    "utr",
    "method",
)
LineType = Literal["payment", "refund", "chargeback", "adjustment"]
LINE_TYPES: frozenset[str] = frozenset({"payment", "refund", "chargeback", "adjustment"})
METHODS: frozenset[str] = frozenset({"UPI", "CARD", "WALLET", "NET_BANKING"})
CURRENCY = "INR"
# Rupees, exactly two decimals; only an adjustment may be negative.
_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,14})\.([0-9]{2})")
_SIGNED_AMOUNT = re.compile(r"-?(0|[1-9][0-9]{0,14})\.([0-9]{2})")
# Provider references and our ids: printable, no spaces, bounded (they are stored and shown).
_REFERENCE = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")


class MalformedFile(ValueError):
    """The file breaks the format at `line_number` (1 = the header) for `reason`."""

    def __init__(self, line_number: int, reason: str) -> None:
        super().__init__(f"line {line_number}: {reason}")
        self.line_number = line_number
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SettlementLine:
    line_number: int
    provider_reference: str
    merchant_reference: str
    type: str
    amount_paisa: int
    fee_paisa: int
    tax_paisa: int
    settled_at: datetime
    settlement_id: str
    utr: str
    method: str

    @property
    def net_paisa(self) -> int:
        """What the line adds to the payout: the type gives the amount's sign."""
        signed = -self.amount_paisa if self.type in ("refund", "chargeback") else self.amount_paisa
        return signed - self.fee_paisa - self.tax_paisa


def paisa(text: str, *, signed: bool = False) -> int:
    """ "1234.50" -> 123450. Exactly two decimals, no exponent, no sign unless `signed`."""
    match = (_SIGNED_AMOUNT if signed else _AMOUNT).fullmatch(text)
    if match is None:
        raise ValueError(text)
    value = int(match.group(1)) * 100 + int(match.group(2))
    return -value if text.startswith("-") else value


def parse(rows: Iterable[str]) -> Iterator[SettlementLine]:
    """The file's data lines, validated, from its text lines (an open text file will do).

    Raises MalformedFile at the first line that breaks a rule; lines before it have been
    yielded already, so a caller keeps nothing until the whole file has parsed.
    """
    reader = csv.reader(rows, strict=True)
    line_number = 1
    try:
        header = next(reader, None)
        if header is None:
            raise MalformedFile(1, "the file is empty: the header line is missing")
        if tuple(h.strip() for h in header) != HEADER:
            raise MalformedFile(1, f"the header must be exactly: {','.join(HEADER)}")
        settlement: tuple[str, str] | None = None
        for fields in reader:
            line_number = reader.line_num
            line = _line(line_number, fields)
            if settlement is None:
                settlement = (line.settlement_id, line.utr)
            elif (line.settlement_id, line.utr) != settlement:
                raise MalformedFile(
                    line_number,
                    "settlement_id and utr must be the same on every line "
                    f"(the first line has {settlement[0]} / {settlement[1]})",
                )
            yield line
    except csv.Error as exc:
        raise MalformedFile(reader.line_num or line_number, f"not valid CSV: {exc}") from None
    except UnicodeDecodeError:
        raise MalformedFile(reader.line_num + 1, "not valid UTF-8") from None


def _line(line_number: int, fields: list[str]) -> SettlementLine:
    if len(fields) != len(HEADER):
        if not fields:
            raise MalformedFile(line_number, "empty line")
        raise MalformedFile(
            line_number, f"expected {len(HEADER)} comma-separated fields, found {len(fields)}"
        )
    (reference, merchant_reference, kind, amount, fee, tax, currency, settled_at) = fields[:8]
    settlement_id, utr, method = fields[8:]
    if not _REFERENCE.fullmatch(reference):
        raise MalformedFile(line_number, _reference_rule("provider_reference"))
    if kind not in LINE_TYPES:
        raise MalformedFile(
            line_number, f"type must be one of {', '.join(sorted(LINE_TYPES))}, not {kind!r}"
        )
    if not _REFERENCE.fullmatch(merchant_reference) and not (
        kind == "adjustment" and merchant_reference == ""
    ):
        raise MalformedFile(line_number, _reference_rule("merchant_reference"))
    try:
        amount_paisa = paisa(amount, signed=kind == "adjustment")
    except ValueError:
        raise MalformedFile(line_number, _amount_rule("amount", amount)) from None
    try:
        fee_paisa = paisa(fee)
    except ValueError:
        raise MalformedFile(line_number, _amount_rule("fee", fee)) from None
    try:
        tax_paisa = paisa(tax)
    except ValueError:
        raise MalformedFile(line_number, _amount_rule("tax", tax)) from None
    if currency != CURRENCY:
        raise MalformedFile(line_number, f"currency must be INR, not {currency[:10]!r}")
    try:
        settled = datetime.fromisoformat(settled_at)
    except ValueError:
        settled = None
    if settled is None or settled.tzinfo is None:
        raise MalformedFile(
            line_number,
            "settled_at must be an ISO 8601 time with an offset, e.g. 2026-12-05T18:30:00+05:30",
        )
    if not _REFERENCE.fullmatch(settlement_id):
        raise MalformedFile(line_number, _reference_rule("settlement_id"))
    if not _REFERENCE.fullmatch(utr):
        raise MalformedFile(line_number, _reference_rule("utr"))
    if method not in METHODS:
        raise MalformedFile(
            line_number, f"method must be one of {', '.join(sorted(METHODS))}, not {method!r}"
        )
    return SettlementLine(
        line_number=line_number,
        provider_reference=reference,
        merchant_reference=merchant_reference,
        type=kind,
        amount_paisa=amount_paisa,
        fee_paisa=fee_paisa,
        tax_paisa=tax_paisa,
        settled_at=settled,
        settlement_id=settlement_id,
        utr=utr,
        method=method,
    )


def _reference_rule(field: str) -> str:
    return f"{field} must be 1 to 100 letters, digits or _.:/- characters"


def _amount_rule(field: str, value: str) -> str:
    shown = value if len(value) <= 20 else value[:20] + "…"
    sign = "; only an adjustment's amount may be negative" if field == "amount" else ""
    return f"{field} must be rupees with exactly two decimals, e.g. 1234.50, not {shown!r}{sign}"
