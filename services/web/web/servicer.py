"""paygate.checkout.v1.CheckoutService and DashboardAccountService: the merchant's API for
checkout sessions and dashboard sign-ins. Every call acts for the merchant in the caller's
verified token; another merchant's session is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

from gateway_core.auth import RpcContext, caller_from_context
from gateway_core.errors import FieldViolation, InvalidArgument, PermissionDenied
from gateway_core.limits import MAX_EMAIL_CHARS
from paygate.checkout.v1 import checkout_pb2 as pb
from paygate.checkout.v1 import checkout_pb2_grpc
from paygate.payments.v1 import payments_pb2
from web.passwords import hash_password, password_problem
from web.repository import Repository, session_to_proto
from web.sessions import Customer, looks_like_session_id, validate_new_session

IDEMPOTENCY_KEY = "idempotency-key"
MAX_IDEMPOTENCY_KEY = 255


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(
        self, repo: Repository, page_url: Callable[[str], str], max_amount_paisa: int
    ) -> None:
        self._repo = repo
        self._page_url = page_url
        self._max_amount_paisa = max_amount_paisa

    async def CreateCheckoutSession(
        self, request: pb.CreateCheckoutSessionRequest, context: RpcContext
    ) -> pb.CheckoutSession:
        merchant_id = caller_from_context(context).merchant_id
        new = validate_new_session(
            amount_paisa=request.amount_paisa,
            currency=request.currency,
            description=request.description,
            customer=Customer(
                name=request.customer.name,
                email=request.customer.email,
                phone=request.customer.phone,
            ),
            methods=[payments_pb2.PaymentMethod.Name(m) for m in request.methods],
            return_url=request.return_url,
            metadata=dict(request.metadata),
            expire_after_seconds=request.expire_after_seconds,
            max_amount_paisa=self._max_amount_paisa,
        )
        key = _idempotency_key(context)
        session = await self._repo.create(merchant_id, new, key)
        return session_to_proto(session, self._page_url(session.checkout_session_id))

    async def GetCheckoutSession(
        self, request: pb.GetCheckoutSessionRequest, context: RpcContext
    ) -> pb.CheckoutSession:
        caller = caller_from_context(context)
        session = await self._repo.get(
            _session_id(request.checkout_session_id),
            None if caller.is_admin else caller.merchant_id,
        )
        return session_to_proto(session, self._page_url(session.checkout_session_id))

    async def ExpireCheckoutSession(
        self, request: pb.ExpireCheckoutSessionRequest, context: RpcContext
    ) -> pb.CheckoutSession:
        caller = caller_from_context(context)
        session = await self._repo.expire(
            _session_id(request.checkout_session_id),
            None if caller.is_admin else caller.merchant_id,
        )
        return session_to_proto(session, self._page_url(session.checkout_session_id))


class DashboardAccountServicer(checkout_pb2_grpc.DashboardAccountServiceServicer):
    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def SetDashboardLogin(
        self, request: pb.SetDashboardLoginRequest, context: RpcContext
    ) -> pb.DashboardLogin:
        caller = caller_from_context(context)
        problems: list[FieldViolation] = []
        email = request.email.strip().lower()
        if not email or "@" not in email or len(email) > MAX_EMAIL_CHARS:
            problems.append(FieldViolation("email", "must be an email address"))
        if problem := password_problem(request.password):
            problems.append(FieldViolation("password", problem))
        if caller.is_admin:
            merchant_id = request.merchant_id.strip()
            if request.admin and merchant_id:
                problems.append(FieldViolation("merchant_id", "must be empty for an admin sign-in"))
            if not request.admin and not merchant_id:
                problems.append(
                    FieldViolation("merchant_id", "is required (or admin: true for an admin)")
                )
        else:
            if request.admin:
                raise PermissionDenied(
                    "only an admin may create an admin sign-in", reason="ADMIN_REQUIRED"
                )
            if request.merchant_id and request.merchant_id != caller.merchant_id:
                raise PermissionDenied(
                    "a merchant sets sign-ins for itself only", reason="MERCHANT_MISMATCH"
                )
            merchant_id = caller.merchant_id
        if problems:
            raise InvalidArgument.for_fields(problems)
        existing = await self._repo.find_login(email)
        if (
            existing is not None
            and not caller.is_admin
            and (existing.is_admin or existing.merchant_id != caller.merchant_id)
        ):
            # Another merchant's (or an admin's) sign-in: not this caller's to change.
            raise PermissionDenied(
                "this email signs in for someone else", reason="LOGIN_BELONGS_TO_ANOTHER"
            )
        login = await self._repo.set_login(
            email,
            "" if request.admin else merchant_id,
            request.admin,
            hash_password(request.password),
        )
        updated = pb.DashboardLogin(
            email=login.email, merchant_id=login.merchant_id, admin=login.is_admin
        )
        updated.updated_at.FromDatetime(login.updated_at.astimezone(UTC))
        return updated


def _session_id(text: str) -> str:
    if not looks_like_session_id(text):
        raise InvalidArgument.for_fields(
            [FieldViolation("checkout_session_id", "must be a checkout session id (CS_…)")]
        )
    return text


def _idempotency_key(context: RpcContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == IDEMPOTENCY_KEY and isinstance(value, str) and value.strip():
            if len(value) > MAX_IDEMPOTENCY_KEY:
                raise InvalidArgument.for_fields(
                    [
                        FieldViolation(
                            "Idempotency-Key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters"
                        )
                    ]
                )
            return value.strip()
    return None
