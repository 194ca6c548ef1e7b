"""Client for the card acquirers (and their 3-D Secure directory/ACS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from orchestrator.providers.base import Outcome, ProviderNotFound, ProviderResult, call_provider
from paygate.sandbox.v1 import cards_pb2, cards_pb2_grpc
from paygate.vault.v1 import vault_pb2

TIMEOUT_SECONDS = 5.0
ACS_PROVIDER = "acs"


@dataclass(frozen=True)
class ThreeDs:
    transaction_id: str
    authenticated: bool
    challenge_url: str = ""
    eci: str = ""
    authentication_value: str = ""


def _card(secret: vault_pb2.DetokenizeResponse) -> cards_pb2.CardDetails:
    return cards_pb2.CardDetails(
        card_number=secret.card_number,
        expiry_month=secret.expiry_month,
        expiry_year=secret.expiry_year,
        cvv=secret.cvv,
        holder_name=secret.holder_name,
    )


class AcquirerClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = cards_pb2_grpc.CardAcquirerServiceStub(channel)

    async def authenticate(
        self,
        *,
        gateway: str,
        payment_id: str,
        merchant_id: str,
        card: vault_pb2.DetokenizeResponse,
        amount_paisa: int,
        currency: str,
        force_challenge: bool,
        return_url: str,
        callback_url: str,
    ) -> ThreeDs:
        reply = await call_provider(
            gateway,
            self._stub.Authenticate3ds(
                cards_pb2.Authenticate3dsRequest(
                    gateway=gateway,
                    payment_id=payment_id,
                    merchant_id=merchant_id,
                    card=_card(card),
                    amount_paisa=amount_paisa,
                    currency=currency,
                    challenge_requested=force_challenge,
                    return_url=return_url,
                    callback_url=callback_url,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        status = cards_pb2.ThreeDsAuthentication
        return ThreeDs(
            transaction_id=reply.three_ds_transaction_id,
            authenticated=reply.status in (status.AUTHENTICATED, status.ATTEMPTED),
            challenge_url=reply.challenge_url if reply.status == status.CHALLENGE_REQUIRED else "",
            eci=reply.eci,
            authentication_value=reply.authentication_value,
        )

    async def authorize(
        self,
        *,
        gateway: str,
        payment_id: str,
        merchant_id: str,
        card: vault_pb2.DetokenizeResponse,
        amount_paisa: int,
        currency: str,
        capture: bool,
        three_ds: ThreeDs,
        emi_tenure_months: int,
        notes: Mapping[str, str],
    ) -> ProviderResult:
        """Raises ProviderTimeout or Unavailable for a gateway that did not answer (failover).
        `notes`: the merchant's metadata, passed on with the payment."""
        reply = await call_provider(
            gateway,
            self._stub.Authorize(
                cards_pb2.AuthorizeRequest(
                    gateway=gateway,
                    payment_id=payment_id,
                    merchant_id=merchant_id,
                    card=_card(card),
                    amount_paisa=amount_paisa,
                    currency=currency,
                    capture=capture,
                    eci=three_ds.eci,
                    authentication_value=three_ds.authentication_value,
                    three_ds_transaction_id=three_ds.transaction_id,
                    emi_tenure_months=emi_tenure_months,
                    notes=notes,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        if reply.status != cards_pb2.CardAuthorization.APPROVED:
            return ProviderResult(
                Outcome.FAILED,
                reply.acquirer_txn_id,
                {"decline_code": reply.decline_code} if reply.decline_code else {},
                failure_reason=reply.decline_reason or "card_declined",
            )
        response = {
            "auth_code": reply.auth_code,
            "rrn": reply.rrn,
            "acquirer_txn_id": reply.acquirer_txn_id,
            "eci": three_ds.eci,
        }
        return ProviderResult(
            Outcome.SUCCESS, reply.acquirer_txn_id, {k: v for k, v in response.items() if v}
        )

    async def capture(
        self,
        *,
        gateway: str,
        acquirer_txn_id: str,
        payment_id: str,
        amount_paisa: int,
        currency: str,
    ) -> ProviderResult:
        """SUCCESS once captured (a repeated capture answers the same); FAILED if refused."""
        reply = await call_provider(
            gateway,
            self._stub.Capture(
                cards_pb2.CaptureRequest(
                    gateway=gateway,
                    acquirer_txn_id=acquirer_txn_id,
                    payment_id=payment_id,
                    amount_paisa=amount_paisa,
                    currency=currency,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        if reply.status == cards_pb2.CaptureResponse.CAPTURED:
            return ProviderResult(Outcome.SUCCESS, acquirer_txn_id)
        return ProviderResult(
            Outcome.FAILED, acquirer_txn_id, failure_reason=reply.failure_code.lower() or "refused"
        )

    async def void(self, *, gateway: str, acquirer_txn_id: str, payment_id: str) -> ProviderResult:
        """SUCCESS once the authorization is released (a repeat answers the same)."""
        reply = await call_provider(
            gateway,
            self._stub.Void(
                cards_pb2.VoidRequest(
                    gateway=gateway, acquirer_txn_id=acquirer_txn_id, payment_id=payment_id
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        if reply.status == cards_pb2.VoidResponse.VOIDED:
            return ProviderResult(Outcome.SUCCESS, acquirer_txn_id)
        return ProviderResult(
            Outcome.FAILED, acquirer_txn_id, failure_reason=reply.failure_code.lower() or "refused"
        )

    async def refund(
        self,
        *,
        gateway: str,
        acquirer_txn_id: str,
        payment_id: str,
        refund_id: str,
        amount_paisa: int,
        currency: str,
    ) -> ProviderResult:
        reply = await call_provider(
            gateway,
            self._stub.RefundCardPayment(
                cards_pb2.RefundCardPaymentRequest(
                    gateway=gateway,
                    acquirer_txn_id=acquirer_txn_id,
                    payment_id=payment_id,
                    refund_id=refund_id,
                    amount_paisa=amount_paisa,
                    currency=currency,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        processed = reply.status == cards_pb2.RefundCardPaymentResponse.PROCESSED
        return ProviderResult(
            Outcome.SUCCESS if processed else Outcome.FAILED,
            reply.acquirer_refund_id,
            failure_reason=reply.failure_code.lower(),
        )

    async def status(self, gateway: str, payment_id: str) -> ProviderResult:
        try:
            reply = await call_provider(
                gateway,
                self._stub.GetAuthorization(
                    cards_pb2.GetAuthorizationRequest(gateway=gateway, payment_id=payment_id),
                    timeout=TIMEOUT_SECONDS,
                ),
            )
        except ProviderNotFound:
            return ProviderResult(Outcome.NOT_FOUND)
        if reply.status == cards_pb2.CardAuthorization.APPROVED:
            return ProviderResult(Outcome.SUCCESS, reply.acquirer_txn_id)
        if reply.status == cards_pb2.CardAuthorization.DECLINED:
            return ProviderResult(Outcome.FAILED, reply.acquirer_txn_id, failure_reason="declined")
        return ProviderResult(Outcome.PENDING)
