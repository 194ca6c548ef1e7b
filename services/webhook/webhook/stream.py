"""The WebSocket status stream: `GET /api/v1/payments/{payment_id}/stream`, through Envoy.

Envoy verifies the merchant's JWT (the Authorization header, or an `access_token` query parameter
for browsers, which cannot set headers on a WebSocket) and forwards the upgrade here with the
verified identity in `x-merchant-id` / `x-caller-role`, as it does for the gRPC services. Before
upgrading, the handler asks the orchestrator for the payment *as that merchant*: another
merchant's payment is a 404 and a call without identity a 401, before any message is sent.

Then the socket gets the payment's current status at once and one JSON message per change,
`{"payment_id", "status", "event_type", "sequence", "at"}`, and is closed normally (1000) when
the payment reaches an outcome (FINAL_STATUSES).

Every replica must see every event, since a client may be connected to any of them: each
replica reads all partitions of `payments.events` itself (no consumer group, so no join delay and
no committed offsets), from the latest offset, and fans the events out in memory to its own
sockets (StatusHub). A message whose sequence is not newer than the last one sent is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from aiohttp import WSCloseCode, web
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import json_format
from google.rpc import status_pb2
from prometheus_client import Gauge

from gateway_core.auth import MERCHANT_ID_KEY, ROLE_KEY, ROLES
from gateway_core.errors import (
    GatewayError,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
    to_rpc_status,
)
from gateway_core.logging import get_logger
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc

log = get_logger(__name__)

STREAM_PATH = "/api/v1/payments/{payment_id}/stream"
# Envoy's health check of this listener: 200 while the event feed is live.
HEALTH_PATH = "/health"
# A payment in one of these has its outcome: the stream sends it and closes (refunds of a
# successful payment are told by webhooks and receipts, not by the checkout's stream).
FINAL_STATUSES = frozenset(
    {"SUCCESS", "FAILED", "EXPIRED", "CANCELLED", "PARTIALLY_REFUNDED", "REFUNDED"}
)
# Pings keep idle sockets open through proxies and find dead clients.
HEARTBEAT_SECONDS = 30.0
ORCHESTRATOR_TIMEOUT_SECONDS = 5.0
_DETAILS_KEY = "grpc-status-details-bin"

OPEN_STREAMS = Gauge("webhook_status_streams", "WebSocket status streams open on this replica.")


@dataclass(frozen=True)
class StatusUpdate:
    """One message of the stream."""

    payment_id: str
    status: str
    event_type: str
    # The payment's event sequence (1 for payment.created, +1 per status change).
    sequence: int
    at: str  # RFC 3339, UTC

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def update_from_event(value: bytes) -> StatusUpdate | None:
    """The update a `payments.events` record announces, or None for events that change no
    payment's status (refund.*, checkout.session.*); ValueError for a record that is not an
    event."""
    try:
        document = json.loads(value)
        event_type = str(document["type"])
        if not event_type.startswith("payment."):
            return None  # refund.*, dispute.*, checkout.session.*: no status change to stream
        payment: dict[str, Any] = document.get("payment") or {}
        update = StatusUpdate(
            payment_id=str(document.get("payment_id") or payment["payment_id"]),
            status=str(payment["status"]),
            event_type=event_type,
            sequence=int(document["sequence"]),
            at=str(document.get("occurred_at") or ""),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a payment event: {exc!r}") from None
    return update


def update_from_payment(payment: payments_pb2.Payment) -> StatusUpdate:
    """The payment's current status, as the message of the event that led to it: the
    orchestrator bumps a payment's sequence with every status change and records each change in
    `status_history` (CREATED included), so the history's length is the last event's sequence."""
    status = payments_pb2.Payment.Status.Name(payment.status)
    history = payment.status_history
    at = history[-1].at if history else payment.updated_at
    return StatusUpdate(
        payment_id=payment.payment_id,
        status=status,
        event_type=f"payment.{status.lower()}",
        sequence=len(history),
        at=at.ToJsonString(),
    )


class StatusHub:
    """This replica's open streams, by payment id. `None` in a queue asks its stream to read the
    payment again: events may have been missed while the feed was down."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[StatusUpdate | None]]] = defaultdict(set)
        self.live = asyncio.Event()

    @contextlib.contextmanager
    def subscribe(self, payment_id: str) -> Iterator[asyncio.Queue[StatusUpdate | None]]:
        queue: asyncio.Queue[StatusUpdate | None] = asyncio.Queue()
        self._queues[payment_id].add(queue)
        OPEN_STREAMS.inc()
        try:
            yield queue
        finally:
            OPEN_STREAMS.dec()
            self._queues[payment_id].discard(queue)
            if not self._queues[payment_id]:
                del self._queues[payment_id]

    def publish(self, update: StatusUpdate) -> None:
        for queue in self._queues.get(update.payment_id, ()):
            queue.put_nowait(update)

    def feed_up(self) -> None:
        self.live.set()
        for queues in self._queues.values():
            for queue in queues:
                queue.put_nowait(None)

    def feed_down(self) -> None:
        self.live.clear()

    @property
    def streams(self) -> int:
        return sum(len(queues) for queues in self._queues.values())


class StatusFeed:
    """Reads every partition of the payments topic from its end and publishes to the hub."""

    def __init__(self, bootstrap_servers: Sequence[str], topic: str, hub: StatusHub) -> None:
        self._bootstrap_servers = list(bootstrap_servers)
        self._topic = topic
        self._hub = hub

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id="paygate-webhook-stream",
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            # Resolve the starting offsets now: a stream opened from here on misses nothing.
            for partition in partitions:
                await consumer.position(partition)
            self._hub.feed_up()
            log.info("status feed live", partitions=len(partitions))
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._publish(record.value or b"", record.offset)
        finally:
            self._hub.feed_down()
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        found = consumer.partitions_for_topic(self._topic)
        if not found:
            await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(self._topic)
        if not found:
            raise RuntimeError(f"topic {self._topic} has no partitions (does it exist?)")
        return [TopicPartition(self._topic, p) for p in sorted(found)]

    def _publish(self, value: bytes, offset: int) -> None:
        try:
            update = update_from_event(value)
        except ValueError as exc:
            log.warning("skipping a record that is not a payment event", offset=offset, error=exc)
            return
        if update is not None:
            self._hub.publish(update)


class StreamServer:
    """The HTTP listener Envoy forwards stream upgrades to."""

    def __init__(
        self,
        hub: StatusHub,
        orchestrator: grpc.aio.Channel,
        *,
        host: str,
        port: int,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._hub = hub
        self._payments = payments_pb2_grpc.PaymentServiceStub(orchestrator)
        self._host = host
        self._port = port
        self._heartbeat = heartbeat

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get(STREAM_PATH, self.handle)
        app.router.add_get(HEALTH_PATH, self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        live = self._hub.live.is_set()
        return web.json_response(
            {"status": "ok" if live else "starting", "streams": self._hub.streams},
            status=200 if live else 503,
        )

    async def run(self) -> None:
        # No access log: a browser's token may be in the query string.
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            log.info("status stream listening", address=f"{self._host}:{self._port}")
            await asyncio.Future()  # serve until cancelled
        finally:
            await runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        payment_id = request.match_info["payment_id"]
        metadata = _identity(request)
        if metadata is None:
            return error_response(
                Unauthenticated("a bearer token is required", reason="CALLER_IDENTITY_MISSING")
            )
        if not self._hub.live.is_set():
            return error_response(
                Unavailable(
                    "the status stream is not ready yet; retry in a moment",
                    reason="STREAM_NOT_READY",
                )
            )
        with self._hub.subscribe(payment_id) as queue:
            try:
                last = update_from_payment(await self._get(payment_id, metadata))
            except GatewayError as exc:
                return error_response(exc)
            socket = web.WebSocketResponse(heartbeat=self._heartbeat)
            if not socket.can_prepare(request).ok:
                return error_response(
                    InvalidArgument(
                        "this path only answers WebSocket upgrades (Connection: Upgrade, "
                        "Upgrade: websocket)",
                        reason="WEBSOCKET_UPGRADE_REQUIRED",
                    )
                )
            await socket.prepare(request)
            log.info("status stream opened", payment_id=payment_id, status=last.status)
            try:
                await self._follow(socket, queue, last, metadata)
            finally:
                log.info("status stream closed", payment_id=payment_id, code=socket.close_code)
        return socket

    async def _follow(
        self,
        socket: web.WebSocketResponse,
        queue: asyncio.Queue[StatusUpdate | None],
        last: StatusUpdate,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        await socket.send_str(last.to_json())
        # The client speaks only to close; reading also answers the heartbeat's pongs.
        client_gone = asyncio.create_task(_until_closed(socket))
        try:
            while last.status not in FINAL_STATUSES:
                next_item = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {next_item, client_gone}, return_when=asyncio.FIRST_COMPLETED
                )
                if client_gone in done:
                    next_item.cancel()
                    return
                update = next_item.result()
                if update is None:
                    try:
                        update = update_from_payment(await self._get(last.payment_id, metadata))
                    except GatewayError as exc:
                        log.warning("status stream lost the payment", error=exc.message)
                        await socket.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"retry")
                        return
                if update.sequence <= last.sequence:
                    continue  # stale or already sent
                await socket.send_str(update.to_json())
                last = update
            await socket.close(code=WSCloseCode.OK, message=last.status.encode())
        finally:
            client_gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client_gone

    async def _get(
        self, payment_id: str, metadata: tuple[tuple[str, str], ...]
    ) -> payments_pb2.Payment:
        payment: payments_pb2.Payment = await self._payments.GetPayment(
            payments_pb2.GetPaymentRequest(payment_id=payment_id),
            metadata=metadata,
            timeout=ORCHESTRATOR_TIMEOUT_SECONDS,
        )
        return payment


def _identity(request: web.Request) -> tuple[tuple[str, str], ...] | None:
    """The caller Envoy verified (it drops client-sent copies of these headers), as the gRPC
    metadata the orchestrator reads the caller from."""
    merchant_id = request.headers.get(MERCHANT_ID_KEY, "").strip()
    role = request.headers.get(ROLE_KEY, "").strip()
    if not merchant_id or role not in ROLES:
        return None
    metadata = [(MERCHANT_ID_KEY, merchant_id), (ROLE_KEY, role)]
    if request_id := request.headers.get("x-request-id"):
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)


async def _until_closed(socket: web.WebSocketResponse) -> None:
    async for _ in socket:
        pass


def error_response(error: GatewayError) -> web.Response:
    """The JSON `google.rpc.Status` body the REST API answers errors with, and its HTTP status."""
    status = to_rpc_status(error)
    body: dict[str, Any] = {"code": status.code.value[0], "message": status.details, "details": []}
    for key, value in status.trailing_metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            body = json_format.MessageToDict(
                status_pb2.Status.FromString(value),
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
    return web.json_response(body, status=error.http_status)
