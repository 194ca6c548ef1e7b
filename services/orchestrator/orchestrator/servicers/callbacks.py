"""paygate.callbacks.v1.ProviderCallbackService: signed reports from providers.

The body arrives byte for byte (google.api.HttpBody) because the signature covers exactly
those bytes; the signature itself arrives as the `x-provider-signature` header.
"""

from __future__ import annotations

from gateway_core.auth import RpcContext
from gateway_core.errors import Unauthenticated
from orchestrator.disputes import CALLBACK_TYPES, Disputes
from orchestrator.processing import PaymentProcessor
from paygate.callbacks.v1 import callbacks_pb2, callbacks_pb2_grpc

SIGNATURE_HEADER = "x-provider-signature"


class ProviderCallbackServicer(callbacks_pb2_grpc.ProviderCallbackServiceServicer):
    def __init__(self, processor: PaymentProcessor, disputes: Disputes) -> None:
        self._processor = processor
        self._disputes = disputes

    async def ReceiveProviderCallback(
        self, request: callbacks_pb2.ReceiveProviderCallbackRequest, context: RpcContext
    ) -> callbacks_pb2.ReceiveProviderCallbackResponse:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        signature = metadata.get(SIGNATURE_HEADER, "")
        if not isinstance(signature, str) or not signature:
            raise Unauthenticated(
                f"the {SIGNATURE_HEADER} header is required", reason="MISSING_SIGNATURE"
            )
        doc = self._processor.authenticate_callback(request.provider, request.body.data, signature)
        if doc.get("type") in CALLBACK_TYPES:
            # A chargeback, or the provider's decision on one: replays change nothing (one
            # dispute per provider case, decided once).
            disputed = await self._disputes.on_callback(request.provider, doc)
            return callbacks_pb2.ReceiveProviderCallbackResponse(
                applied=disputed.applied,
                payment_id=disputed.payment.payment_id,
                status=disputed.payment.status.value,
            )
        result = await self._processor.handle_callback(request.provider, doc)
        return callbacks_pb2.ReceiveProviderCallbackResponse(
            applied=result.applied,
            payment_id=result.payment.payment_id,
            status=result.payment.status.value,
        )
