"""UPI Core: the simulated UPI switch.

`UpiSwitch` is the switch's book of transactions and their rules (plain, synchronous, no gRPC:
its face is sandbox.servicers.upi). The payee (the gateway) may cancel a request the customer
has not paid yet.

State lives in memory, keyed by the gateway's transaction_ref: this is a simulator, and a
restarted sandbox forgets its transactions, as a test provider's reset would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from gateway_core.errors import AlreadyExists, Conflict, NotFound
from gateway_core.ids import new_id
from sandbox import magic, references
from sandbox.books import BookPayment, BookRefund
from sandbox.callbacks import ProviderCallback
from sandbox.magic import UpiOutcome, upi_outcome
from sandbox.refunds import Refund, RefundBook, RefundTerms
from sandbox.settlements import UPI, Refunded, Settleable, money_moved

PROVIDER = "upi_core"
REFUND_TERMS = RefundTerms(
    reference_prefix="UPIRF",
    not_paid="TRANSACTION_NOT_SUCCESSFUL",
    exceeds_paid="REFUND_EXCEEDS_AMOUNT",
    duplicate="DUPLICATE_REFUND_REF",
    ids_per_payment=True,
    refusal_is_error=True,
)
FLOWS = ("INTENT", "COLLECT")

Clock = Callable[[], float]


class UpiStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


@dataclass
class UpiTransaction:
    transaction_ref: str
    upi_txn_id: str
    payer_vpa: str
    amount_paisa: int
    flow: str
    callback_url: str
    outcome: UpiOutcome
    initiated_at: float
    expires_at: float | None
    # When the outcome decided at initiation happens; None while it waits for a person.
    resolve_at: float | None
    status: UpiStatus = UpiStatus.PENDING
    finished_at: float | None = None
    rrn: str = ""
    approval_code: str = ""
    response_code: str = ""
    # The payee's notes on the payment (the merchant's metadata, passed on by the gateway).
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def calls_back(self) -> bool:
        """A hanging switch never calls back: the gateway must find the outcome by inquiry."""
        return self.outcome not in (UpiOutcome.TIMEOUT, UpiOutcome.LATE_FAILURE)

    @property
    def paid_paisa(self) -> int:
        """What the payer paid: the amount once SUCCESS, else nothing."""
        return self.amount_paisa if self.status is UpiStatus.SUCCESS else 0

    def to_book(self, refunded_paisa: int) -> BookPayment:
        return BookPayment(
            provider=PROVIDER,
            payment_id=self.transaction_ref,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            charged_paisa=self.paid_paisa,
            refunded_paisa=refunded_paisa,
        )

    def settleable(self, refunds: Iterable[Refunded]) -> list[Settleable]:
        """The money the switch moved for this transaction: the payment once SUCCESS, and
        each refund."""
        if self.status is not UpiStatus.SUCCESS or self.finished_at is None:
            return []
        return money_moved(
            provider=PROVIDER,
            method=UPI,
            payment_id=self.transaction_ref,
            provider_reference=self.upi_txn_id,
            amount_paisa=self.amount_paisa,
            at=self.finished_at,
            notes=self.notes,
            refunds=refunds,
        )

    def to_callback(self) -> ProviderCallback:
        return ProviderCallback(
            provider=PROVIDER,
            transaction_ref=self.transaction_ref,
            provider_txn_id=self.upi_txn_id,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            occurred_at=datetime.fromtimestamp(self.finished_at or self.initiated_at, UTC),
            rrn=self.rrn,
            approval_code=self.approval_code,
            response_code=self.response_code,
        )

    def succeed(self, at: float) -> None:
        self.status, self.finished_at = UpiStatus.SUCCESS, at
        self.rrn = references.digits(12)
        self.approval_code = references.digits(6)

    def fail(self, at: float, response_code: str, status: UpiStatus = UpiStatus.FAILED) -> None:
        self.status, self.finished_at, self.response_code = status, at, response_code


class UpiSwitch:
    """The switch's transactions. `on_final(txn)` runs once when a transaction that calls back
    turns SUCCESS or FAILED, whoever noticed first (a timer, an inquiry, a control call)."""

    def __init__(
        self,
        approval_delay_seconds: float,
        on_final: Callable[[UpiTransaction], None],
        clock: Clock = time.time,
    ) -> None:
        self._approval_delay = approval_delay_seconds
        self._on_final = on_final
        self._clock = clock
        self._transactions: dict[str, UpiTransaction] = {}
        self._refunds = RefundBook(PROVIDER, REFUND_TERMS, clock)

    def now(self) -> float:
        """The switch's clock (wall-clock seconds), which every due time is measured against."""
        return self._clock()

    def initiate(
        self,
        transaction_ref: str,
        payer_vpa: str,
        amount_paisa: int,
        flow: str,
        callback_url: str,
        expires_at: float | None,
        notes: dict[str, str] | None = None,
    ) -> tuple[UpiTransaction, bool]:
        """The transaction for `transaction_ref` and whether this call created it."""
        known = self._transactions.get(transaction_ref)
        if known is not None:
            if (known.payer_vpa, known.amount_paisa, known.flow) != (
                payer_vpa,
                amount_paisa,
                flow,
            ):
                raise AlreadyExists(
                    f"transaction {transaction_ref} was initiated with other details",
                    reason="DUPLICATE_TRANSACTION_REF",
                )
            self.settle(known)
            return known, False
        now = self._clock()
        outcome = upi_outcome(payer_vpa)
        txn = UpiTransaction(
            transaction_ref=transaction_ref,
            upi_txn_id=new_id("UPI"),
            payer_vpa=payer_vpa,
            amount_paisa=amount_paisa,
            flow=flow,
            callback_url=callback_url,
            outcome=outcome,
            initiated_at=now,
            expires_at=expires_at,
            resolve_at=self._resolve_at(outcome, now),
            notes=dict(notes or {}),
        )
        if outcome is UpiOutcome.NO_SUCH_VPA:
            # Refused on the spot: the answer itself is the outcome, no callback follows.
            txn.fail(now, magic.UPI_INVALID_VPA)
        self._transactions[transaction_ref] = txn
        self.settle(txn)  # an expires_at already past expires it at once
        return txn, True

    def get(self, transaction_ref: str) -> UpiTransaction:
        txn = self._transactions.get(transaction_ref)
        if txn is None:
            raise NotFound(
                f"transaction {transaction_ref} not found", reason="TRANSACTION_NOT_FOUND"
            )
        self.settle(txn)
        return txn

    def settle(self, txn: UpiTransaction, as_of: float = 0.0) -> None:
        """Apply whatever became due by now (or by `as_of`, if later): expiry, or the outcome
        decided at initiation."""
        if txn.status is not UpiStatus.PENDING:
            return
        now = max(self._clock(), as_of)
        due = txn.resolve_at if txn.resolve_at is not None and txn.resolve_at <= now else None
        if (
            txn.expires_at is not None
            and txn.expires_at <= now
            and (due is None or txn.expires_at < due)
        ):
            txn.fail(txn.expires_at, magic.UPI_EXPIRED, UpiStatus.EXPIRED)
        elif due is not None:
            if txn.outcome in (UpiOutcome.APPROVE, UpiOutcome.TIMEOUT):
                txn.succeed(due)
            else:
                txn.fail(due, magic.UPI_DEBIT_FAILED)
            self._finished(txn)

    def decide(self, transaction_ref: str, *, approve: bool) -> UpiTransaction:
        """The customer's decision, made through the sandbox control (manual@upi)."""
        txn = self.get(transaction_ref)
        if txn.status is not UpiStatus.PENDING:
            raise Conflict(
                f"transaction {transaction_ref} is already {txn.status}",
                reason="TRANSACTION_FINAL",
            )
        now = self._clock()
        if approve:
            txn.succeed(now)
        else:
            txn.fail(now, magic.UPI_DECLINED_BY_CUSTOMER)
        self._finished(txn)
        return txn

    def cancel(self, transaction_ref: str) -> UpiTransaction:
        """The payee withdraws a request the customer has not paid: it fails for good
        (UPI_CANCELLED_BY_PAYEE), whatever was decided for it. A transaction already final,
        including one whose approval fell due before this call, stays as it is. The payee
        asked, so nobody is called back."""
        txn = self.get(transaction_ref)
        if txn.status is UpiStatus.PENDING:
            txn.fail(self._clock(), magic.UPI_CANCELLED_BY_PAYEE)
        return txn

    def refund(self, transaction_ref: str, refund_ref: str, amount_paisa: int) -> Refund:
        """Refund a SUCCESS transaction by the sandbox's refund rules (sandbox.refunds); the
        switch refuses with an error rather than recording a failed refund."""
        txn = self.get(transaction_ref)
        refund, _ = self._refunds.refund(
            transaction_ref, refund_ref, amount_paisa, paid_paisa=txn.paid_paisa
        )
        return refund

    def refunded_paisa(self, transaction_ref: str) -> int:
        return self._refunds.refunded_paisa(transaction_ref)

    def booked_payments(self) -> list[BookPayment]:
        for txn in self._transactions.values():
            self.settle(txn)
        return [
            txn.to_book(self._refunds.refunded_paisa(txn.transaction_ref))
            for txn in self._transactions.values()
        ]

    def booked_refunds(self) -> list[BookRefund]:
        return self._refunds.booked_refunds()

    def settleable(self) -> list[Settleable]:
        for txn in self._transactions.values():
            self.settle(txn)
        return [
            entry
            for txn in self._transactions.values()
            for entry in txn.settleable(self._refunds.settleable(txn.transaction_ref))
        ]

    def _resolve_at(self, outcome: UpiOutcome, now: float) -> float | None:
        if outcome in (UpiOutcome.APPROVE, UpiOutcome.DECLINE):
            return now + self._approval_delay
        if outcome in (UpiOutcome.TIMEOUT, UpiOutcome.LATE_FAILURE):
            return now + magic.UPI_LATE_OUTCOME_SECONDS
        return None

    def _finished(self, txn: UpiTransaction) -> None:
        if txn.calls_back:
            self._on_final(txn)
