"""UPI Core's gRPC face (paygate.sandbox.v1.UpiCoreService) over the switch (sandbox.upi).

It checks each request, calls the switch, and adds what takes time: the hanging switch of
timeout@upi and the timers that let the simulated customer approve after a delay.
"""

from __future__ import annotations

import re
from datetime import UTC

from gateway_core.auth import RpcContext
from paygate.sandbox.v1 import upi_pb2, upi_pb2_grpc
from sandbox import magic
from sandbox.faults import answer_late
from sandbox.magic import UpiOutcome, holder_name, upi_outcome
from sandbox.tasks import BackgroundTasks, sleep_until
from sandbox.upi import FLOWS, UpiStatus, UpiSwitch, UpiTransaction
from sandbox.validation import Violations

# What a switch accepts as a VPA at all; malformed ones simply do not exist.
_VPA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,255}@[A-Za-z][A-Za-z0-9]{1,63}")


_PROTO_STATUS: dict[UpiStatus, upi_pb2.TransactionStatus] = {
    UpiStatus.PENDING: upi_pb2.TRANSACTION_PENDING,
    UpiStatus.SUCCESS: upi_pb2.TRANSACTION_SUCCESS,
    UpiStatus.FAILED: upi_pb2.TRANSACTION_FAILED,
    UpiStatus.EXPIRED: upi_pb2.TRANSACTION_EXPIRED,
}


class UpiCoreServicer(upi_pb2_grpc.UpiCoreServiceServicer):
    def __init__(self, switch: UpiSwitch) -> None:
        self._switch = switch
        self._timers = BackgroundTasks()

    async def ValidateVpa(
        self, request: upi_pb2.ValidateVpaRequest, context: RpcContext
    ) -> upi_pb2.ValidateVpaResponse:
        vpa = request.vpa.strip()
        if not _VPA.fullmatch(vpa) or upi_outcome(vpa) is UpiOutcome.NO_SUCH_VPA:
            return upi_pb2.ValidateVpaResponse(exists=False)
        return upi_pb2.ValidateVpaResponse(exists=True, holder_name=holder_name(vpa))

    async def InitiateTransaction(
        self, request: upi_pb2.InitiateTransactionRequest, context: RpcContext
    ) -> upi_pb2.InitiateTransactionResponse:
        flow = request.flow.strip().upper() or "INTENT"
        payer_vpa = request.payer_vpa.strip().lower()
        expires_at = request.expires_at.ToDatetime(UTC) if request.HasField("expires_at") else None
        problems = Violations()
        problems.required("transaction_ref", request.transaction_ref)
        problems.positive("amount_paisa", request.amount_paisa)
        if request.currency:
            problems.currency("currency", request.currency)
        if flow not in FLOWS:
            problems.add("flow", "must be INTENT or COLLECT")
        if flow == "COLLECT":
            problems.required("payer_vpa", payer_vpa)
        if payer_vpa and not _VPA.fullmatch(payer_vpa):
            problems.add("payer_vpa", "is not a valid VPA")
        problems.http_url("callback_url", request.callback_url)
        problems.raise_if_any()

        txn, created = self._switch.initiate(
            transaction_ref=request.transaction_ref,
            payer_vpa=payer_vpa,
            amount_paisa=request.amount_paisa,
            flow=flow,
            callback_url=request.callback_url,
            expires_at=expires_at.timestamp() if expires_at is not None else None,
            notes=dict(request.notes),
        )
        if created and txn.resolve_at is not None and txn.calls_back:
            self._timers.spawn(self._settle_when_due(txn), name=f"upi {txn.transaction_ref}")
        if created and not txn.calls_back:
            # The switch is "down": the caller's deadline passes long before this answer.
            await answer_late(
                magic.UPI_HANG_SECONDS, "InitiateTransaction", transaction_ref=txn.transaction_ref
            )
            self._switch.settle(txn)
        return upi_pb2.InitiateTransactionResponse(
            upi_txn_id=txn.upi_txn_id, status=_PROTO_STATUS[txn.status]
        )

    async def CheckTransactionStatus(
        self, request: upi_pb2.CheckTransactionStatusRequest, context: RpcContext
    ) -> upi_pb2.CheckTransactionStatusResponse:
        problems = Violations()
        problems.required("transaction_ref", request.transaction_ref)
        problems.raise_if_any()
        txn = self._switch.get(request.transaction_ref)
        return upi_pb2.CheckTransactionStatusResponse(
            upi_txn_id=txn.upi_txn_id,
            status=_PROTO_STATUS[txn.status],
            rrn=txn.rrn,
            approval_code=txn.approval_code,
            response_code=txn.response_code,
        )

    async def CancelTransaction(
        self, request: upi_pb2.CancelTransactionRequest, context: RpcContext
    ) -> upi_pb2.CancelTransactionResponse:
        problems = Violations()
        problems.required("transaction_ref", request.transaction_ref)
        problems.raise_if_any()
        txn = self._switch.cancel(request.transaction_ref)
        return upi_pb2.CancelTransactionResponse(
            upi_txn_id=txn.upi_txn_id,
            status=_PROTO_STATUS[txn.status],
            rrn=txn.rrn,
            approval_code=txn.approval_code,
            response_code=txn.response_code,
        )

    async def RefundTransaction(
        self, request: upi_pb2.RefundTransactionRequest, context: RpcContext
    ) -> upi_pb2.RefundTransactionResponse:
        problems = Violations()
        problems.required("transaction_ref", request.transaction_ref)
        problems.required("refund_ref", request.refund_ref)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.raise_if_any()
        refund = self._switch.refund(
            request.transaction_ref, request.refund_ref, request.amount_paisa
        )
        return upi_pb2.RefundTransactionResponse(
            upi_refund_id=refund.provider_refund_id, status=upi_pb2.TRANSACTION_SUCCESS
        )

    async def aclose(self) -> None:
        await self._timers.aclose()

    async def _settle_when_due(self, txn: UpiTransaction) -> None:
        assert txn.resolve_at is not None
        await sleep_until(txn.resolve_at, self._switch.now)
        self._switch.settle(txn, as_of=txn.resolve_at)
