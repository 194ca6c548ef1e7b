"""Net banking: the customer is sent to a bank page, pays or cancels there, and the bank both
sends the browser back to the merchant's return URL and calls the gateway back, signed.

`NetBanks` holds the payments and their rules (plain, synchronous, no gRPC: its face, which adds
the magic bank codes' faults, is sandbox.servicers.netbanking), and sandbox.web serves the bank
page. The merchant may cancel a payment the customer has not finished (no callback follows: the
merchant asked). State lives in memory: this is a simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote

from gateway_core.errors import AlreadyExists, NotFound
from sandbox import references
from sandbox.books import BookPayment, BookRefund
from sandbox.callbacks import ProviderCallback, return_url
from sandbox.magic import BANKS, FAILING_BANK
from sandbox.refunds import Refund, RefundBook, RefundTerms
from sandbox.settlements import NET_BANKING, Refunded, Settleable, money_moved

PROVIDER = "netbanking"
BANK_DECLINED = "BANK_DECLINED"
CUSTOMER_CANCELLED = "CUSTOMER_CANCELLED"
MERCHANT_CANCELLED = "MERCHANT_CANCELLED"
REFUND_TERMS = RefundTerms(
    reference_prefix="NBRF",
    not_paid="PAYMENT_NOT_SUCCESSFUL",
    exceeds_paid="REFUND_EXCEEDS_PAYMENT",
    ids_per_payment=True,
)

Clock = Callable[[], float]


class BankPaymentStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass
class BankPayment:
    bank_code: str
    payment_id: str
    amount_paisa: int
    return_url: str
    callback_url: str
    status: BankPaymentStatus = BankPaymentStatus.PENDING
    bank_reference: str = ""
    failure_code: str = ""
    finished_at: float | None = None
    # The merchant's notes on the payment (its metadata, passed on by the gateway).
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def bank_name(self) -> str:
        return BANKS[self.bank_code]

    @property
    def paid_paisa(self) -> int:
        """What the customer paid: the amount once SUCCESS, else nothing."""
        return self.amount_paisa if self.status is BankPaymentStatus.SUCCESS else 0

    def to_book(self, refunded_paisa: int) -> BookPayment:
        return BookPayment(
            provider=PROVIDER,
            payment_id=self.payment_id,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            charged_paisa=self.paid_paisa,
            refunded_paisa=refunded_paisa,
        )

    def settleable(self, refunds: Iterable[Refunded]) -> list[Settleable]:
        """The money the bank moved: the payment once SUCCESS, and each processed refund."""
        if self.status is not BankPaymentStatus.SUCCESS or self.finished_at is None:
            return []
        return money_moved(
            provider=PROVIDER,
            method=NET_BANKING,
            payment_id=self.payment_id,
            provider_reference=self.bank_reference,
            amount_paisa=self.amount_paisa,
            at=self.finished_at,
            notes=self.notes,
            refunds=refunds,
        )

    def return_to(self) -> str:
        """The merchant's return URL with the outcome added to its query."""
        return return_url(
            self.return_url, [("payment_id", self.payment_id), ("status", self.status.value)]
        )

    def to_callback(self) -> ProviderCallback:
        return ProviderCallback(
            provider=PROVIDER,
            transaction_ref=self.payment_id,
            provider_txn_id=self.bank_reference,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            occurred_at=datetime.fromtimestamp(self.finished_at or 0, UTC),
            response_code=self.failure_code,
        )


class NetBanks:
    """Payments at the simulated banks, keyed by the gateway's payment id. `on_final(payment)`
    runs once, when the customer finishes on the bank page."""

    def __init__(self, on_final: Callable[[BankPayment], None], clock: Clock = time.time) -> None:
        self._on_final = on_final
        self._clock = clock
        self._payments: dict[str, BankPayment] = {}
        self._refunds = RefundBook(PROVIDER, REFUND_TERMS, clock)

    def initiate(
        self,
        bank_code: str,
        payment_id: str,
        amount_paisa: int,
        return_url: str,
        callback_url: str,
        notes: dict[str, str] | None = None,
    ) -> tuple[BankPayment, bool]:
        """Start a payment once: a repeated call answers the payment as it stands. Returns the
        payment and whether this call started it."""
        known = self._payments.get(payment_id)
        if known is not None:
            if (known.bank_code, known.amount_paisa, known.return_url) != (
                bank_code,
                amount_paisa,
                return_url,
            ):
                raise AlreadyExists(
                    f"payment {payment_id} was started with other details",
                    reason="DUPLICATE_PAYMENT_ID",
                )
            return known, False
        payment = BankPayment(
            bank_code, payment_id, amount_paisa, return_url, callback_url, notes=dict(notes or {})
        )
        self._payments[payment_id] = payment
        return payment, True

    def get(self, bank_code: str, payment_id: str) -> BankPayment:
        payment = self._payments.get(payment_id)
        if payment is None or payment.bank_code != bank_code:
            raise NotFound(
                f"no payment {payment_id} at bank {bank_code}", reason="PAYMENT_NOT_FOUND"
            )
        return payment

    def complete(self, bank_code: str, payment_id: str, *, approve: bool) -> BankPayment:
        """The customer's choice on the bank page; once final, later choices change nothing."""
        payment = self.get(bank_code, payment_id)
        if payment.status is not BankPaymentStatus.PENDING:
            return payment
        payment.finished_at = self._clock()
        if not approve:
            payment.status, payment.failure_code = BankPaymentStatus.FAILED, CUSTOMER_CANCELLED
        elif bank_code == FAILING_BANK:
            payment.status, payment.failure_code = BankPaymentStatus.FAILED, BANK_DECLINED
        else:
            payment.status = BankPaymentStatus.SUCCESS
            payment.bank_reference = f"{bank_code}{references.digits(10)}"
        self._on_final(payment)
        return payment

    def cancel(self, bank_code: str, payment_id: str) -> BankPayment:
        """The merchant withdraws a payment the customer has not finished: it fails, and the
        bank page no longer takes it. A final payment stays as it is. The merchant asked, so
        nobody is called back."""
        payment = self.get(bank_code, payment_id)
        if payment.status is BankPaymentStatus.PENDING:
            payment.status, payment.failure_code = BankPaymentStatus.FAILED, MERCHANT_CANCELLED
            payment.finished_at = self._clock()
        return payment

    def refund(self, bank_code: str, payment_id: str, refund_id: str, amount_paisa: int) -> Refund:
        """Refund by the sandbox's refund rules (sandbox.refunds): only a SUCCESS payment."""
        payment = self.get(bank_code, payment_id)
        refund, _ = self._refunds.refund(
            payment_id, refund_id, amount_paisa, paid_paisa=payment.paid_paisa
        )
        return refund

    def refunded_paisa(self, payment_id: str) -> int:
        return self._refunds.refunded_paisa(payment_id)

    def booked_payments(self) -> list[BookPayment]:
        return [
            payment.to_book(self._refunds.refunded_paisa(payment.payment_id))
            for payment in self._payments.values()
        ]

    def settleable(self) -> list[Settleable]:
        return [
            entry
            for payment in self._payments.values()
            for entry in payment.settleable(self._refunds.settleable(payment.payment_id))
        ]

    def booked_refunds(self) -> list[BookRefund]:
        return self._refunds.booked_refunds()


# The bank page on the sandbox's HTTP server (sandbox.web serves it).
PAGE_ROUTE = "/netbanking/{bank_code}/{payment_id}"


def page_path(bank_code: str, payment_id: str) -> str:
    return PAGE_ROUTE.format(
        bank_code=quote(bank_code, safe=""), payment_id=quote(payment_id, safe="")
    )
