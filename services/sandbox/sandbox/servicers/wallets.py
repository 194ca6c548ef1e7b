"""The wallet providers' gRPC face (paygate.sandbox.v1.WalletProviderService) over their book
(sandbox.wallets).

It checks each request, calls the book, and adds the provider faults magic phones ask for: a
wallet that is down, or that answers a debit or a refund too late after doing it, or gets a
debit only after the caller gave up (sandbox.faults).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.auth import RpcContext
from gateway_core.errors import Unavailable
from gateway_core.logging import get_logger
from paygate.sandbox.v1 import wallets_pb2, wallets_pb2_grpc
from sandbox import magic
from sandbox.faults import answer_late
from sandbox.magic import WALLETS, CashbackOffer, WalletOutcome, wallet_outcome
from sandbox.tasks import BackgroundTasks
from sandbox.validation import CURRENCY, Violations, one_of
from sandbox.wallets import WalletBook, WalletDebit, offers_of

log = get_logger(__name__)


_PHONE = re.compile(r"\d{10}")


# Offers are always "valid for another month", so their end date moves with the calendar.
_OFFER_VALIDITY = timedelta(days=30)


class WalletProviderServicer(wallets_pb2_grpc.WalletProviderServiceServicer):
    def __init__(self, book: WalletBook, clock: Callable[[], float] = time.time) -> None:
        self._book = book
        self._clock = clock
        self._late = BackgroundTasks()  # DEBIT_LATE debits on their way

    async def aclose(self) -> None:
        await self._late.aclose()

    async def GetWalletBalance(
        self, request: wallets_pb2.GetWalletBalanceRequest, context: RpcContext
    ) -> wallets_pb2.WalletBalance:
        wallet = _wallet(request.wallet)
        problems = Violations()
        _check_phone(problems, request.phone)
        problems.raise_if_any()
        _refuse_if_down(wallet, request.phone)
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
        self._book.note_payment_phone(wallet, request.payment_id, request.phone)
        _refuse_if_down(wallet, request.phone)
        if wallet_outcome(request.phone) is WalletOutcome.DEBIT_LATE:
            # Outlives this call, which the caller's deadline cancels: the request "arrives"
            # after the caller gave up on it.
            self._late.spawn(
                self._debit_later(wallet, request, offer), name=f"late debit {request.payment_id}"
            )
            await answer_late(
                magic.WALLET_HANG_SECONDS,
                "DebitWallet",
                wallet=wallet,
                payment_id=request.payment_id,
            )
            return _debit_proto(self._book.get_debit(wallet, request.payment_id))
        debit, created = self._book.debit(
            wallet,
            request.phone,
            request.payment_id,
            request.amount_paisa,
            offer,
            dict(request.notes),
        )
        if created and wallet_outcome(debit.phone) is WalletOutcome.DEBIT_TIMEOUT:
            await answer_late(
                magic.WALLET_HANG_SECONDS,
                "DebitWallet",
                wallet=wallet,
                payment_id=request.payment_id,
            )
        return _debit_proto(debit)

    async def _debit_later(
        self,
        wallet: str,
        request: wallets_pb2.DebitWalletRequest,
        offer: CashbackOffer | None,
    ) -> None:
        await asyncio.sleep(magic.WALLET_LATE_DEBIT_SECONDS)
        self._book.debit(
            wallet,
            request.phone,
            request.payment_id,
            request.amount_paisa,
            offer,
            dict(request.notes),
        )

    async def GetWalletDebit(
        self, request: wallets_pb2.GetWalletDebitRequest, context: RpcContext
    ) -> wallets_pb2.WalletDebit:
        wallet = _wallet(request.wallet)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        _refuse_if_down(wallet, self._book.payment_phone(wallet, request.payment_id))
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
        phone = self._book.payment_phone(wallet, request.payment_id)
        _refuse_if_down(wallet, phone)
        refund, created = self._book.refund(
            wallet,
            request.wallet_txn_id,
            request.payment_id,
            request.refund_id,
            request.amount_paisa,
        )
        if created and wallet_outcome(phone) is WalletOutcome.REFUND_TIMEOUT:
            await answer_late(
                magic.WALLET_HANG_SECONDS,
                "RefundWalletDebit",
                wallet=wallet,
                payment_id=request.payment_id,
                refund_id=request.refund_id,
            )
        return wallets_pb2.RefundWalletDebitResponse(
            status=refund.status.value,
            wallet_refund_id=refund.provider_refund_id,
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
    return one_of("wallet", value.strip().upper(), WALLETS)


def _refuse_if_down(wallet: str, phone: str) -> None:
    """A wallet down for this phone (magic WalletOutcome.DOWN) answers nothing about it."""
    if wallet_outcome(phone) is WalletOutcome.DOWN:
        log.warning("wallet unreachable (sandbox fault phone)", wallet=wallet)
        raise Unavailable(f"{wallet} is unavailable; retry shortly", reason="WALLET_UNAVAILABLE")


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
