"""paygate.webhooks.v1.WebhookService (DESIGN.md §7): a merchant's endpoints, their delivery
log and replays, and the callback secret. Every method acts for the merchant in the caller's
verified token; another merchant's endpoint is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.auth import RpcContext, caller_from_context
from gateway_core.errors import NotFound, invalid_field
from gateway_core.limits import MAX_DESCRIPTION_CHARS, MAX_URL_CHARS, FieldProblems
from paygate.webhooks.v1 import webhooks_pb2 as pb
from paygate.webhooks.v1 import webhooks_pb2_grpc
from webhook.events import TEST_EVENT, encode_payload, event_filter_problem
from webhook.repository import (
    DISABLED,
    ENABLED,
    FAILED,
    PENDING,
    SUCCEEDED,
    CallbackSecret,
    Delivery,
    Endpoint,
    NotFoundError,
    Repository,
)
from webhook.settings import IPNetwork
from webhook.signing import generate_secret, secret_problem
from webhook.ssrf import Resolver, destination_problem, resolve

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_ENDPOINT_STATUS = {ENABLED: pb.Webhook.ENABLED, DISABLED: pb.Webhook.DISABLED}
_DELIVERY_STATUS = {
    PENDING: pb.WebhookDelivery.PENDING,
    SUCCEEDED: pb.WebhookDelivery.SUCCEEDED,
    FAILED: pb.WebhookDelivery.FAILED,
}
_STATUS_FILTER = {v: k for k, v in _DELIVERY_STATUS.items()}


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self,
        repo: Repository,
        *,
        allowed: Sequence[IPNetwork],
        wake_worker: Callable[[], None],
        resolver: Resolver = resolve,
    ) -> None:
        self._repo = repo
        self._allowed = tuple(allowed)
        self._wake_worker = wake_worker
        self._resolver = resolver

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: RpcContext
    ) -> pb.Webhook:
        merchant_id = caller_from_context(context).merchant_id
        problems = FieldProblems()
        await self._check_url(problems, request.url)
        self._check_events(problems, list(request.events))
        if request.secret and (problem := secret_problem(request.secret)):
            problems.add("secret", problem)
        problems.text("description", request.description, MAX_DESCRIPTION_CHARS)
        problems.raise_if_any()
        endpoint = await self._repo.create_endpoint(
            merchant_id,
            url=request.url,
            events=list(request.events),
            secret=request.secret or generate_secret(),
            description=request.description,
        )
        return _endpoint(endpoint, with_secret=True)

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: RpcContext
    ) -> pb.ListWebhooksResponse:
        merchant_id = caller_from_context(context).merchant_id
        limit = _page_size(request.page_size)
        found = await self._repo.list_endpoints(
            merchant_id, limit=limit + 1, after=request.page_token
        )
        page = found[:limit]
        return pb.ListWebhooksResponse(
            webhooks=[_endpoint(e) for e in page],
            next_page_token=page[-1].webhook_id if len(found) > limit else "",
        )

    async def GetWebhook(self, request: pb.GetWebhookRequest, context: RpcContext) -> pb.Webhook:
        merchant_id = caller_from_context(context).merchant_id
        with _not_found("webhook", request.webhook_id):
            return _endpoint(await self._repo.get_endpoint(merchant_id, request.webhook_id))

    async def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: RpcContext
    ) -> pb.Webhook:
        merchant_id = caller_from_context(context).merchant_id
        problems = FieldProblems()
        if request.HasField("url"):
            await self._check_url(problems, request.url)
        if request.events:
            self._check_events(problems, list(request.events))
        if request.HasField("description"):
            problems.text("description", request.description, MAX_DESCRIPTION_CHARS)
        status = {
            pb.Webhook.STATUS_UNSPECIFIED: None,
            pb.Webhook.ENABLED: ENABLED,
            pb.Webhook.DISABLED: DISABLED,
        }.get(request.status)
        if request.status not in _ENDPOINT_STATUS.values() and request.status != 0:
            problems.add("status", "must be ENABLED or DISABLED")
        recover_since = None
        if request.HasField("recover_since"):
            if status != ENABLED:
                problems.add("recover_since", 'is only taken with "status": "ENABLED"')
            recover_since = request.recover_since.ToDatetime(tzinfo=UTC)
        problems.raise_if_any()
        with _not_found("webhook", request.webhook_id):
            endpoint = await self._repo.update_endpoint(
                merchant_id,
                request.webhook_id,
                url=request.url if request.HasField("url") else None,
                events=list(request.events) or None,
                description=request.description if request.HasField("description") else None,
                status=status,
                recover_since=recover_since,
            )
        if recover_since is not None:
            self._wake_worker()
        return _endpoint(endpoint)

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: RpcContext
    ) -> empty_pb2.Empty:
        merchant_id = caller_from_context(context).merchant_id
        with _not_found("webhook", request.webhook_id):
            await self._repo.delete_endpoint(merchant_id, request.webhook_id)
        return empty_pb2.Empty()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: RpcContext
    ) -> pb.Webhook:
        merchant_id = caller_from_context(context).merchant_id
        if request.secret and (problem := secret_problem(request.secret)):
            raise invalid_field("secret", problem)
        with _not_found("webhook", request.webhook_id):
            endpoint = await self._repo.rotate_endpoint_secret(
                merchant_id, request.webhook_id, request.secret or generate_secret()
            )
        return _endpoint(endpoint, with_secret=True)

    async def SendTestWebhook(
        self, request: pb.SendTestWebhookRequest, context: RpcContext
    ) -> pb.WebhookDelivery:
        merchant_id = caller_from_context(context).merchant_id
        with _not_found("webhook", request.webhook_id):
            endpoint = await self._repo.get_endpoint(merchant_id, request.webhook_id)
            now = datetime.now(UTC)
            payload = encode_payload(
                TEST_EVENT,
                now,
                {"webhook_id": endpoint.webhook_id, "message": "a test event from the gateway"},
            )
            delivery_id = await self._repo.add_test_delivery(endpoint, payload, now)
            self._wake_worker()
            delivery = await self._repo.get_delivery(merchant_id, endpoint.webhook_id, delivery_id)
        return _delivery(delivery)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: RpcContext
    ) -> pb.ListWebhookDeliveriesResponse:
        merchant_id = caller_from_context(context).merchant_id
        limit = _page_size(request.page_size)
        status = None
        if request.status:
            if request.status not in _STATUS_FILTER:
                raise invalid_field("status", "must be PENDING, SUCCEEDED or FAILED")
            status = _STATUS_FILTER[request.status]
        with _not_found("webhook", request.webhook_id):
            found = await self._repo.list_deliveries(
                merchant_id,
                request.webhook_id,
                status=status,
                limit=limit + 1,
                after=request.page_token,
            )
        page = found[:limit]
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[_delivery(d) for d in page],
            next_page_token=page[-1].delivery_id if len(found) > limit else "",
        )

    async def ReplayWebhookDelivery(
        self, request: pb.ReplayWebhookDeliveryRequest, context: RpcContext
    ) -> pb.WebhookDelivery:
        merchant_id = caller_from_context(context).merchant_id
        with _not_found("delivery", request.delivery_id):
            await self._repo.replay(merchant_id, request.webhook_id, request.delivery_id)
            self._wake_worker()
            delivery = await self._repo.get_delivery(
                merchant_id, request.webhook_id, request.delivery_id
            )
        return _delivery(delivery)

    async def GetCallbackSecret(
        self, request: pb.GetCallbackSecretRequest, context: RpcContext
    ) -> pb.CallbackSecret:
        merchant_id = caller_from_context(context).merchant_id
        return _callback_secret(await self._repo.callback_secret(merchant_id, generate_secret()))

    async def RotateCallbackSecret(
        self, request: pb.RotateCallbackSecretRequest, context: RpcContext
    ) -> pb.CallbackSecret:
        merchant_id = caller_from_context(context).merchant_id
        secret = await self._repo.rotate_callback_secret(merchant_id, generate_secret())
        return _callback_secret(secret)

    async def _check_url(self, problems: FieldProblems, url: str) -> None:
        if not url:
            problems.add("url", "is required")
            return
        # Like any free text: no card number (it would be stored and shown), bounded length.
        before = len(problems.violations)
        problems.text("url", url, MAX_URL_CHARS)
        if len(problems.violations) > before:
            return
        problem = await destination_problem(url, self._allowed, self._resolver)
        if problem:
            problems.add("url", problem)

    @staticmethod
    def _check_events(problems: FieldProblems, events: list[str]) -> None:
        problem = event_filter_problem(events)
        if problem:
            problems.add("events", problem)


class _not_found:
    """Turns the repository's NotFoundError into the API's NOT_FOUND naming the resource."""

    def __init__(self, kind: str, identifier: str) -> None:
        self._kind = kind
        self._identifier = identifier

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, NotFoundError):
            raise NotFound(
                f"no {self._kind} {self._identifier!r} for this merchant",
                reason=f"{self._kind.upper()}_NOT_FOUND",
            ) from None


def _page_size(requested: int) -> int:
    if requested < 0:
        raise invalid_field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _endpoint(endpoint: Endpoint, *, with_secret: bool = False) -> pb.Webhook:
    rotating = endpoint.previous_secret_expires_at
    return pb.Webhook(
        webhook_id=endpoint.webhook_id,
        merchant_id=endpoint.merchant_id,
        url=endpoint.url,
        events=endpoint.events,
        secret=endpoint.secret if with_secret else "",
        description=endpoint.description,
        status=_ENDPOINT_STATUS[endpoint.status],
        disabled_reason=endpoint.disabled_reason,
        created_at=_ts(endpoint.created_at),
        updated_at=_ts(endpoint.updated_at),
        previous_secret_expires_at=_ts(
            rotating if rotating and rotating > datetime.now(UTC) else None
        ),
        disabled_at=_ts(endpoint.disabled_at),
    )


def _delivery(delivery: Delivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        delivery_id=delivery.delivery_id,
        webhook_id=delivery.webhook_id or "",
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=_DELIVERY_STATUS[delivery.status],
        attempts=delivery.attempts,
        last_response_code=delivery.last_response_code,
        last_error=delivery.last_error,
        next_attempt_at=_ts(delivery.next_attempt_at if delivery.status == PENDING else None),
        delivered_at=_ts(delivery.delivered_at),
        created_at=_ts(delivery.created_at),
        attempt_history=[
            pb.DeliveryAttempt(
                attempted_at=_ts(a.attempted_at),
                response_code=a.response_code,
                error=a.error,
                latency_ms=a.latency_ms,
            )
            for a in delivery.history
        ],
        dead_lettered_at=_ts(delivery.dead_lettered_at),
        payment_id=delivery.payment_id,
    )


def _callback_secret(secret: CallbackSecret) -> pb.CallbackSecret:
    rotating = secret.previous_secret_expires_at
    return pb.CallbackSecret(
        secret=secret.secret,
        previous_secret_expires_at=_ts(
            rotating if rotating and rotating > datetime.now(UTC) else None
        ),
        created_at=_ts(secret.created_at),
    )
