"""The transactional outbox: events are written with the state change, then relayed to Kafka.

Writing the event in the same transaction as the change means a crash can never leave a state
change without its event (or the reverse). The relay publishes rows in id order, which keeps
each payment's events in order on its partition, and marks them published only after the
broker acknowledged them: delivery is at least once, consumers dedupe by event_id. Published
rows are deleted after OUTBOX_RETENTION by `OutboxPurge`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Protocol

import asyncpg
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Gauge

from gateway_core.errors import Unavailable
from gateway_core.ids import new_id
from gateway_core.kafka import EventProducer, PublishError
from gateway_core.logging import get_logger
from orchestrator.domain.payment import Dispute, Payment, Refund

NOTIFY_CHANNEL = "orchestrator_outbox"
# The Kafka record header carrying the W3C trace context of the request that wrote the event.
TRACEPARENT = "traceparent"
# Only one relay publishes at a time, whatever the replica count, so order is kept.
RELAY_LOCK_KEY = 0x0_5A7E_0B0C
BATCH_SIZE = 200
# Set by the leading relay at each batch (0 elsewhere): dashboards take the max over replicas.
OLDEST_UNPUBLISHED_SECONDS = Gauge(
    "outbox_oldest_unpublished_age_seconds",
    "Age of the oldest event not yet published to Kafka, as the leading relay last read the"
    " outbox (0: none waiting).",
)
PURGE_BATCH = 5000
PURGE_INTERVAL_SECONDS = 600.0

# Whether this session still holds the relay lock: a bigint advisory lock shows in pg_locks
# as classid (high 32 bits), objid (low 32 bits) and objsubid 1.
_HOLDS_RELAY_LOCK = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND classid::bigint = ($1::bigint >> 32) AND objid::bigint = ($1::bigint & 4294967295)
      AND objsubid = 1
)
"""

# In batches, so no single transaction holds many row locks; rows another purger holds are
# skipped. Only published rows: an unpublished event is kept however old it is.
_PURGE_PUBLISHED = """
DELETE FROM outbox o
USING (
    SELECT id FROM outbox
    WHERE published_at < now() - $1::interval
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) old
WHERE o.id = old.id
"""

# What a dead or unreachable lock connection raises.
_CONNECTION_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, Unavailable)

log = get_logger(__name__)


class EventEncoder(Protocol):
    """Writes an event's payload (the wire form is the servicers' business: servicers/wire.py)."""

    def __call__(
        self,
        *,
        event_id: str,
        event_type: str,
        payment: Payment,
        sequence: int,
        refund: Refund | None = None,
        dispute: Dispute | None = None,
    ) -> bytes: ...


async def enqueue(
    conn: asyncpg.Connection,
    *,
    topic: str,
    encode: EventEncoder,
    event_type: str,
    payment: Payment,
    sequence: int,
    refund: Refund | None = None,
    dispute: Dispute | None = None,
) -> str:
    """Add an event to the outbox inside the caller's transaction; returns its event id."""
    event_id = new_id("EVT")
    payload = encode(
        event_id=event_id,
        event_type=event_type,
        payment=payment,
        sequence=sequence,
        refund=refund,
        dispute=dispute,
    )
    # The relay's wake-up rides on the insert (one round trip): delivered at commit, and
    # folded into one notification per transaction however many events it wrote.
    await conn.execute(
        "WITH added AS (INSERT INTO outbox (event_id, topic, event_key, payload, traceparent)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING 1)"
        " SELECT pg_notify($6, '') FROM added",
        event_id,
        topic,
        payment.payment_id,
        payload,
        current_traceparent(),
        NOTIFY_CHANNEL,
    )
    return event_id


def current_traceparent() -> str:
    """The W3C traceparent of the span in progress ("" outside one): the event's link back to
    the request that caused it."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT, "")


class LeadershipLost(RuntimeError):
    """The relay cannot prove it still holds the relay lock, so it must stop publishing."""


class OutboxRelay:
    """Publishes unpublished outbox rows to Kafka; survives broker outages by retrying.

    One relay publishes at a time, whatever the replica count: the leader holds a session
    advisory lock on its own connection (the others wait on standby), which keeps per-payment
    order. Before each batch the leader proves on that connection that it still holds the lock:
    if the connection dropped (a killed backend, a network cut), the server released the lock
    and another replica may hold it now, so this one raises LeadershipLost instead of
    publishing. Rows are read, published outside any transaction (pipelined, in id order), and
    only the acknowledged prefix is marked published. A failure ends `run()`: the service
    bootstrap restarts it with backoff, it contends for the lock again, and the unmarked rows
    go out again.

    The producer starts once the relay leads and is stopped (flushing what it queued) before
    the lock connection goes back to the pool, which releases the lock: a clean handover never
    overlaps. If the lock connection drops while a batch is in flight, that one batch may
    still reach the broker while the new leader sends the same rows: duplicates of one batch,
    which consumers drop by event_id, with each payment's first deliveries still in order.
    """

    def __init__(self, pool: asyncpg.Pool, producer: EventProducer, poll_seconds: float = 1.0):
        self._pool = pool
        self._producer = producer
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()

    async def run(self) -> None:
        # Returning the connection to the pool resets it, which releases the advisory lock
        # (or closes the connection, if it is broken).
        async with self._pool.acquire() as lock_conn:
            await lock_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                await self._lead(lock_conn)
            finally:
                # A lock connection that died cannot unlisten, and need not.
                with contextlib.suppress(*_CONNECTION_FAILURES):
                    await lock_conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)

    async def _lead(self, lock_conn: asyncpg.Connection) -> None:
        while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
            await self._sleep()  # another replica is publishing
        log.info("outbox relay is the leader")
        # Started here (not at service start) so that payments flow while the broker is down:
        # the bootstrap restarts this task with backoff until it connects.
        await self._producer.start()
        try:
            while True:
                await self._prove_leadership(lock_conn)
                if await self._publish_batch() < BATCH_SIZE:
                    await self._sleep()
        finally:
            await self._producer.stop()

    async def _prove_leadership(self, lock_conn: asyncpg.Connection) -> None:
        try:
            held = await lock_conn.fetchval(_HOLDS_RELAY_LOCK, RELAY_LOCK_KEY)
        except _CONNECTION_FAILURES as exc:
            raise LeadershipLost(
                f"the relay's lock connection failed ({exc!r}); another replica may lead now"
            ) from exc
        if not held:
            raise LeadershipLost("the relay no longer holds its lock; another replica may lead")

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_seconds)

    async def _publish_batch(self) -> int:
        # Cleared before reading: a notification that arrives from here on wakes the next wait.
        self._wakeup.clear()
        rows = await self._pool.fetch(
            "SELECT id, topic, event_key, payload, traceparent,"
            " extract(epoch FROM clock_timestamp() - created_at)::float8 AS age_seconds"
            " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
            BATCH_SIZE,
        )
        OLDEST_UNPUBLISHED_SECONDS.set(rows[0]["age_seconds"] if rows else 0)
        if not rows:
            return 0
        failure: PublishError | None = None
        try:
            await self._producer.send_in_order(
                [
                    (
                        r["topic"],
                        r["event_key"],
                        r["payload"],
                        {TRACEPARENT: r["traceparent"]} if r["traceparent"] else {},
                    )
                    for r in rows
                ]
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


class OutboxPurge:
    """Deletes published outbox rows older than `retention`, in batches, every interval.

    Safe with several replicas (rows are claimed with SKIP LOCKED) and with the relay, which
    only reads rows not yet published. Meant for a ServiceApp background task.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        retention: timedelta,
        *,
        interval_seconds: float = PURGE_INTERVAL_SECONDS,
        batch_size: int = PURGE_BATCH,
    ) -> None:
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        self._pool = pool
        self._retention = retention
        self._interval = interval_seconds
        self._batch_size = batch_size

    async def run(self) -> None:
        while True:
            purged = await self.purge()
            if purged:
                log.info("published outbox rows purged", rows=purged)
            await asyncio.sleep(self._interval)

    async def purge(self) -> int:
        """Delete every published row past the retention; returns how many."""
        total = 0
        while True:
            status: str = await self._pool.execute(
                _PURGE_PUBLISHED, self._retention, self._batch_size
            )
            deleted = int(status.rsplit(" ", 1)[1])
            total += deleted
            if deleted < self._batch_size:
                return total
