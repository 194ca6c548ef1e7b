"""Client for the UPI switch (UPI Core) over gRPC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.errors import DeadlineExceeded, GatewayError, Unavailable
from orchestrator.providers.base import (
    Outcome,
    ProviderNotFound,
    ProviderResult,
    ProviderTimeout,
    call_provider,
)
from paygate.sandbox.v1 import upi_pb2, upi_pb2_grpc

PROVIDER_NAME = "upi_core"
# Calls on the merchant's request path: fail fast rather than hang the checkout. A switch that
# misses this deadline on initiation leaves the payment PENDING and is asked again later.
LOOKUP_TIMEOUT_SECONDS = 3.0
INITIATE_TIMEOUT_SECONDS = 2.0
INQUIRY_TIMEOUT_SECONDS = 3.0

_OUTCOMES = {
    upi_pb2.TRANSACTION_PENDING: Outcome.PENDING,
    upi_pb2.TRANSACTION_SUCCESS: Outcome.SUCCESS,
    upi_pb2.TRANSACTION_FAILED: Outcome.FAILED,
    upi_pb2.TRANSACTION_EXPIRED: Outcome.EXPIRED,
}


@dataclass(frozen=True)
class VpaLookup:
    exists: bool
    holder_name: str


class UpiCoreClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = upi_pb2_grpc.UpiCoreServiceStub(channel)

    async def validate_vpa(self, vpa: str) -> VpaLookup:
        try:
            reply = await self._stub.ValidateVpa(
                upi_pb2.ValidateVpaRequest(vpa=vpa), timeout=LOOKUP_TIMEOUT_SECONDS
            )
        except GatewayError as exc:
            if isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(
                    "the UPI network did not answer the VPA lookup in time; retry",
                    reason="PROVIDER_TIMEOUT",
                ) from exc
            raise Unavailable(
                "the UPI network is unavailable; retry shortly", reason="PROVIDER_UNAVAILABLE"
            ) from exc
        return VpaLookup(exists=reply.exists, holder_name=reply.holder_name)

    async def initiate(
        self,
        *,
        payment_id: str,
        payer_vpa: str,
        payee_vpa: str,
        payee_name: str,
        amount_paisa: int,
        currency: str,
        note: str,
        flow: str,
        callback_url: str,
        expires_at: datetime,
        notes: Mapping[str, str],
    ) -> ProviderResult:
        """Register the transaction at the switch. Raises ProviderTimeout when it is silent.
        `notes`: the merchant's metadata, passed on with the payment."""
        expiry = Timestamp()
        expiry.FromDatetime(expires_at)
        reply = await call_provider(
            PROVIDER_NAME,
            self._stub.InitiateTransaction(
                upi_pb2.InitiateTransactionRequest(
                    transaction_ref=payment_id,
                    payer_vpa=payer_vpa,
                    payee_vpa=payee_vpa,
                    payee_name=payee_name,
                    amount_paisa=amount_paisa,
                    currency=currency,
                    note=note,
                    flow=flow,
                    callback_url=callback_url,
                    expires_at=expiry,
                    notes=notes,
                ),
                timeout=INITIATE_TIMEOUT_SECONDS,
            ),
        )
        return ProviderResult(_OUTCOMES.get(reply.status, Outcome.PENDING), reply.upi_txn_id)

    async def status(self, payment_id: str) -> ProviderResult:
        try:
            reply = await call_provider(
                PROVIDER_NAME,
                self._stub.CheckTransactionStatus(
                    upi_pb2.CheckTransactionStatusRequest(transaction_ref=payment_id),
                    timeout=INQUIRY_TIMEOUT_SECONDS,
                ),
            )
        except ProviderNotFound:
            return ProviderResult(Outcome.NOT_FOUND)
        return _status_result(
            reply.status, reply.upi_txn_id, reply.rrn, reply.approval_code, reply.response_code
        )

    async def cancel(self, payment_id: str) -> ProviderResult:
        """Withdraw a pending request: FAILED (or EXPIRED) once the switch will never take the
        customer's money for it; SUCCESS when the customer had already paid."""
        try:
            reply = await call_provider(
                PROVIDER_NAME,
                self._stub.CancelTransaction(
                    upi_pb2.CancelTransactionRequest(transaction_ref=payment_id),
                    timeout=INQUIRY_TIMEOUT_SECONDS,
                ),
            )
        except ProviderNotFound:
            return ProviderResult(Outcome.NOT_FOUND)
        return _status_result(
            reply.status, reply.upi_txn_id, reply.rrn, reply.approval_code, reply.response_code
        )

    async def refund(self, *, payment_id: str, refund_id: str, amount_paisa: int) -> ProviderResult:
        reply = await call_provider(
            PROVIDER_NAME,
            self._stub.RefundTransaction(
                upi_pb2.RefundTransactionRequest(
                    transaction_ref=payment_id, refund_ref=refund_id, amount_paisa=amount_paisa
                ),
                timeout=INQUIRY_TIMEOUT_SECONDS,
            ),
        )
        outcome = _OUTCOMES.get(reply.status, Outcome.PENDING)
        return ProviderResult(outcome, reply.upi_refund_id)


def _status_result(
    status: upi_pb2.TransactionStatus,
    upi_txn_id: str,
    rrn: str,
    approval_code: str,
    response_code: str,
) -> ProviderResult:
    outcome = _OUTCOMES.get(status, Outcome.PENDING)
    response = {"rrn": rrn, "approval_code": approval_code, "response_code": response_code}
    return ProviderResult(
        outcome,
        upi_txn_id,
        {k: v for k, v in response.items() if v},
        failure_reason="declined" if outcome == Outcome.FAILED else "",
    )


__all__ = ["PROVIDER_NAME", "ProviderTimeout", "UpiCoreClient", "VpaLookup"]
