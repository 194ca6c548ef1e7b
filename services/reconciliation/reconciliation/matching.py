"""Matching: which of our payments or refunds a settlement line settles, and how it agrees.

Pure decisions, no I/O: the ingest feeds each chunk of lines with the book entries their
references point at, and persists the verdicts. Every line ends in exactly one outcome:

- payment and refund lines are matched to our payment (refund) by the provider's reference,
  or by our id in `merchant_reference` when the reference is unknown;
- not found: MISSING_INTERNALLY; already settled (earlier in this file or by an earlier
  file): DUPLICATE; settled although we never captured it (or never processed the refund):
  STATUS_MISMATCH; a different amount: AMOUNT_MISMATCH; a different fee or tax than our
  ledger computed: FEE_MISMATCH; otherwise MATCHED;
- chargeback and adjustment lines have no counterpart in our books yet (disputes are
  another issue): MISSING_INTERNALLY, for a person to look at.

Our own items that no line settled are EXPECTED until their deadline, the provider's file of
their day + RECON_SETTLEMENT_SLA_DAYS, and MISSING_IN_FILE once that file was reconciled
without them. A later file that settles them makes them MATCHED after all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from reconciliation.settlement_file import SettlementLine

IST = ZoneInfo("Asia/Kolkata")


class Outcome(StrEnum):
    MATCHED = "MATCHED"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    FEE_MISMATCH = "FEE_MISMATCH"
    STATUS_MISMATCH = "STATUS_MISMATCH"
    DUPLICATE = "DUPLICATE"
    MISSING_INTERNALLY = "MISSING_INTERNALLY"
    MISSING_IN_FILE = "MISSING_IN_FILE"
    EXPECTED = "EXPECTED"

    @property
    def raises_exception(self) -> bool:
        """Everything but MATCHED and EXPECTED needs a person."""
        return self not in (Outcome.MATCHED, Outcome.EXPECTED)


@dataclass(frozen=True, slots=True)
class BookPayment:
    """A payment as our books have it."""

    payment_id: str
    provider_reference: str
    status: str
    # What was captured: 0 when nothing was (failed, expired, cancelled before capture).
    captured_paisa: int
    fees_paisa: int
    tax_paisa: int
    # A settlement line already settled it.
    settled: bool


@dataclass(frozen=True, slots=True)
class BookRefund:
    refund_id: str
    payment_id: str
    provider_reference: str
    status: str
    amount_paisa: int
    settled: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    payment_id: str | None = None
    refund_id: str | None = None
    # Our value and the file's, as text, for the exception a person reads.
    expected: str = ""
    actual: str = ""

    @property
    def settles(self) -> str | None:
        """The id of the book item this line settles (takes), if any: a DUPLICATE or an
        unknown line settles nothing."""
        if self.outcome in (Outcome.DUPLICATE, Outcome.MISSING_INTERNALLY):
            return None
        return self.refund_id or self.payment_id


@dataclass(frozen=True)
class Books:
    """The book entries one chunk of lines may point at, by provider reference and by id."""

    payments_by_reference: Mapping[str, BookPayment]
    payments_by_id: Mapping[str, BookPayment]
    refunds_by_reference: Mapping[str, BookRefund]
    refunds_by_id: Mapping[str, BookRefund]


PROCESSED = "PROCESSED"


def classify(line: SettlementLine, books: Books, taken: set[str]) -> Verdict:
    """The outcome of one line. `taken`: ids settled by earlier lines of this chunk; the item
    this line settles is added to it."""
    if line.type == "payment":
        payment = books.payments_by_reference.get(
            line.provider_reference
        ) or books.payments_by_id.get(line.merchant_reference)
        verdict = _payment_verdict(line, payment, taken)
    elif line.type == "refund":
        refund = books.refunds_by_reference.get(line.provider_reference) or books.refunds_by_id.get(
            line.merchant_reference
        )
        verdict = _refund_verdict(line, refund, taken)
    else:
        verdict = Verdict(
            Outcome.MISSING_INTERNALLY,
            payment_id=_known_payment(line, books),
            actual=f"{line.type} {line.amount_paisa}",
        )
    if verdict.settles is not None:
        taken.add(verdict.settles)
    return verdict


def _payment_verdict(line: SettlementLine, payment: BookPayment | None, taken: set[str]) -> Verdict:
    if payment is None:
        return Verdict(Outcome.MISSING_INTERNALLY, actual=str(line.amount_paisa))
    found = payment.payment_id
    if payment.settled or found in taken:
        return Verdict(Outcome.DUPLICATE, payment_id=found, expected="settled once")
    if payment.captured_paisa == 0:
        return Verdict(
            Outcome.STATUS_MISMATCH, payment_id=found, expected=payment.status, actual="SETTLED"
        )
    if line.amount_paisa != payment.captured_paisa:
        return Verdict(
            Outcome.AMOUNT_MISMATCH,
            payment_id=found,
            expected=str(payment.captured_paisa),
            actual=str(line.amount_paisa),
        )
    if (line.fee_paisa, line.tax_paisa) != (payment.fees_paisa, payment.tax_paisa):
        return Verdict(
            Outcome.FEE_MISMATCH,
            payment_id=found,
            expected=f"{payment.fees_paisa}/{payment.tax_paisa}",
            actual=f"{line.fee_paisa}/{line.tax_paisa}",
        )
    return Verdict(Outcome.MATCHED, payment_id=found)


def _refund_verdict(line: SettlementLine, refund: BookRefund | None, taken: set[str]) -> Verdict:
    if refund is None:
        return Verdict(Outcome.MISSING_INTERNALLY, actual=str(line.amount_paisa))
    ids = {"payment_id": refund.payment_id, "refund_id": refund.refund_id}
    if refund.settled or refund.refund_id in taken:
        return Verdict(Outcome.DUPLICATE, expected="settled once", **ids)
    if refund.status != PROCESSED:
        return Verdict(Outcome.STATUS_MISMATCH, expected=refund.status, actual="SETTLED", **ids)
    if line.amount_paisa != refund.amount_paisa:
        return Verdict(
            Outcome.AMOUNT_MISMATCH,
            expected=str(refund.amount_paisa),
            actual=str(line.amount_paisa),
            **ids,
        )
    if line.fee_paisa or line.tax_paisa:
        return Verdict(
            Outcome.FEE_MISMATCH,
            expected="0/0",
            actual=f"{line.fee_paisa}/{line.tax_paisa}",
            **ids,
        )
    return Verdict(Outcome.MATCHED, **ids)


def _known_payment(line: SettlementLine, books: Books) -> str | None:
    payment = books.payments_by_id.get(line.merchant_reference)
    return payment.payment_id if payment else None


def ist_date(moment: datetime) -> date:
    """The calendar day in India of a moment: the day settlement files are cut by."""
    return moment.astimezone(IST).date()


def settlement_deadline(settlement_date: date, sla_days: int) -> date:
    """The day whose file must have settled an item of `settlement_date` at the latest."""
    return settlement_date + timedelta(days=sla_days)


def overdue_on(file_date: date, sla_days: int) -> date:
    """Items of this day or earlier are MISSING_IN_FILE once `file_date`'s file is reconciled
    without them."""
    return file_date - timedelta(days=sla_days)
