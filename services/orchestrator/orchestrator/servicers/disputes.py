"""paygate.disputes.v1.DisputeService: a merchant's disputes, and every merchant's for admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.auth import RpcContext, caller_from_context, require_admin
from gateway_core.errors import NotFound, invalid_field
from orchestrator.disputes import DisputeFilter, Disputes
from orchestrator.domain.disputes import EVIDENCE_FIELDS
from orchestrator.idempotency import IdempotencyStore, idempotency_key
from orchestrator.servicers.wire import dispute_message
from paygate.disputes.v1 import disputes_pb2, disputes_pb2_grpc

SERVICE = "/paygate.disputes.v1.DisputeService/"
Dispute = disputes_pb2.Dispute
ListRequest = disputes_pb2.ListDisputesRequest | disputes_pb2.AdminListDisputesRequest


class DisputeServicer(disputes_pb2_grpc.DisputeServiceServicer):
    def __init__(self, disputes: Disputes, idempotency: IdempotencyStore) -> None:
        self._disputes = disputes
        self._idempotency = idempotency

    async def ListDisputes(
        self, request: disputes_pb2.ListDisputesRequest, context: RpcContext
    ) -> disputes_pb2.ListDisputesResponse:
        records, token = await self._list(request, _scope(context))
        return disputes_pb2.ListDisputesResponse(disputes=records, next_page_token=token)

    async def GetDispute(
        self, request: disputes_pb2.GetDisputeRequest, context: RpcContext
    ) -> Dispute:
        dispute_id = _required_id(request.dispute_id)
        return dispute_message(await self._disputes.get(dispute_id, _scope(context)))

    async def SubmitDisputeEvidence(
        self, request: disputes_pb2.SubmitDisputeEvidenceRequest, context: RpcContext
    ) -> Dispute:
        dispute_id = _required_id(request.dispute_id)
        given = {name: getattr(request.evidence, name) for name in EVIDENCE_FIELDS}

        async def submit() -> Dispute:
            record = await self._disputes.submit_evidence(dispute_id, _scope(context), given)
            return dispute_message(record)

        return await self._once(context, "SubmitDisputeEvidence", request, submit)

    async def AcceptDispute(
        self, request: disputes_pb2.AcceptDisputeRequest, context: RpcContext
    ) -> Dispute:
        dispute_id = _required_id(request.dispute_id)

        async def accept() -> Dispute:
            return dispute_message(await self._disputes.accept(dispute_id, _scope(context)))

        return await self._once(context, "AcceptDispute", request, accept)

    async def AdminListDisputes(
        self, request: disputes_pb2.AdminListDisputesRequest, context: RpcContext
    ) -> disputes_pb2.AdminListDisputesResponse:
        require_admin(context)
        records, token = await self._list(request, request.merchant_id or None)
        return disputes_pb2.AdminListDisputesResponse(disputes=records, next_page_token=token)

    async def AdminGetDispute(
        self, request: disputes_pb2.AdminGetDisputeRequest, context: RpcContext
    ) -> Dispute:
        require_admin(context)
        return dispute_message(await self._disputes.get(_required_id(request.dispute_id), None))

    async def _once(
        self,
        context: RpcContext,
        method: str,
        request: Message,
        handler: Callable[[], Awaitable[Dispute]],
    ) -> Dispute:
        """With an Idempotency-Key, a retry replays the first answer instead of a 400 for an
        answer already given."""
        return await self._idempotency.run(
            merchant_id=caller_from_context(context).merchant_id,
            key=idempotency_key(context),
            method=SERVICE + method,
            request=request,
            response_type=Dispute,
            handler=handler,
            recover=self._recover,
        )

    async def _recover(self, dispute_id: str) -> Dispute | None:
        try:
            return dispute_message(await self._disputes.get(dispute_id, None))
        except NotFound:
            return None

    async def _list(
        self, request: ListRequest, merchant_id: str | None
    ) -> tuple[list[Dispute], str]:
        where = DisputeFilter(
            merchant_id=merchant_id,
            status=Dispute.Status.Name(request.status) if request.status else None,
            phase=Dispute.Phase.Name(request.phase) if request.phase else None,
            payment_id=request.payment_id or None,
            created_from=_time(request, "created_from"),
            created_to=_time(request, "created_to"),
        )
        records, token = await self._disputes.list(
            where, page_size=request.page_size, page_token=request.page_token
        )
        return [dispute_message(r) for r in records], token


def _scope(context: RpcContext) -> str | None:
    """The merchant whose disputes the caller may see; None for an admin (all of them)."""
    caller = caller_from_context(context)
    return None if caller.is_admin else caller.merchant_id


def _required_id(dispute_id: str) -> str:
    if not dispute_id.strip():
        raise invalid_field("dispute_id", "is required")
    return dispute_id.strip()


def _time(request: ListRequest, name: str) -> datetime | None:
    if not request.HasField(name):
        return None
    stamp: Timestamp = getattr(request, name)
    return stamp.ToDatetime(tzinfo=UTC)
