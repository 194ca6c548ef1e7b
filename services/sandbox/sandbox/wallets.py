"""Wallet providers (Paytm, PhonePe, Google Pay, Amazon Pay): balance, instant debit, refunds
and cashback offers.

`WalletBook` holds the balances, debits and refunds and their rules (plain, synchronous, no
gRPC: its face, which adds the faults magic phones ask for, is sandbox.servicers.wallets).
State lives in memory: this is a simulator, and a restarted sandbox starts every wallet again
from its magic opening balance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from gateway_core.errors import AlreadyExists, NotFound
from gateway_core.ids import new_id
from sandbox import magic
from sandbox.books import BookPayment, BookRefund
from sandbox.magic import (
    WALLET_OFFERS,
    WALLETS,
    CashbackOffer,
    WalletOutcome,
    opening_balance_paisa,
    wallet_outcome,
)
from sandbox.refunds import Refund, RefundBook, RefundStatus, RefundTerms, booked_refunds
from sandbox.settlements import WALLET, Refunded, Settleable, money_moved

REFUND_TERMS = RefundTerms(
    reference_prefix="WRF",
    not_paid="DEBIT_NOT_SUCCESSFUL",
    exceeds_paid="REFUND_EXCEEDS_DEBIT",
)


class DebitStatus(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass
class WalletDebit:
    wallet: str
    phone: str
    payment_id: str
    amount_paisa: int
    status: DebitStatus
    wallet_txn_id: str
    cashback_paisa: int = 0
    failure_code: str = ""
    offer_id: str = ""
    debited_at: float = 0.0
    # The merchant's notes on the payment (its metadata, passed on by the gateway).
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def paid_paisa(self) -> int:
        """What the customer was debited: the amount once SUCCESS, else nothing."""
        return self.amount_paisa if self.status is DebitStatus.SUCCESS else 0

    def to_book(self, refunded_paisa: int) -> BookPayment:
        return BookPayment(
            provider=provider_name(self.wallet),
            payment_id=self.payment_id,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            charged_paisa=self.paid_paisa,
            refunded_paisa=refunded_paisa,
        )

    def settleable(self, refunds: Iterable[Refunded]) -> list[Settleable]:
        """The money the wallet moved: the debit once SUCCESS, and each processed refund."""
        if self.status is not DebitStatus.SUCCESS:
            return []
        return money_moved(
            provider=provider_name(self.wallet),
            method=WALLET,
            payment_id=self.payment_id,
            provider_reference=self.wallet_txn_id,
            amount_paisa=self.amount_paisa,
            at=self.debited_at,
            notes=self.notes,
            refunds=refunds,
        )


def provider_name(wallet: str) -> str:
    """The wallet as the gateway names the provider ("GOOGLE_PAY" -> "google_pay")."""
    return wallet.lower()


def offers_of(wallet: str) -> list[CashbackOffer]:
    return [offer for offer in WALLET_OFFERS if offer.wallet == wallet]


class WalletBook:
    """Balances per (wallet, phone) and debits per (wallet, payment_id). Every method runs
    without awaiting, so concurrent calls on the event loop cannot interleave inside one."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._balances: dict[tuple[str, str], int] = {}
        self._debits: dict[tuple[str, str], WalletDebit] = {}
        self._refunds = {
            wallet: RefundBook(provider_name(wallet), REFUND_TERMS, clock) for wallet in WALLETS
        }
        # The phone every debit request named, debited or not: a wallet that was down when
        # asked to debit stays down when asked about that payment.
        self._payment_phones: dict[tuple[str, str], str] = {}

    def balance(self, wallet: str, phone: str) -> int:
        return self._balances.setdefault((wallet, phone), opening_balance_paisa(phone))

    def debit(
        self,
        wallet: str,
        phone: str,
        payment_id: str,
        amount_paisa: int,
        offer: CashbackOffer | None,
        notes: dict[str, str] | None = None,
    ) -> tuple[WalletDebit, bool]:
        """Debit once per payment: a repeated call answers the first outcome. Returns the debit
        and whether this call made it."""
        known = self._debits.get((wallet, payment_id))
        if known is not None:
            offer_id = offer.offer_id if offer else ""
            if (known.phone, known.amount_paisa, known.offer_id) != (phone, amount_paisa, offer_id):
                raise AlreadyExists(
                    f"payment {payment_id} was debited with other details",
                    reason="DUPLICATE_PAYMENT_ID",
                )
            return known, False
        balance = self.balance(wallet, phone)
        if balance < amount_paisa:
            debit = WalletDebit(
                wallet=wallet,
                phone=phone,
                payment_id=payment_id,
                amount_paisa=amount_paisa,
                status=DebitStatus.FAILED,
                wallet_txn_id=new_id("WTX"),
                failure_code="INSUFFICIENT_BALANCE",
                offer_id=offer.offer_id if offer else "",
                debited_at=self._clock(),
                notes=dict(notes or {}),
            )
        else:
            cashback = offer.cashback_paisa(amount_paisa) if offer else 0
            # The wallet credits cashback at once, the way Paytm-style offers show it.
            self._balances[(wallet, phone)] = balance - amount_paisa + cashback
            debit = WalletDebit(
                wallet=wallet,
                phone=phone,
                payment_id=payment_id,
                amount_paisa=amount_paisa,
                status=DebitStatus.SUCCESS,
                wallet_txn_id=new_id("WTX"),
                cashback_paisa=cashback,
                offer_id=offer.offer_id if offer else "",
                debited_at=self._clock(),
                notes=dict(notes or {}),
            )
        self._debits[(wallet, payment_id)] = debit
        return debit, True

    def note_payment_phone(self, wallet: str, payment_id: str, phone: str) -> None:
        """Remember which phone a debit request for `payment_id` named (the first one wins)."""
        self._payment_phones.setdefault((wallet, payment_id), phone)

    def payment_phone(self, wallet: str, payment_id: str) -> str:
        """The phone debited for `payment_id`, or the one a debit request named; "" if none."""
        debit = self._debits.get((wallet, payment_id))
        return debit.phone if debit else self._payment_phones.get((wallet, payment_id), "")

    def get_debit(self, wallet: str, payment_id: str) -> WalletDebit:
        debit = self._debits.get((wallet, payment_id))
        if debit is None:
            raise NotFound(f"no {wallet} debit for payment {payment_id}", reason="DEBIT_NOT_FOUND")
        return debit

    def refund(
        self,
        wallet: str,
        wallet_txn_id: str,
        payment_id: str,
        refund_id: str,
        amount_paisa: int,
    ) -> tuple[Refund, bool]:
        """Refund by the sandbox's refund rules (sandbox.refunds); a refund-failing magic phone
        refuses every refund, and a processed refund returns the money to the balance. Returns
        the refund and whether this call made it."""
        debit = self.get_debit(wallet, payment_id)
        if debit.wallet_txn_id != wallet_txn_id:
            raise NotFound(
                f"{wallet} transaction {wallet_txn_id} is not payment {payment_id}'s debit",
                reason="DEBIT_NOT_FOUND",
            )
        refusal = (
            magic.WALLET_REFUND_NOT_ALLOWED
            if wallet_outcome(debit.phone) is WalletOutcome.REFUND_FAILS
            else ""
        )
        refund, created = self._refunds[wallet].refund(
            payment_id, refund_id, amount_paisa, paid_paisa=debit.paid_paisa, refusal=refusal
        )
        if created and refund.status is RefundStatus.PROCESSED:
            self._balances[(wallet, debit.phone)] = self.balance(wallet, debit.phone) + amount_paisa
        return refund, created

    def refunded_paisa(self, wallet: str, payment_id: str) -> int:
        return self._refunds[wallet].refunded_paisa(payment_id)

    def booked_payments(self) -> list[BookPayment]:
        return [
            debit.to_book(self.refunded_paisa(wallet, debit.payment_id))
            for (wallet, _), debit in self._debits.items()
        ]

    def settleable(self) -> list[Settleable]:
        return [
            entry
            for (wallet, payment_id), debit in self._debits.items()
            for entry in debit.settleable(self._refunds[wallet].settleable(payment_id))
        ]

    def booked_refunds(self) -> list[BookRefund]:
        return booked_refunds(self._refunds.values())
