"""Client for the providers' dispute desks: the merchant's answer to a chargeback goes back to
the acquirer (or the UPI switch) that raised it. The sandbox serves every provider's desk."""

from __future__ import annotations

import grpc

from orchestrator.providers.base import call_provider
from paygate.sandbox.v1 import disputes_pb2, disputes_pb2_grpc

TIMEOUT_SECONDS = 5.0


class DisputeDeskClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = disputes_pb2_grpc.DisputeNetworkServiceStub(channel)

    async def submit_evidence(
        self,
        *,
        provider: str,
        case_reference: str,
        payment_id: str,
        summary: str,
        callback_url: str,
    ) -> None:
        """Represent the merchant's case; the decision comes back as a signed callback."""
        await call_provider(
            provider,
            self._stub.SubmitDisputeEvidence(
                disputes_pb2.SubmitDisputeEvidenceRequest(
                    provider=provider,
                    case_reference=case_reference,
                    payment_id=payment_id,
                    summary=summary,
                    callback_url=callback_url,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )

    async def accept(self, *, provider: str, case_reference: str, payment_id: str) -> None:
        await call_provider(
            provider,
            self._stub.AcceptChargeback(
                disputes_pb2.AcceptChargebackRequest(
                    provider=provider, case_reference=case_reference, payment_id=payment_id
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
