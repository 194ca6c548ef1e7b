"""Client for the wallet providers (Paytm, PhonePe, Google Pay, Amazon Pay) over gRPC."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from orchestrator.providers.base import Outcome, ProviderNotFound, ProviderResult, call_provider
from paygate.sandbox.v1 import wallets_pb2, wallets_pb2_grpc

TIMEOUT_SECONDS = 3.0


def provider_name(wallet: str) -> str:
    return wallet.lower()


class WalletClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = wallets_pb2_grpc.WalletProviderServiceStub(channel)

    async def balance(self, wallet: str, phone: str) -> int:
        reply = await call_provider(
            provider_name(wallet),
            self._stub.GetWalletBalance(
                wallets_pb2.GetWalletBalanceRequest(wallet=wallet, phone=phone),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        return reply.balance_paisa

    async def best_offer(self, wallet: str, merchant_id: str, amount_paisa: int) -> str:
        """The offer giving the customer the most cashback on this amount ('' if none)."""
        reply = await call_provider(
            provider_name(wallet),
            self._stub.ListWalletOffers(
                wallets_pb2.ListWalletOffersRequest(
                    wallet=wallet, merchant_id=merchant_id, amount_paisa=amount_paisa
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        eligible = [o for o in reply.offers if amount_paisa >= o.min_amount_paisa]
        if not eligible:
            return ""

        def cashback(offer: wallets_pb2.WalletOffer) -> int:
            return min(amount_paisa * offer.cashback_bps // 10_000, offer.max_cashback_paisa)

        return max(eligible, key=cashback).offer_id

    async def debit(
        self,
        *,
        wallet: str,
        phone: str,
        payment_id: str,
        merchant_id: str,
        amount_paisa: int,
        currency: str,
        offer_id: str,
        notes: Mapping[str, str],
    ) -> ProviderResult:
        """`notes`: the merchant's metadata, passed on with the payment."""
        reply = await call_provider(
            provider_name(wallet),
            self._stub.DebitWallet(
                wallets_pb2.DebitWalletRequest(
                    wallet=wallet,
                    phone=phone,
                    payment_id=payment_id,
                    merchant_id=merchant_id,
                    amount_paisa=amount_paisa,
                    currency=currency,
                    offer_id=offer_id,
                    notes=notes,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        return _result(reply, offer_id)

    async def status(self, wallet: str, payment_id: str) -> ProviderResult:
        try:
            reply = await call_provider(
                provider_name(wallet),
                self._stub.GetWalletDebit(
                    wallets_pb2.GetWalletDebitRequest(wallet=wallet, payment_id=payment_id),
                    timeout=TIMEOUT_SECONDS,
                ),
            )
        except ProviderNotFound:
            return ProviderResult(Outcome.NOT_FOUND)
        return _result(reply, "")

    async def refund(
        self,
        *,
        wallet: str,
        wallet_txn_id: str,
        payment_id: str,
        refund_id: str,
        amount_paisa: int,
        currency: str,
    ) -> ProviderResult:
        reply = await call_provider(
            provider_name(wallet),
            self._stub.RefundWalletDebit(
                wallets_pb2.RefundWalletDebitRequest(
                    wallet=wallet,
                    wallet_txn_id=wallet_txn_id,
                    payment_id=payment_id,
                    refund_id=refund_id,
                    amount_paisa=amount_paisa,
                    currency=currency,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        processed = reply.status == wallets_pb2.RefundWalletDebitResponse.PROCESSED
        return ProviderResult(
            Outcome.SUCCESS if processed else Outcome.FAILED,
            reply.wallet_refund_id,
            failure_reason=reply.failure_code.lower(),
        )


def _result(reply: wallets_pb2.WalletDebit, offer_id: str) -> ProviderResult:
    if reply.status == wallets_pb2.WalletDebit.SUCCESS:
        response = {"wallet_txn_id": reply.wallet_txn_id}
        if reply.cashback_paisa:
            response["cashback_paisa"] = str(reply.cashback_paisa)
            response["offer_id"] = offer_id
        return ProviderResult(Outcome.SUCCESS, reply.wallet_txn_id, response)
    return ProviderResult(
        Outcome.FAILED, reply.wallet_txn_id, failure_reason=reply.failure_code.lower()
    )
