"""Wallet providers (Paytm, PhonePe, Google Pay, Amazon Pay): balance, instant debit, refunds
and cashback offers.

`WalletBook` holds the balances and debits (plain, synchronous); `WalletProviderServicer` is
its gRPC face. State lives in memory: this is a simulator, and a restarted sandbox starts every
wallet again from its magic opening balance.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.auth import RpcContext
from gateway_core.errors import AlreadyExists, NotFound, invalid_field
from gateway_core.ids import new_id
from paygate.sandbox.v1 import wallets_pb2, wallets_pb2_grpc
from sandbox.magic import WALLET_OFFERS, WALLETS, CashbackOffer, opening_balance_paisa
from sandbox.validation import CURRENCY, Violations

_PHONE = re.compile(r"\d{10}")
# Offers are always "valid for another month", so their end date moves with the calendar.
_OFFER_VALIDITY = timedelta(days=30)


class DebitStatus(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class RefundStatus(StrEnum):
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class WalletRefund:
    refund_id: str
    payment_id: str
    amount_paisa: int
    status: RefundStatus
    wallet_refund_id: str = ""
    failure_code: str = ""


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
    refunds: dict[str, WalletRefund] = field(default_factory=dict)

    @property
    def refunded_paisa(self) -> int:
        return sum(
            r.amount_paisa for r in self.refunds.values() if r.status is RefundStatus.PROCESSED
        )


def offers_of(wallet: str) -> list[CashbackOffer]:
    return [offer for offer in WALLET_OFFERS if offer.wallet == wallet]


class WalletBook:
    """Balances per (wallet, phone) and debits per (wallet, payment_id). Every method runs
    without awaiting, so concurrent calls on the event loop cannot interleave inside one."""

    def __init__(self) -> None:
        self._balances: dict[tuple[str, str], int] = {}
        self._debits: dict[tuple[str, str], WalletDebit] = {}
        self._refunds: dict[tuple[str, str], WalletRefund] = {}

    def balance(self, wallet: str, phone: str) -> int:
        return self._balances.setdefault((wallet, phone), opening_balance_paisa(phone))

    def debit(
        self,
        wallet: str,
        phone: str,
        payment_id: str,
        amount_paisa: int,
        offer: CashbackOffer | None,
    ) -> WalletDebit:
        """Debit once per payment: a repeated call answers the first outcome."""
        known = self._debits.get((wallet, payment_id))
        if known is not None:
            offer_id = offer.offer_id if offer else ""
            if (known.phone, known.amount_paisa, known.offer_id) != (phone, amount_paisa, offer_id):
                raise AlreadyExists(
                    f"payment {payment_id} was debited with other details",
                    reason="DUPLICATE_PAYMENT_ID",
                )
            return known
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
            )
        self._debits[(wallet, payment_id)] = debit
        return debit

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
    ) -> WalletRefund:
        """Refund once per refund id; never more than was debited, over all refunds."""
        debit = self.get_debit(wallet, payment_id)
        if debit.wallet_txn_id != wallet_txn_id:
            raise NotFound(
                f"{wallet} transaction {wallet_txn_id} is not payment {payment_id}'s debit",
                reason="DEBIT_NOT_FOUND",
            )
        known = self._refunds.get((wallet, refund_id))
        if known is not None:
            if (known.payment_id, known.amount_paisa) != (payment_id, amount_paisa):
                raise AlreadyExists(
                    f"refund {refund_id} was requested with other details",
                    reason="DUPLICATE_REFUND_ID",
                )
            return known
        failure = ""
        if debit.status is not DebitStatus.SUCCESS:
            failure = "DEBIT_NOT_SUCCESSFUL"
        elif debit.refunded_paisa + amount_paisa > debit.amount_paisa:
            failure = "REFUND_EXCEEDS_DEBIT"
        if failure:
            refund = WalletRefund(
                refund_id, payment_id, amount_paisa, RefundStatus.FAILED, failure_code=failure
            )
        else:
            refund = WalletRefund(
                refund_id,
                payment_id,
                amount_paisa,
                RefundStatus.PROCESSED,
                wallet_refund_id=new_id("WRF"),
            )
            self._balances[(wallet, debit.phone)] = self.balance(wallet, debit.phone) + amount_paisa
        self._refunds[(wallet, refund_id)] = refund
        debit.refunds[refund_id] = refund
        return refund


class WalletProviderServicer(wallets_pb2_grpc.WalletProviderServiceServicer):
    def __init__(self, book: WalletBook, clock: Callable[[], float] = time.time) -> None:
        self._book = book
        self._clock = clock

    async def GetWalletBalance(
        self, request: wallets_pb2.GetWalletBalanceRequest, context: RpcContext
    ) -> wallets_pb2.WalletBalance:
        wallet = _wallet(request.wallet)
        problems = Violations()
        _check_phone(problems, request.phone)
        problems.raise_if_any()
        return wallets_pb2.WalletBalance(
            wallet=wallet,
            phone=request.phone,
            balance_paisa=self._book.balance(wallet, request.phone),
            currency=CURRENCY,
        )

    async def DebitWallet(
        self, request: wallets_pb2.DebitWalletRequest, context: RpcContext
    ) -> wallets_pb2.WalletDebit:
        wallet = _wallet(request.wallet)
        problems = Violations()
        _check_phone(problems, request.phone)
        problems.required("payment_id", request.payment_id)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        offer = None
        if request.offer_id:
            offer = next((o for o in offers_of(wallet) if o.offer_id == request.offer_id), None)
            if offer is None:
                problems.add("offer_id", f"is not an offer of {wallet}")
        problems.raise_if_any()
        debit = self._book.debit(
            wallet, request.phone, request.payment_id, request.amount_paisa, offer
        )
        return _debit_proto(debit)

    async def GetWalletDebit(
        self, request: wallets_pb2.GetWalletDebitRequest, context: RpcContext
    ) -> wallets_pb2.WalletDebit:
        wallet = _wallet(request.wallet)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        return _debit_proto(self._book.get_debit(wallet, request.payment_id))

    async def RefundWalletDebit(
        self, request: wallets_pb2.RefundWalletDebitRequest, context: RpcContext
    ) -> wallets_pb2.RefundWalletDebitResponse:
        wallet = _wallet(request.wallet)
        problems = Violations()
        problems.required("wallet_txn_id", request.wallet_txn_id)
        problems.required("payment_id", request.payment_id)
        problems.required("refund_id", request.refund_id)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        problems.raise_if_any()
        refund = self._book.refund(
            wallet,
            request.wallet_txn_id,
            request.payment_id,
            request.refund_id,
            request.amount_paisa,
        )
        return wallets_pb2.RefundWalletDebitResponse(
            status=refund.status.value,
            wallet_refund_id=refund.wallet_refund_id,
            failure_code=refund.failure_code,
        )

    async def ListWalletOffers(
        self, request: wallets_pb2.ListWalletOffersRequest, context: RpcContext
    ) -> wallets_pb2.ListWalletOffersResponse:
        wallet = _wallet(request.wallet)
        today = datetime.fromtimestamp(self._clock(), UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        valid_until = Timestamp()
        valid_until.FromDatetime(today + _OFFER_VALIDITY)
        return wallets_pb2.ListWalletOffersResponse(
            offers=[
                wallets_pb2.WalletOffer(
                    offer_id=offer.offer_id,
                    wallet=offer.wallet,
                    description=offer.description,
                    cashback_bps=offer.cashback_bps,
                    max_cashback_paisa=offer.max_cashback_paisa,
                    min_amount_paisa=offer.min_amount_paisa,
                    valid_until=valid_until,
                )
                for offer in offers_of(wallet)
                if request.amount_paisa <= 0 or offer.applies_to(request.amount_paisa)
            ]
        )


def _wallet(value: str) -> str:
    wallet = value.strip().upper()
    if wallet not in WALLETS:
        raise invalid_field("wallet", f"must be one of {', '.join(WALLETS)}")
    return wallet


def _check_phone(problems: Violations, phone: str) -> None:
    if not _PHONE.fullmatch(phone):
        problems.add("phone", "must be 10 digits")


def _debit_proto(debit: WalletDebit) -> wallets_pb2.WalletDebit:
    return wallets_pb2.WalletDebit(
        payment_id=debit.payment_id,
        wallet=debit.wallet,
        status=debit.status.value,
        wallet_txn_id=debit.wallet_txn_id,
        amount_paisa=debit.amount_paisa,
        currency=CURRENCY,
        cashback_paisa=debit.cashback_paisa,
        failure_code=debit.failure_code,
    )
