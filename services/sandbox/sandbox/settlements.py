"""The simulated providers' daily settlement files: what each provider paid out, per IST date.

A real provider pays a merchant (here: the gateway) once a day, one bank transfer (one UTR) for
everything it settles that day, and publishes a file listing each transaction in it. Each
simulated provider does the same from its own books (the captures, debits and refunds it made,
never the gateway's database): a payment settles on its capture date and a refund on the date
it was processed, plus the settlement cycle (T+N, SANDBOX_SETTLEMENT_CYCLE_DAYS).

The file is CSV with the columns of `HEADER` (the contract with services/reconciliation):
amounts in rupees with two decimals, the fee and GST the provider charges (the gateway's own
pricing, gateway_core.fees, on payments; nothing on refunds), and the settlement's id, UTR and
time on every line. Its net, what the transfer carries, is
payments - refunds - chargebacks +/- adjustments - fees - tax.

Discrepancies are asked for through the payment's merchant notes (its metadata, which the
gateway passes to the provider with the payment): `sandbox_settlement` = one of `Instruction`.
They change the payment's line only; refunds always settle as they are.

The builder (`build_file`) is plain and synchronous; `SettlementReports` holds what persists
between requests (the releases of OMITted payments, the process's id salt) and is what the HTTP
server (sandbox.web) serves.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from gateway_core.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway_core.fees import DEFAULT_PRICING, compute_fee, tax_on_fee
from gateway_core.money import rupees_string

# Payment methods, as the gateway names them (and the file's `method` column).
UPI = "UPI"
CARD = "CARD"
WALLET = "WALLET"
NET_BANKING = "NET_BANKING"

IST = ZoneInfo("Asia/Kolkata")
CURRENCY = "INR"
# The merchant note that asks for a discrepancy.
INSTRUCTION_NOTE = "sandbox_settlement"
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
# A settlement is paid out at the end of its day (IST).
PAYOUT_TIME = time(23, 59, 59)
# AMOUNT_MISMATCH settles this much less than was captured; FEE_MISMATCH charges this much more.
SHORT_PAISA = 100
EXTRA_FEE_PAISA = 100


class Instruction(StrEnum):
    """What `metadata.sandbox_settlement` asks the provider to do with the payment's line."""

    OMIT = "OMIT"  # no line (until POST /settlements/{provider}/release names a date)
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"  # the amount SHORT_PAISA short
    FEE_MISMATCH = "FEE_MISMATCH"  # the fee EXTRA_FEE_PAISA higher, its GST recomputed
    DUPLICATE = "DUPLICATE"  # the line twice
    EXTRA = "EXTRA"  # one more payment line, for a transaction the gateway never saw


def settlement_instruction(notes: Mapping[str, str]) -> Instruction | None:
    """The discrepancy the merchant notes ask for; None for a plain settlement (no note, or a
    value that is not an Instruction: a real provider ignores notes it does not understand)."""
    value = notes.get(INSTRUCTION_NOTE, "").strip().upper()
    return Instruction(value) if value in Instruction.__members__ else None


@dataclass(frozen=True)
class Settleable:
    """Money a provider moved and owes (payment) or took back (refund) in its settlement."""

    provider: str
    method: str
    type: str  # "payment", "refund" or "chargeback"
    # The provider's transaction (refund, dispute case) reference.
    provider_reference: str
    # The gateway's payment id (payment, chargeback) or refund id (refund).
    merchant_reference: str
    payment_id: str
    amount_paisa: int
    at: float  # when the money moved (capture, debit, refund), epoch seconds
    instruction: Instruction | None = None


@dataclass(frozen=True)
class Refunded:
    """A refund the provider processed: its reference, the gateway's refund id, amount, when."""

    provider_reference: str
    refund_id: str
    amount_paisa: int
    at: float


def money_moved(
    *,
    provider: str,
    method: str,
    payment_id: str,
    provider_reference: str,
    amount_paisa: int,
    at: float,
    notes: Mapping[str, str],
    refunds: Iterable[Refunded],
) -> list[Settleable]:
    """What one payment puts in its provider's settlement: the payment, then each refund."""
    payment = Settleable(
        provider=provider,
        method=method,
        type="payment",
        provider_reference=provider_reference,
        merchant_reference=payment_id,
        payment_id=payment_id,
        amount_paisa=amount_paisa,
        at=at,
        instruction=settlement_instruction(notes),
    )
    return [
        payment,
        *(
            Settleable(
                provider=provider,
                method=method,
                type="refund",
                provider_reference=refund.provider_reference,
                merchant_reference=refund.refund_id,
                payment_id=payment_id,
                amount_paisa=refund.amount_paisa,
                at=refund.at,
            )
            for refund in refunds
        ),
    ]


class SettlesMoney(Protocol):
    """A simulated provider that settles what it moved."""

    def settleable(self) -> Iterable[Settleable]: ...


@dataclass(frozen=True)
class SettlementLine:
    provider_reference: str
    merchant_reference: str
    type: str
    amount_paisa: int
    fee_paisa: int
    tax_paisa: int
    method: str

    @property
    def net_paisa(self) -> int:
        """What this line adds to the transfer (negative for what it takes back)."""
        if self.type == "payment":
            return self.amount_paisa - self.fee_paisa - self.tax_paisa
        return -self.amount_paisa - self.fee_paisa - self.tax_paisa


@dataclass(frozen=True)
class SettlementFile:
    provider: str
    day: date
    settlement_id: str
    utr: str
    lines: tuple[SettlementLine, ...]

    @property
    def settled_at(self) -> datetime:
        return datetime.combine(self.day, PAYOUT_TIME, IST)

    @property
    def net_paisa(self) -> int:
        """payments - refunds - fees - tax: the amount of the settlement's one transfer."""
        return sum(line.net_paisa for line in self.lines)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        settled_at = self.settled_at.isoformat()
        for line in self.lines:
            writer.writerow(
                (
                    line.provider_reference,
                    line.merchant_reference,
                    line.type,
                    rupees_string(line.amount_paisa),
                    rupees_string(line.fee_paisa),
                    rupees_string(line.tax_paisa),
                    CURRENCY,
                    settled_at,
                    self.settlement_id,
                    self.utr,
                    line.method,
                )
            )
        return out.getvalue()


def settlement_day(at: float, cycle_days: int) -> date:
    """The IST date whose settlement pays out money moved at `at`, on a T+`cycle_days` cycle."""
    return datetime.fromtimestamp(at, UTC).astimezone(IST).date() + timedelta(days=cycle_days)


def build_file(
    provider: str,
    day: date,
    entries: Iterable[Settleable],
    *,
    cycle_days: int = 0,
    releases: Mapping[str, date] | None = None,
    salt: str = "",
) -> SettlementFile:
    """`provider`'s settlement of `day`: every entry due that day, as its instruction says.

    `releases` maps OMITted payments to the day that finally settles them. Ids (settlement id,
    UTR, the references of EXTRA lines) are derived from `salt`, the provider and the day, so
    the same books give the same file, byte for byte, however often it is asked for.
    """
    released = releases or {}
    lines: list[SettlementLine] = []
    due = [e for e in entries if e.provider == provider]
    for entry in sorted(due, key=lambda e: (e.at, e.type, e.merchant_reference)):
        instruction = entry.instruction if entry.type == "payment" else None
        if instruction is Instruction.OMIT:
            if released.get(entry.payment_id) != day:
                continue
            instruction = None
        elif settlement_day(entry.at, cycle_days) != day:
            continue
        lines += _lines(entry, instruction, salt)
    digest = _digest(salt, "settlement", provider, day.isoformat())
    return SettlementFile(
        provider=provider,
        day=day,
        settlement_id=f"setl_{digest[:14]}",
        utr=f"SBXN{int(digest[14:30], 16) % 10**12:012d}",
        lines=tuple(lines),
    )


def _lines(entry: Settleable, instruction: Instruction | None, salt: str) -> list[SettlementLine]:
    if entry.type in ("refund", "chargeback"):
        return [
            SettlementLine(
                provider_reference=entry.provider_reference,
                merchant_reference=entry.merchant_reference,
                type=entry.type,
                amount_paisa=entry.amount_paisa,
                fee_paisa=0,
                tax_paisa=0,
                method=entry.method,
            )
        ]
    pricing = DEFAULT_PRICING[entry.method]
    fee = compute_fee(entry.amount_paisa, pricing)
    line = SettlementLine(
        provider_reference=entry.provider_reference,
        merchant_reference=entry.merchant_reference,
        type="payment",
        amount_paisa=entry.amount_paisa,
        fee_paisa=fee.fee_paisa,
        tax_paisa=fee.tax_paisa,
        method=entry.method,
    )
    if instruction is Instruction.AMOUNT_MISMATCH:
        return [replace(line, amount_paisa=max(0, line.amount_paisa - SHORT_PAISA))]
    if instruction is Instruction.FEE_MISMATCH:
        higher = fee.fee_paisa + EXTRA_FEE_PAISA
        return [replace(line, fee_paisa=higher, tax_paisa=tax_on_fee(higher, pricing))]
    if instruction is Instruction.DUPLICATE:
        return [line, line]
    if instruction is Instruction.EXTRA:
        digest = _digest(salt, "extra", entry.provider, entry.provider_reference)
        stranger = replace(
            line,
            provider_reference=f"XTR{digest[:16].upper()}",
            merchant_reference=f"pay_{digest[16:30]}",
        )
        return [line, stranger]
    return [line]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class ProviderInfo:
    provider: str
    method: str


class SettlementReports:
    """Every simulated provider's settlement files, built on request from their books."""

    def __init__(
        self,
        providers: Sequence[ProviderInfo],
        books: Sequence[SettlesMoney],
        *,
        cycle_days: int,
        salt: str,
    ) -> None:
        self.providers = tuple(providers)
        self._known = {p.provider for p in providers}
        self._books = books
        self._cycle_days = cycle_days
        self._salt = salt
        # (provider, payment_id) -> the day an OMITted payment finally settles.
        self._releases: dict[tuple[str, str], date] = {}

    def knows(self, provider: str) -> bool:
        return provider in self._known

    def file(self, provider: str, day: date) -> SettlementFile:
        self._check_provider(provider)
        releases = {pid: d for (p, pid), d in self._releases.items() if p == provider}
        return build_file(
            provider,
            day,
            self._entries(),
            cycle_days=self._cycle_days,
            releases=releases,
            salt=self._salt,
        )

    def release(self, provider: str, payment_id: str, day: date) -> None:
        """Settle an OMITted payment in `day`'s file after all (on or after its own day)."""
        self._check_provider(provider)
        entry = next(
            (
                e
                for e in self._entries()
                if e.provider == provider and e.type == "payment" and e.payment_id == payment_id
            ),
            None,
        )
        if entry is None:
            raise NotFound(
                f"{provider} has settled no payment {payment_id}", reason="PAYMENT_NOT_FOUND"
            )
        if entry.instruction is not Instruction.OMIT:
            raise FailedPrecondition(
                f"payment {payment_id} is not OMITted from {provider}'s settlements: only a "
                f"payment with metadata.{INSTRUCTION_NOTE}=OMIT can be released",
                reason="PAYMENT_NOT_OMITTED",
            )
        own_day = settlement_day(entry.at, self._cycle_days)
        if day < own_day:
            raise InvalidArgument(
                f"date must be {own_day.isoformat()} or later: payment {payment_id} was due then",
                reason="RELEASE_BEFORE_DUE",
            )
        self._releases[(provider, payment_id)] = day

    def _entries(self) -> list[Settleable]:
        return [entry for book in self._books for entry in book.settleable()]

    def _check_provider(self, provider: str) -> None:
        if provider not in self._known:
            raise NotFound(
                f"no provider {provider!r}; GET /settlements/providers lists them",
                reason="PROVIDER_NOT_FOUND",
            )
