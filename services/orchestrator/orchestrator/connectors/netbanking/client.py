"""Client for net banking: the bank's page takes the customer, then the bank calls back."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from orchestrator.providers.base import Outcome, ProviderNotFound, ProviderResult, call_provider
from paygate.sandbox.v1 import netbanking_pb2, netbanking_pb2_grpc

PROVIDER_NAME = "netbanking"
TIMEOUT_SECONDS = 3.0
# Banks join and leave the provider rarely: its list is asked for again after this long.
BANKS_TTL_SECONDS = 300.0

_OUTCOMES = {
    netbanking_pb2.NetBankingPayment.PENDING: Outcome.PENDING,
    netbanking_pb2.NetBankingPayment.SUCCESS: Outcome.SUCCESS,
    netbanking_pb2.NetBankingPayment.FAILED: Outcome.FAILED,
}


@dataclass(frozen=True)
class Redirect:
    redirect_url: str


class NetBankingClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = netbanking_pb2_grpc.NetBankingServiceStub(channel)
        self._banks: frozenset[str] | None = None
        self._banks_at = 0.0

    async def initiate(
        self,
        *,
        bank_code: str,
        payment_id: str,
        merchant_id: str,
        amount_paisa: int,
        currency: str,
        return_url: str,
        callback_url: str,
        notes: Mapping[str, str],
    ) -> Redirect:
        """`notes`: the merchant's metadata, passed on with the payment."""
        reply = await call_provider(
            PROVIDER_NAME,
            self._stub.InitiateNetBankingPayment(
                netbanking_pb2.InitiateNetBankingPaymentRequest(
                    bank_code=bank_code,
                    payment_id=payment_id,
                    merchant_id=merchant_id,
                    amount_paisa=amount_paisa,
                    currency=currency,
                    return_url=return_url,
                    callback_url=callback_url,
                    notes=notes,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        return Redirect(reply.redirect_url)

    async def banks(self) -> frozenset[str]:
        """The bank codes the provider takes payments for (asked once per BANKS_TTL)."""
        now = time.monotonic()
        if self._banks is None or now - self._banks_at > BANKS_TTL_SECONDS:
            reply = await call_provider(
                PROVIDER_NAME,
                self._stub.ListBanks(netbanking_pb2.ListBanksRequest(), timeout=TIMEOUT_SECONDS),
            )
            self._banks = frozenset(bank.bank_code for bank in reply.banks)
            self._banks_at = now
        return self._banks

    async def status(self, bank_code: str, payment_id: str) -> ProviderResult:
        try:
            reply = await call_provider(
                PROVIDER_NAME,
                self._stub.GetNetBankingPayment(
                    netbanking_pb2.GetNetBankingPaymentRequest(
                        bank_code=bank_code, payment_id=payment_id
                    ),
                    timeout=TIMEOUT_SECONDS,
                ),
            )
        except ProviderNotFound:
            return ProviderResult(Outcome.NOT_FOUND)
        return _payment_result(reply)

    async def cancel(self, bank_code: str, payment_id: str) -> ProviderResult:
        """Close the bank's page for a payment: FAILED once the customer can no longer pay on
        it; SUCCESS when they already had."""
        try:
            reply = await call_provider(
                PROVIDER_NAME,
                self._stub.CancelNetBankingPayment(
                    netbanking_pb2.CancelNetBankingPaymentRequest(
                        bank_code=bank_code, payment_id=payment_id
                    ),
                    timeout=TIMEOUT_SECONDS,
                ),
            )
        except ProviderNotFound:
            return ProviderResult(Outcome.NOT_FOUND)
        return _payment_result(reply)

    async def refund(
        self, *, bank_code: str, payment_id: str, refund_id: str, amount_paisa: int, currency: str
    ) -> ProviderResult:
        reply = await call_provider(
            PROVIDER_NAME,
            self._stub.RefundNetBankingPayment(
                netbanking_pb2.RefundNetBankingPaymentRequest(
                    bank_code=bank_code,
                    payment_id=payment_id,
                    refund_id=refund_id,
                    amount_paisa=amount_paisa,
                    currency=currency,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        processed = reply.status == netbanking_pb2.RefundNetBankingPaymentResponse.PROCESSED
        return ProviderResult(
            Outcome.SUCCESS if processed else Outcome.FAILED,
            reply.bank_refund_reference,
            failure_reason=reply.failure_code.lower(),
        )


def _payment_result(reply: netbanking_pb2.NetBankingPayment) -> ProviderResult:
    outcome = _OUTCOMES.get(reply.status, Outcome.PENDING)
    response = {"bank_reference": reply.bank_reference} if reply.bank_reference else {}
    return ProviderResult(
        outcome, reply.bank_reference, response, failure_reason=reply.failure_code.lower()
    )
