"""Reading what the checks judge, after the run: the orchestrator's tables (read-only), the
providers' books, every event on Kafka, and what the webhook receiver got."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from chaos.checks import (
    EventKey,
    Gateway,
    HistoryRow,
    JournalRow,
    KafkaEvent,
    PaymentRow,
    RefundRow,
)
from devstack.webhook_receiver import Delivery
from orchestrator import ledger_store

KAFKA_READ_SECONDS = 300.0

_PAYMENTS = """
SELECT payment_id, merchant_id, amount_paisa, payment_method, status,
       coalesce(metadata->>'chaos_key', '') AS chaos_key, coalesce(operation_from, '') AS op_from,
       extract(epoch FROM created_at)::float8 AS created, extract(epoch FROM updated_at)::float8
       AS updated, extract(epoch FROM expires_at)::float8 AS expires
FROM payments
"""
_REFUNDS = """
SELECT refund_id, payment_id, amount_paisa, status, kind,
       extract(epoch FROM created_at)::float8 AS created,
       extract(epoch FROM processed_at)::float8 AS processed
FROM refunds
"""
_JOURNALS = """
SELECT journal_id, kind, payment_id, coalesce(refund_id, '') AS refund_id, amount_paisa,
       sum_paisa, lines
FROM journal_totals
"""
_HISTORY = """
SELECT payment_id, to_status, extract(epoch FROM created_at)::float8 AS at
FROM payment_status_history ORDER BY id
"""


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    """A read-only session on one service's schema: the checks can look, never touch."""
    return await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "default_transaction_read_only": "on"}
    )


async def read_gateway(dsn: str) -> Gateway:
    conn = await connect(dsn, "orchestrator")
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # One snapshot: payments, refunds and journals as of the same instant.
            payments = await conn.fetch(_PAYMENTS)
            refunds = await conn.fetch(_REFUNDS)
            journals = await conn.fetch(_JOURNALS)
            history = await conn.fetch(_HISTORY)
            problems = await ledger_store.check_invariants(conn)
    finally:
        await conn.close()
    return Gateway(
        payments={
            r["payment_id"]: PaymentRow(
                payment_id=r["payment_id"],
                merchant_id=r["merchant_id"],
                amount_paisa=int(r["amount_paisa"]),
                method=r["payment_method"],
                status=r["status"],
                chaos_key=r["chaos_key"],
                created_at=r["created"],
                updated_at=r["updated"],
                expires_at=r["expires"],
                operation_from=r["op_from"],
            )
            for r in payments
        },
        refunds={
            r["refund_id"]: RefundRow(
                refund_id=r["refund_id"],
                payment_id=r["payment_id"],
                amount_paisa=int(r["amount_paisa"]),
                status=r["status"],
                kind=r["kind"],
                created_at=r["created"],
                processed_at=r["processed"],
            )
            for r in refunds
        },
        journals=[
            JournalRow(
                journal_id=r["journal_id"],
                kind=r["kind"],
                payment_id=r["payment_id"],
                refund_id=r["refund_id"],
                amount_paisa=int(r["amount_paisa"]),
                sum_paisa=int(r["sum_paisa"]),
                lines=int(r["lines"]),
            )
            for r in journals
        ],
        history=[HistoryRow(r["payment_id"], r["to_status"], r["at"]) for r in history],
        ledger_problems=list(problems),
    )


async def backlog(dsn: str) -> dict[str, int]:
    """Work the stack still owes: unpublished events, webhook deliveries not yet made."""
    orchestrator = await connect(dsn, "orchestrator")
    try:
        unpublished = await orchestrator.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
    finally:
        await orchestrator.close()
    webhook = await connect(dsn, "webhook")
    try:
        pending = await webhook.fetchval("SELECT count(*) FROM deliveries WHERE status = 'PENDING'")
    finally:
        await webhook.close()
    return {"unpublished events": int(unpublished), "pending deliveries": int(pending)}


async def read_books(sandbox_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        reply = await client.get(f"{sandbox_url}/books")
    reply.raise_for_status()
    books: dict[str, Any] = reply.json()
    return books


def kafka_event(value: bytes) -> KafkaEvent | None:
    """A payments.events record (proto3 JSON of paygate.events.v1.Event), or None."""
    try:
        document = json.loads(value)
        refund = document.get("refund") or {}
        key = EventKey(
            type=str(document["type"]),
            payment_id=str(document.get("payment_id") or ""),
            refund_id=str(refund.get("refund_id") or ""),
            sequence=int(document.get("sequence") or 0),
        )
        return KafkaEvent(str(document["event_id"]), str(document.get("merchant_id") or ""), key)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def delivered_key(delivery: Delivery) -> EventKey | None:
    """The event a webhook delivery carries, known the way Kafka knows it."""
    try:
        document = delivery.document
        data = document["data"]
        event_type = str(document["type"])
        return EventKey(
            type=event_type,
            payment_id=str(data.get("payment_id") or ""),
            refund_id=str(data.get("refund_id") or "") if event_type.startswith("refund.") else "",
            sequence=int(data.get("sequence") or 0),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class EventTap:
    """Reads `topic` from its beginning for the whole run, as the gateway's own consumers do
    (through the broker restarts), deduplicated later by event id; `finish` reads on to the
    end of the log."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.events: list[KafkaEvent] = []
        self._bootstrap = bootstrap
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._reading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, fetch_max_wait_ms=200
        )
        await consumer.start()
        await consumer._client.force_metadata_update()
        self._partitions = [
            TopicPartition(self._topic, p) for p in consumer.partitions_for_topic(self._topic) or []
        ]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._consumer = consumer
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=5000)
            except KafkaError:  # the broker restarting: aiokafka reconnects, read on
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                self.events += [e for r in records if r.value and (e := kafka_event(r.value))]

    async def finish(self, within: float = KAFKA_READ_SECONDS) -> list[str]:
        """Read on until every partition is at its end offset (asked repeatedly: the local
        broker's end offsets can lag what a fetch returns), then stop. Returns, for each
        partition not read to its end within `within` seconds, where it stopped."""
        assert self._consumer is not None
        assert self._reading is not None
        deadline = time.monotonic() + within
        lagging: list[str] = []
        try:
            while time.monotonic() < deadline:
                ends = await self._consumer.end_offsets(self._partitions)
                lagging = [
                    f"partition {tp.partition} read only to offset {position} of {ends[tp]}"
                    for tp in self._partitions
                    if (position := await self._consumer.position(tp)) < ends[tp]
                ]
                if not lagging:
                    seen = len(self.events)
                    await asyncio.sleep(3)  # nothing more arrives
                    if len(self.events) == seen:
                        break
                else:
                    await asyncio.sleep(1)
        finally:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
            await self._consumer.stop()
        return lagging


async def until(
    condition: Callable[[], Awaitable[bool]], within: float, every: float = 2.0
) -> bool:
    """Poll an async condition until it holds or `within` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
