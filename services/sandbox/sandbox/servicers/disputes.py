"""The dispute desk's gRPC face (paygate.sandbox.v1.DisputeNetworkService): the gateway answers
a dispute (sandbox.disputes) with evidence, or accepts it."""

from __future__ import annotations

from gateway_core.auth import RpcContext
from paygate.sandbox.v1 import disputes_pb2, disputes_pb2_grpc
from sandbox.disputes import DisputeCase, DisputeDesk
from sandbox.validation import Violations


class DisputeNetworkServicer(disputes_pb2_grpc.DisputeNetworkServiceServicer):
    def __init__(self, desk: DisputeDesk) -> None:
        self._desk = desk

    async def SubmitDisputeEvidence(
        self, request: disputes_pb2.SubmitDisputeEvidenceRequest, context: RpcContext
    ) -> disputes_pb2.DisputeCase:
        problems = Violations()
        problems.required("provider", request.provider)
        problems.required("case_reference", request.case_reference)
        problems.required("payment_id", request.payment_id)
        problems.required("summary", request.summary)
        problems.http_url("callback_url", request.callback_url)
        problems.raise_if_any()
        case = self._desk.submit_evidence(
            request.provider,
            request.case_reference,
            request.payment_id,
            request.summary,
            request.callback_url,
        )
        return _case_proto(case)

    async def AcceptChargeback(
        self, request: disputes_pb2.AcceptChargebackRequest, context: RpcContext
    ) -> disputes_pb2.DisputeCase:
        problems = Violations()
        problems.required("provider", request.provider)
        problems.required("case_reference", request.case_reference)
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        return _case_proto(
            self._desk.accept(request.provider, request.case_reference, request.payment_id)
        )


def _case_proto(case: DisputeCase) -> disputes_pb2.DisputeCase:
    return disputes_pb2.DisputeCase(
        provider=case.provider,
        case_reference=case.case_reference,
        payment_id=case.payment_id,
        status=case.status.value,
    )
