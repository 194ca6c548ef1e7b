"""paygate.payments.v1.PaymentService.

Capture, cancel and refund are left to the base class (UNIMPLEMENTED, HTTP 501) until the
payments-core issue builds them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway_core.auth import Caller, RpcContext, caller_from_context
from gateway_core.config import Settings
from gateway_core.errors import PermissionDenied, Unimplemented, invalid_field
from gateway_core.ids import new_id
from orchestrator.domain.states import Status
from orchestrator.domain.upi import pay_link
from orchestrator.domain.validation import validate_create_payment
from orchestrator.providers.upi_core import PROVIDER_NAME, UpiCoreClient
from orchestrator.records import MerchantRecord
from orchestrator.repository import NewPayment, PaymentFilter, Repository
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, repo: Repository, upi: UpiCoreClient, settings: Settings) -> None:
        self._repo = repo
        self._upi = upi
        self._settings = settings

    async def CreatePayment(
        self, request: payments_pb2.CreatePaymentRequest, context: RpcContext
    ) -> payments_pb2.Payment:
        caller = caller_from_context(context)
        if request.merchant_id and request.merchant_id != caller.merchant_id:
            raise PermissionDenied(
                "merchant_id in the body does not match the authenticated merchant",
                reason="MERCHANT_MISMATCH",
            )
        merchant = await self._active_merchant(caller)
        validate_create_payment(request, max_amount_paisa=self._settings.max_payment_amount_paisa)
        if request.payment_method != payments_pb2.UPI:
            method = payments_pb2.PaymentMethod.Name(request.payment_method)
            raise Unimplemented(
                f"{method} payments are not available yet", reason="METHOD_NOT_AVAILABLE"
            )
        return await self._create_upi_intent(request, merchant)

    async def GetPayment(
        self, request: payments_pb2.GetPaymentRequest, context: RpcContext
    ) -> payments_pb2.Payment:
        caller = caller_from_context(context)
        scope = None if caller.is_admin else caller.merchant_id
        record = await self._repo.get_payment(request.payment_id, scope)
        return record.to_proto()

    async def ListPayments(
        self, request: payments_pb2.ListPaymentsRequest, context: RpcContext
    ) -> payments_pb2.ListPaymentsResponse:
        caller = caller_from_context(context)
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise invalid_field("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        flt = PaymentFilter(
            status=payments_pb2.Payment.Status.Name(request.status) if request.status else None,
            payment_method=payments_pb2.PaymentMethod.Name(request.payment_method)
            if request.payment_method
            else None,
            created_from=_parse_time("created_from", request.created_from),
            created_to=_parse_time("created_to", request.created_to),
        )
        records, next_token = await self._repo.list_payments(
            caller.merchant_id,
            flt,
            limit=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token,
        )
        return payments_pb2.ListPaymentsResponse(
            payments=[r.to_proto(with_qr=False) for r in records], next_page_token=next_token
        )

    async def _active_merchant(self, caller: Caller) -> MerchantRecord:
        merchant = await self._repo.get_merchant(caller.merchant_id)
        if merchant is None or merchant.status != "ACTIVE":
            raise PermissionDenied(
                f"merchant {caller.merchant_id} is not an active merchant",
                reason="MERCHANT_NOT_ACTIVE",
            )
        return merchant

    async def _create_upi_intent(
        self, request: payments_pb2.CreatePaymentRequest, merchant: MerchantRecord
    ) -> payments_pb2.Payment:
        vpa = request.payment_details.vpa
        lookup = await self._upi.validate_vpa(vpa)
        if not lookup.exists:
            raise invalid_field(
                "payment_details.vpa", "is not registered with any UPI app", reason="VPA_NOT_FOUND"
            )
        payment_id = new_id("PAY")
        link = pay_link(
            payee_vpa=merchant.vpa,
            payee_name=merchant.name,
            amount_paisa=request.amount_paisa,
            currency=request.currency,
            note=request.description,
            transaction_ref=payment_id,
        )
        expires_at = datetime.now(UTC) + timedelta(seconds=self._settings.payment_expiry_seconds)
        record = await self._repo.create_payment(
            NewPayment(
                payment_id=payment_id,
                merchant_id=merchant.merchant_id,
                user_id=request.user_id,
                amount_paisa=request.amount_paisa,
                currency=request.currency,
                payment_method="UPI",
                description=request.description,
                callback_url=request.callback_url,
                metadata=dict(request.metadata),
                payment_details={
                    "vpa": vpa,
                    "upi_flow": request.payment_details.upi_flow or "INTENT",
                },
                capture_method="AUTOMATIC",
                payment_url=link,
                provider=PROVIDER_NAME,
                expires_at=expires_at,
            ),
            then=(Status.PENDING, "awaiting the customer's approval in their UPI app"),
        )
        return record.to_proto()


def _parse_time(field: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise invalid_field(
            field, "must be an RFC 3339 timestamp, e.g. 2026-01-15T10:00:00Z"
        ) from exc
    if moment.tzinfo is None:
        raise invalid_field(field, "must include a time zone offset, e.g. Z or +05:30")
    return moment
