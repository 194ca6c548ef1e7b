"""paygate.payments.v1.PaymentService: the merchant's payments API.

Every mutating method runs behind the merchant's Idempotency-Key, if one was sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message

from gateway_core.admission import Admission
from gateway_core.auth import Caller, RpcContext, caller_from_context
from gateway_core.errors import PermissionDenied, invalid_field
from orchestrator.connectors.card import emi
from orchestrator.connectors.registry import CONNECTOR_TYPES
from orchestrator.domain.payment import Merchant
from orchestrator.domain.states import OPEN
from orchestrator.idempotency import IdempotencyStore, Recover, idempotency_key
from orchestrator.processing import PaymentProcessor, PaymentStart
from orchestrator.repository import PaymentFilter, Repository
from orchestrator.servicers.validation import (
    validate_cancel,
    validate_capture,
    validate_create_payment,
    validate_emi_query,
    validate_refund,
)
from orchestrator.servicers.wire import details_input, payment_message, refund_message
from orchestrator.settings import Settings
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
SERVICE = "/paygate.payments.v1.PaymentService/"
M = TypeVar("M", bound=Message)


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self,
        repo: Repository,
        processor: PaymentProcessor,
        idempotency: IdempotencyStore,
        settings: Settings,
        *,
        admission: Admission,
    ) -> None:
        self._repo = repo
        self._admission = admission
        self._processor = processor
        self._idempotency = idempotency
        self._settings = settings
        # Every amount a request carries is checked against it before anything else.
        self._max_amount = settings.max_payment_amount_paisa

    async def CreatePayment(
        self, request: payments_pb2.CreatePaymentRequest, context: RpcContext
    ) -> payments_pb2.Payment:
        caller = caller_from_context(context)
        if request.merchant_id and request.merchant_id != caller.merchant_id:
            raise PermissionDenied(
                "merchant_id in the body does not match the authenticated merchant",
                reason="MERCHANT_MISMATCH",
            )
        validate_create_payment(request, max_amount_paisa=self._max_amount)
        # Past saturation, refused here, before its key is claimed or anything is looked up
        # (the flow engine holds the place itself while it screens and stores the payment).
        self._admission.check()

        async def create() -> payments_pb2.Payment:
            merchant = await self._active_merchant(caller)
            start = _payment_start(request, merchant, self._settings, idempotency_key(context))
            record = await self._processor.start(start)
            return payment_message(record)

        return await self._once(
            caller,
            context,
            "CreatePayment",
            request,
            payments_pb2.Payment,
            create,
            self._recover_created,
        )

    async def GetPayment(
        self, request: payments_pb2.GetPaymentRequest, context: RpcContext
    ) -> payments_pb2.Payment:
        record = await self._repo.get_payment(request.payment_id, _scope(context))
        return payment_message(record)

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
            payments=[payment_message(r, with_qr=False) for r in records],
            next_page_token=next_token,
        )

    async def ListEmiPlans(
        self, request: payments_pb2.ListEmiPlansRequest, context: RpcContext
    ) -> payments_pb2.ListEmiPlansResponse:
        caller_from_context(context)
        validate_emi_query(request, max_amount_paisa=self._max_amount)
        return payments_pb2.ListEmiPlansResponse(
            plans=[
                payments_pb2.EmiPlan(
                    plan_id=plan.plan_id,
                    tenure_months=plan.tenure_months,
                    kind=plan.kind,
                    annual_interest_bps=plan.annual_interest_bps,
                    monthly_installment_paisa=plan.monthly_installment_paisa,
                    total_payable_paisa=plan.total_payable_paisa,
                    interest_paisa=plan.interest_paisa,
                    merchant_discount_paisa=plan.merchant_discount_paisa,
                )
                for plan in emi.plans_for(request.amount_paisa)
            ]
        )

    async def CapturePayment(
        self, request: payments_pb2.CapturePaymentRequest, context: RpcContext
    ) -> payments_pb2.Payment:
        caller = caller_from_context(context)
        validate_capture(request, max_amount_paisa=self._max_amount)

        async def capture() -> payments_pb2.Payment:
            record = await self._processor.capture(
                request.payment_id, _scope(context), request.amount_paisa
            )
            return payment_message(record)

        return await self._once(
            caller,
            context,
            "CapturePayment",
            request,
            payments_pb2.Payment,
            capture,
            self._recover_payment,
        )

    async def CancelPayment(
        self, request: payments_pb2.CancelPaymentRequest, context: RpcContext
    ) -> payments_pb2.Payment:
        caller = caller_from_context(context)
        validate_cancel(request)

        async def cancel() -> payments_pb2.Payment:
            record = await self._processor.cancel(
                request.payment_id, _scope(context), request.reason
            )
            return payment_message(record)

        return await self._once(
            caller,
            context,
            "CancelPayment",
            request,
            payments_pb2.Payment,
            cancel,
            self._recover_payment,
        )

    async def RefundPayment(
        self, request: payments_pb2.RefundPaymentRequest, context: RpcContext
    ) -> payments_pb2.Refund:
        caller = caller_from_context(context)
        validate_refund(request, max_amount_paisa=self._max_amount)

        async def refund() -> payments_pb2.Refund:
            record = await self._processor.refund(
                request.payment_id,
                _scope(context),
                amount_paisa=request.amount_paisa if request.HasField("amount_paisa") else None,
                reason=request.reason,
                metadata=dict(request.metadata),
            )
            return refund_message(record)

        return await self._once(
            caller,
            context,
            "RefundPayment",
            request,
            payments_pb2.Refund,
            refund,
            self._recover_refund,
        )

    async def _once(
        self,
        caller: Caller,
        context: RpcContext,
        method: str,
        request: Message,
        response_type: type[M],
        handler: Callable[[], Awaitable[M]],
        recover: Recover[M],
    ) -> M:
        return await self._idempotency.run(
            merchant_id=caller.merchant_id,
            key=idempotency_key(context),
            method=SERVICE + method,
            request=request,
            response_type=response_type,
            handler=handler,
            recover=recover,
        )

    # Recovery of a request whose first effect committed but whose answer was lost (its
    # process died, or it failed after the effect): the resource's state now, never a rerun.

    async def _recover_created(self, payment_id: str) -> payments_pb2.Payment | None:
        record = await self._repo.find_payment(payment_id)
        if record is None:
            return None
        if record.status in OPEN:
            # Whatever the lost attempt got to, the provider knows: ask it now.
            await self._repo.schedule_inquiry(payment_id, timedelta(0))
        return payment_message(record)

    async def _recover_payment(self, payment_id: str) -> payments_pb2.Payment | None:
        record = await self._repo.find_payment(payment_id)
        return payment_message(record) if record is not None else None

    async def _recover_refund(self, refund_id: str) -> payments_pb2.Refund | None:
        refund = await self._repo.find_refund(refund_id)
        return refund_message(refund) if refund is not None else None

    async def _active_merchant(self, caller: Caller) -> Merchant:
        merchant = await self._repo.get_merchant(caller.merchant_id)
        if merchant is None or merchant.status != "ACTIVE":
            raise PermissionDenied(
                f"merchant {caller.merchant_id} is not an active merchant",
                reason="MERCHANT_NOT_ACTIVE",
            )
        return merchant


def _scope(context: RpcContext) -> str | None:
    """Admins see every merchant's payments; a merchant only its own."""
    caller = caller_from_context(context)
    return None if caller.is_admin else caller.merchant_id


def _payment_start(
    request: payments_pb2.CreatePaymentRequest,
    merchant: Merchant,
    settings: Settings,
    idempotency_key: str | None,
) -> PaymentStart:
    method = payments_pb2.PaymentMethod.Name(request.payment_method)
    return PaymentStart(
        merchant=merchant,
        user_id=request.user_id,
        amount_paisa=request.amount_paisa,
        currency=request.currency,
        method=method,
        details=CONNECTOR_TYPES[method].read_details(details_input(request.payment_details)),
        description=request.description,
        callback_url=request.callback_url,
        metadata=dict(request.metadata),
        capture_method="MANUAL"
        if request.capture_method == payments_pb2.Payment.MANUAL
        else "AUTOMATIC",
        expire_after=timedelta(
            seconds=request.expire_after_seconds or settings.payment_expiry_seconds
        ),
        device={
            "fingerprint_id": request.device.fingerprint_id,
            "user_agent": request.device.user_agent,
            "ip_address": request.device.ip_address,
        },
        idempotency_key=idempotency_key or "",
    )


def _parse_time(field: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise invalid_field(field, "must be an RFC 3339 time, e.g. 2026-01-15T10:00:00Z") from exc
    if moment.tzinfo is None:
        raise invalid_field(field, "must include a time zone offset, e.g. Z or +05:30")
    return moment
