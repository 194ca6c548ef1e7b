"""Kafka, thinly: a producer that waits for the broker's ack, a group consumer that commits only
after its handler succeeded (at-least-once), topic creation and a health check.

Delivery is at-least-once, never exactly-once: the idempotent producer and transactions are off
because the local Kafka-compatible broker does not support them, and consumers dedupe by event id
anyway. Kafka errors surface as `aiokafka.errors.KafkaError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from gateway_core.logging import get_logger

log = get_logger(__name__)

_REQUEST_TIMEOUT_MS = 10_000
_RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class ConsumedEvent:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0


EventHandler = Callable[[ConsumedEvent], Awaitable[None]]
# What EventProducer.send_in_order publishes: (topic, key, value), or with record headers.
OutgoingMessage = tuple[str, str, bytes] | tuple[str, str, bytes, Mapping[str, str]]


class PublishError(Exception):
    """A batch publish stopped at a failure; the first `acknowledged` messages are on the
    broker (in order), the rest are not known to be."""

    def __init__(self, acknowledged: int, cause: BaseException) -> None:
        super().__init__(f"publish failed after {acknowledged} acknowledged message(s): {cause}")
        self.acknowledged = acknowledged
        self.cause = cause


class EventProducer:
    """Publishes events. `start()` raises while no broker answers, so a service that must serve
    while Kafka is down starts its producer inside a background task (the outbox relay).
    """

    def __init__(self, bootstrap_servers: Sequence[str], *, client_id: str = "paygate") -> None:
        self._bootstrap_servers = list(bootstrap_servers)
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running event loop.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,
            # A few ms of batching costs little latency and saves round trips under load.
            linger_ms=5,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self, topic: str, key: str, value: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Publish and wait until every in-sync replica has it (the outbox marks it sent after)."""
        if self._producer is None:
            raise RuntimeError("EventProducer.send() before start()")
        await self._producer.send_and_wait(
            topic,
            value=value,
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )

    async def send_in_order(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish (topic, key, value[, headers]) messages pipelined, then wait for every
        acknowledgement in order. One broker round trip per batch instead of per message;
        aiokafka keeps one request in flight per partition, so each key's messages stay in
        order. Raises PublishError saying how many, from the first, the broker acknowledged."""
        if self._producer is None:
            raise RuntimeError("EventProducer.send_in_order() before start()")
        pending: list[asyncio.Future[Any]] = []
        failure: BaseException | None = None
        for topic, key, value, *headers in messages:
            record_headers = [(k, v.encode()) for h in headers for k, v in h.items()]
            try:
                pending.append(
                    await self._producer.send(
                        topic, value=value, key=key.encode(), headers=record_headers or None
                    )
                )
            except Exception as exc:  # could not even be queued: stop here
                failure = exc
                break
        for acknowledged, future in enumerate(pending):
            try:
                await future
            except Exception as exc:
                raise PublishError(acknowledged, exc) from exc
        if failure is not None:
            raise PublishError(len(pending), failure) from failure


class EventConsumer:
    """A consumer-group member that hands each record to `handler` in partition order.

    The offset is committed only after the handler returned, so a crash or restart redelivers
    (at-least-once): handlers must be idempotent. A handler that raises gets the same record
    again after a backoff; a handler that wants to skip a malformed record logs it and returns.
    Run it as a ServiceApp background task: `app.add_background_task("events", consumer.run)`.
    """

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        topics: Sequence[str],
        group_id: str,
        handler: EventHandler,
        *,
        client_id: str = "paygate",
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self._bootstrap_servers = list(bootstrap_servers)
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._topics = list(topics)
        self._group_id = group_id
        self._client_id = client_id
        self._handler = handler

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap_servers,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            # A new group starts from the oldest retained event: nothing published before the
            # consumer first joined is skipped.
            auto_offset_reset="earliest",
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
            # How long the broker may hold a fetch that found nothing new: a consumer that
            # must react fast (webhook deliveries) asks for less than aiokafka's 500 ms.
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await consumer.start()
        retry_delay = 1.0
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for partition, records in batches.items():
                    failed_at = await self._handle_batch(consumer, partition, records)
                    if failed_at is None:
                        retry_delay = 1.0
                        continue
                    # Fetch again from the failed record: it and everything after it are retried.
                    consumer.seek(partition, failed_at)
                    await asyncio.sleep(retry_delay)
                    retry_delay = min(retry_delay * 2, _RETRY_MAX_SECONDS)
        finally:
            await consumer.stop()

    async def _handle_batch(
        self, consumer: AIOKafkaConsumer, partition: TopicPartition, records: list[Any]
    ) -> int | None:
        """Handle records in order and commit the ones handled; the offset that failed, if any."""
        next_offset: int | None = None
        failed_at: int | None = None
        for record in records:
            event = ConsumedEvent(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key.decode() if record.key is not None else None,
                value=record.value or b"",
                headers={k: v.decode(errors="replace") for k, v in record.headers or ()},
                timestamp_ms=record.timestamp,
            )
            try:
                await self._handler(event)
            except Exception:
                log.exception(
                    "event handler failed; will retry",
                    topic=event.topic,
                    partition=event.partition,
                    offset=event.offset,
                )
                failed_at = record.offset
                break
            next_offset = record.offset + 1
        if next_offset is not None:
            commit = asyncio.ensure_future(consumer.commit({partition: next_offset}))
            try:
                await asyncio.shield(commit)
            except asyncio.CancelledError:
                # Shutting down: let the commit land before the consumer closes, or every
                # record of this batch is delivered again after the restart.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(commit, _REQUEST_TIMEOUT_MS / 1000)
                raise
        return failed_at


async def ensure_topics(
    bootstrap: Sequence[str], topics: dict[str, int], replication_factor: int = 1
) -> None:
    """Create the missing ones of `topics` (name -> partitions); existing topics are left as is."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(bootstrap), request_timeout_ms=_REQUEST_TIMEOUT_MS
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if not missing:
            return
        response = await admin.create_topics(missing)
        for topic, code, *_ in response.topic_errors:
            # Another process may have created it between our listing and our request.
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"cannot create topic {topic}")
    finally:
        await admin.close()


async def check_kafka(bootstrap: Sequence[str]) -> None:
    """A dependency check: raises unless a broker answers a metadata request."""
    client = AIOKafkaClient(bootstrap_servers=list(bootstrap), request_timeout_ms=5_000)
    try:
        await client.bootstrap()
    finally:
        await client.close()
