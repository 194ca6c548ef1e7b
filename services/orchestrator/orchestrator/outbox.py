"""The transactional outbox: events are written with the state change, then relayed to Kafka.

Writing the event in the same transaction as the change means a crash can never leave a state
change without its event (or the reverse). The relay publishes rows in id order, which keeps
each payment's events in order on its partition, and marks them published only after the
broker acknowledged them: delivery is at least once, consumers dedupe by event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.ids import new_id
from gateway_core.kafka import EventProducer, PublishError
from gateway_core.logging import get_logger
from paygate.events.v1 import events_pb2
from paygate.payments.v1 import payments_pb2

NOTIFY_CHANNEL = "orchestrator_outbox"
# Only one relay publishes at a time, whatever the replica count, so order is kept.
RELAY_LOCK_KEY = 0x0_5A7E_0B0C
BATCH_SIZE = 200

log = get_logger(__name__)


def encode_event(
    *,
    event_type: str,
    payment: payments_pb2.Payment,
    sequence: int,
    event_id: str,
    refund: payments_pb2.Refund | None = None,
) -> bytes:
    event = events_pb2.Event(
        event_id=event_id,
        type=event_type,
        occurred_at=_now(),
        merchant_id=payment.merchant_id,
        payment_id=payment.payment_id,
        payment=payment,
        sequence=sequence,
        refund=refund,
    )
    text = json_format.MessageToJson(
        event,
        preserving_proto_field_name=True,
        indent=None,
        always_print_fields_with_no_presence=False,
    )
    return text.encode()


async def enqueue(
    conn: asyncpg.Connection,
    *,
    topic: str,
    event_type: str,
    payment: payments_pb2.Payment,
    sequence: int,
    refund: payments_pb2.Refund | None = None,
) -> str:
    """Add an event to the outbox inside the caller's transaction; returns its event id."""
    event_id = new_id("EVT")
    payload = encode_event(
        event_type=event_type,
        payment=payment,
        sequence=sequence,
        event_id=event_id,
        refund=refund,
    )
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, event_key, payload) VALUES ($1, $2, $3, $4)",
        event_id,
        topic,
        payment.payment_id,
        payload,
    )
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return event_id


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


class OutboxRelay:
    """Publishes unpublished outbox rows to Kafka; survives broker outages by retrying.

    One relay publishes at a time, whatever the replica count: it holds a session advisory
    lock on its own connection (the others wait on standby), which keeps per-payment order.
    Rows are read, published outside any transaction (pipelined, in id order), and only the
    acknowledged prefix is marked published. A failure ends `run()`: the service bootstrap
    restarts it with backoff and a fresh producer, and the unmarked rows go out again.
    """

    def __init__(self, pool: asyncpg.Pool, producer: EventProducer, poll_seconds: float = 1.0):
        self._pool = pool
        self._producer = producer
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()

    async def run(self) -> None:
        # Starting the producer here (not at service start) lets payments flow while the
        # broker is down: the bootstrap restarts this task with backoff until it connects.
        await self._producer.start()
        try:
            await self._relay()
        finally:
            await self._producer.stop()

    async def _relay(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                    await self._sleep()  # another replica is publishing
                try:
                    while True:
                        if await self._publish_batch() < BATCH_SIZE:
                            await self._sleep()
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
            finally:
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_seconds)

    async def _publish_batch(self) -> int:
        # Cleared before reading: a notification that arrives from here on wakes the next wait.
        self._wakeup.clear()
        rows = await self._pool.fetch(
            "SELECT id, topic, event_key, payload FROM outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT $1",
            BATCH_SIZE,
        )
        if not rows:
            return 0
        failure: PublishError | None = None
        try:
            await self._producer.send_in_order(
                [(r["topic"], r["event_key"], r["payload"]) for r in rows]
            )
            acknowledged = len(rows)
        except PublishError as exc:
            failure, acknowledged = exc, exc.acknowledged
        if acknowledged:
            await self._pool.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows[:acknowledged]],
            )
        if failure is not None:
            log.warning(
                "outbox publish failed; the relay restarts",
                error=str(failure.cause),
                pending=len(rows) - acknowledged,
            )
            raise failure
        return acknowledged
