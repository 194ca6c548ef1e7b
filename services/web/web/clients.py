"""The other services, as the pages use them: the orchestrator (payments, merchants, EMI plans)
and the webhook service (endpoints, deliveries, the callback secret). Every call carries the
identity it acts for, as Envoy would set it from a verified token: the checkout page acts for the
session's merchant, the dashboard for its signed-in user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from gateway_core.auth import MERCHANT_ID_KEY, ROLE_KEY
from paygate.disputes.v1 import disputes_pb2, disputes_pb2_grpc
from paygate.merchants.v1 import merchants_pb2, merchants_pb2_grpc
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc
from paygate.reconciliation.v1 import (
    merchant_reporting_pb2,
    merchant_reporting_pb2_grpc,
    reconciliation_pb2,
    reconciliation_pb2_grpc,
)
from paygate.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

TIMEOUT_SECONDS = 15.0
ADMIN_SUBJECT = "admin"


@dataclass(frozen=True)
class Acting:
    """Who a call acts for."""

    merchant_id: str
    role: str = "merchant"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((MERCHANT_ID_KEY, self.merchant_id), (ROLE_KEY, self.role))

    @classmethod
    def admin(cls) -> Acting:
        return cls(ADMIN_SUBJECT, "admin")


class Gateway:
    def __init__(
        self,
        orchestrator: grpc.aio.Channel,
        webhook: grpc.aio.Channel,
        reconciliation: grpc.aio.Channel,
    ) -> None:
        self.payments = payments_pb2_grpc.PaymentServiceStub(orchestrator)
        self.merchants = merchants_pb2_grpc.MerchantServiceStub(orchestrator)
        self.disputes = disputes_pb2_grpc.DisputeServiceStub(orchestrator)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(webhook)
        self.reporting = merchant_reporting_pb2_grpc.MerchantReportingServiceStub(reconciliation)
        self.reconciliation = reconciliation_pb2_grpc.ReconciliationServiceStub(reconciliation)

    async def open_exceptions(self) -> list[reconciliation_pb2.ReconciliationException]:
        """The reconciliation exceptions waiting for a person (admin)."""
        reply: reconciliation_pb2.ListReconciliationExceptionsResponse = await _call(
            self.reconciliation.ListReconciliationExceptions,
            reconciliation_pb2.ListReconciliationExceptionsRequest(
                page_size=100, status=reconciliation_pb2.ReconciliationException.OPEN
            ),
            Acting.admin(),
        )
        return list(reply.exceptions)

    async def analytics(
        self, acting: Acting, request: merchant_reporting_pb2.GetMerchantPaymentAnalyticsRequest
    ) -> reconciliation_pb2.PaymentAnalytics:
        found: reconciliation_pb2.PaymentAnalytics = await _call(
            self.reporting.GetMerchantPaymentAnalytics, request, acting
        )
        return found

    async def merchant_name(self, merchant_id: str) -> str:
        merchant: merchants_pb2.Merchant = await _call(
            self.merchants.GetMerchant,
            merchants_pb2.GetMerchantRequest(merchant_id=merchant_id),
            Acting(merchant_id),
        )
        return merchant.name

    async def create_payment(
        self, acting: Acting, request: payments_pb2.CreatePaymentRequest, idempotency_key: str
    ) -> payments_pb2.Payment:
        payment: payments_pb2.Payment = await _call(
            self.payments.CreatePayment,
            request,
            acting,
            extra=(("idempotency-key", idempotency_key),),
        )
        return payment

    async def get_payment(self, acting: Acting, payment_id: str) -> payments_pb2.Payment:
        payment: payments_pb2.Payment = await _call(
            self.payments.GetPayment, payments_pb2.GetPaymentRequest(payment_id=payment_id), acting
        )
        return payment

    async def emi_plans(self, acting: Acting, amount_paisa: int) -> list[payments_pb2.EmiPlan]:
        reply: payments_pb2.ListEmiPlansResponse = await _call(
            self.payments.ListEmiPlans,
            payments_pb2.ListEmiPlansRequest(amount_paisa=amount_paisa),
            acting,
        )
        return list(reply.plans)

    async def list_payments(
        self, acting: Acting, request: payments_pb2.ListPaymentsRequest
    ) -> payments_pb2.ListPaymentsResponse:
        reply: payments_pb2.ListPaymentsResponse = await _call(
            self.payments.ListPayments, request, acting
        )
        return reply

    async def refund(
        self, acting: Acting, request: payments_pb2.RefundPaymentRequest, idempotency_key: str
    ) -> payments_pb2.Refund:
        refund: payments_pb2.Refund = await _call(
            self.payments.RefundPayment,
            request,
            acting,
            extra=(("idempotency-key", idempotency_key),),
        )
        return refund

    async def list_disputes(
        self, acting: Acting, payment_id: str = ""
    ) -> list[disputes_pb2.Dispute]:
        reply: disputes_pb2.ListDisputesResponse = await _call(
            self.disputes.ListDisputes,
            disputes_pb2.ListDisputesRequest(page_size=100, payment_id=payment_id),
            acting,
        )
        return list(reply.disputes)

    async def get_dispute(self, acting: Acting, dispute_id: str) -> disputes_pb2.Dispute:
        dispute: disputes_pb2.Dispute = await _call(
            self.disputes.GetDispute, disputes_pb2.GetDisputeRequest(dispute_id=dispute_id), acting
        )
        return dispute

    async def submit_evidence(
        self, acting: Acting, dispute_id: str, evidence: disputes_pb2.DisputeEvidence
    ) -> disputes_pb2.Dispute:
        dispute: disputes_pb2.Dispute = await _call(
            self.disputes.SubmitDisputeEvidence,
            disputes_pb2.SubmitDisputeEvidenceRequest(dispute_id=dispute_id, evidence=evidence),
            acting,
        )
        return dispute

    async def accept_dispute(self, acting: Acting, dispute_id: str) -> disputes_pb2.Dispute:
        dispute: disputes_pb2.Dispute = await _call(
            self.disputes.AcceptDispute,
            disputes_pb2.AcceptDisputeRequest(dispute_id=dispute_id),
            acting,
        )
        return dispute

    async def callback_secret(self, merchant_id: str) -> str:
        secret: webhooks_pb2.CallbackSecret = await _call(
            self.webhooks.GetCallbackSecret,
            webhooks_pb2.GetCallbackSecretRequest(),
            Acting(merchant_id),
        )
        return secret.secret

    async def list_webhooks(self, acting: Acting) -> list[webhooks_pb2.Webhook]:
        reply: webhooks_pb2.ListWebhooksResponse = await _call(
            self.webhooks.ListWebhooks, webhooks_pb2.ListWebhooksRequest(page_size=100), acting
        )
        return list(reply.webhooks)

    async def get_webhook(self, acting: Acting, webhook_id: str) -> webhooks_pb2.Webhook:
        webhook: webhooks_pb2.Webhook = await _call(
            self.webhooks.GetWebhook, webhooks_pb2.GetWebhookRequest(webhook_id=webhook_id), acting
        )
        return webhook

    async def deliveries(
        self, acting: Acting, webhook_id: str, page_size: int = 50
    ) -> list[webhooks_pb2.WebhookDelivery]:
        reply: webhooks_pb2.ListWebhookDeliveriesResponse = await _call(
            self.webhooks.ListWebhookDeliveries,
            webhooks_pb2.ListWebhookDeliveriesRequest(webhook_id=webhook_id, page_size=page_size),
            acting,
        )
        return list(reply.deliveries)

    async def replay(
        self, acting: Acting, webhook_id: str, delivery_id: str
    ) -> webhooks_pb2.WebhookDelivery:
        delivery: webhooks_pb2.WebhookDelivery = await _call(
            self.webhooks.ReplayWebhookDelivery,
            webhooks_pb2.ReplayWebhookDeliveryRequest(
                webhook_id=webhook_id, delivery_id=delivery_id
            ),
            acting,
        )
        return delivery


async def _call(
    method: grpc.aio.UnaryUnaryMultiCallable,  # type: ignore[type-arg]
    request: object,
    acting: Acting,
    *,
    extra: tuple[tuple[str, str], ...] = (),
) -> Any:
    return await method(request, metadata=acting.metadata + extra, timeout=TIMEOUT_SECONDS)
