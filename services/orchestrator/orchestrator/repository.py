"""PostgreSQL access for the orchestrator's own schema (the pool's search_path points at it)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway_core.errors import Aborted, NotFound, invalid_field
from orchestrator import outbox
from orchestrator.domain.states import EVENT_FOR_STATUS, Status, ensure_transition
from orchestrator.records import MerchantRecord, PaymentRecord, TransitionRecord


@dataclass(frozen=True)
class NewPayment:
    payment_id: str
    merchant_id: str
    user_id: str
    amount_paisa: int
    currency: str
    payment_method: str
    description: str
    callback_url: str
    metadata: dict[str, str]
    payment_details: dict[str, str]
    capture_method: str
    payment_url: str
    provider: str
    expires_at: datetime | None


@dataclass(frozen=True)
class PaymentFilter:
    status: str | None = None
    payment_method: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class Repository:
    def __init__(self, pool: asyncpg.Pool, events_topic: str) -> None:
        self._pool = pool
        self._topic = events_topic

    # Merchants

    async def create_merchant(
        self, *, merchant_id: str, name: str, email: str, vpa: str, category: str
    ) -> MerchantRecord:
        row = await self._pool.fetchrow(
            "INSERT INTO merchants (merchant_id, name, email, vpa, category)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING *",
            merchant_id,
            name,
            email,
            vpa,
            category,
        )
        assert row is not None
        return MerchantRecord.from_row(row)

    async def get_merchant(self, merchant_id: str) -> MerchantRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM merchants WHERE merchant_id = $1", merchant_id
        )
        return MerchantRecord.from_row(row) if row else None

    async def list_merchants(self, *, limit: int, after_id: str) -> list[MerchantRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM merchants WHERE merchant_id > $1 ORDER BY merchant_id LIMIT $2",
            after_id,
            limit,
        )
        return [MerchantRecord.from_row(r) for r in rows]

    # Payments

    async def create_payment(
        self, new: NewPayment, *, then: tuple[Status, str] | None = None
    ) -> PaymentRecord:
        """Insert a payment in CREATED (with its event) and optionally move it on at once,
        all in one transaction: a half-created payment is never visible."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO payments (payment_id, merchant_id, user_id, amount_paisa, currency,"
                " payment_method, status, description, callback_url, metadata, payment_details,"
                " capture_method, payment_url, provider, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'CREATED', $7, $8, $9::jsonb, $10::jsonb, $11,"
                " $12, $13, $14)",
                new.payment_id,
                new.merchant_id,
                new.user_id,
                new.amount_paisa,
                new.currency,
                new.payment_method,
                new.description,
                new.callback_url,
                json.dumps(new.metadata),
                json.dumps(new.payment_details),
                new.capture_method,
                new.payment_url,
                new.provider,
                new.expires_at,
            )
            record = await self._record_step(conn, new.payment_id, None, Status.CREATED, "created")
            if then is not None:
                record = await self._transition(conn, record, then[0], then[1])
            return record

    async def get_payment(self, payment_id: str, merchant_id: str | None) -> PaymentRecord:
        """The payment with its history; NotFound also when it belongs to another merchant,
        so ids of other merchants' payments reveal nothing."""
        async with self._pool.acquire() as conn:
            record = await self._load(conn, payment_id, merchant_id)
        if record is None:
            raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
        return record

    async def list_payments(
        self, merchant_id: str, flt: PaymentFilter, *, limit: int, page_token: str
    ) -> tuple[list[PaymentRecord], str]:
        """Newest first; the cursor is the (created_at, payment_id) of the page's last row."""
        clauses = ["merchant_id = $1"]
        args: list[Any] = [merchant_id]

        def add(clause: str, value: Any) -> None:
            args.append(value)
            clauses.append(clause.format(f"${len(args)}"))

        if flt.status:
            add("status = {}", flt.status)
        if flt.payment_method:
            add("payment_method = {}", flt.payment_method)
        if flt.created_from:
            add("created_at >= {}", flt.created_from)
        if flt.created_to:
            add("created_at < {}", flt.created_to)
        if page_token:
            created_at, payment_id = _decode_cursor(page_token)
            args.extend([created_at, payment_id])
            clauses.append(f"(created_at, payment_id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        rows = await self._pool.fetch(
            f"SELECT * FROM payments WHERE {' AND '.join(clauses)}"  # noqa: S608 - clauses are ours
            f" ORDER BY created_at DESC, payment_id DESC LIMIT ${len(args)}",
            *args,
        )
        records = [PaymentRecord.from_row(r) for r in rows[:limit]]
        next_token = _encode_cursor(records[-1]) if len(rows) > limit else ""
        return records, next_token

    # Internals

    async def _transition(
        self, conn: asyncpg.Connection, record: PaymentRecord, target: Status, reason: str
    ) -> PaymentRecord:
        ensure_transition(record.status, target)
        updated = await conn.execute(
            "UPDATE payments SET status = $1, version = version + 1, updated_at = now()"
            " WHERE payment_id = $2 AND version = $3",
            target.value,
            record.payment_id,
            record.version,
        )
        if updated != "UPDATE 1":
            raise Aborted("the payment changed concurrently; retry", reason="CONCURRENT_UPDATE")
        return await self._record_step(conn, record.payment_id, record.status, target, reason)

    async def _record_step(
        self,
        conn: asyncpg.Connection,
        payment_id: str,
        from_status: Status | None,
        to_status: Status,
        reason: str,
    ) -> PaymentRecord:
        await conn.execute(
            "INSERT INTO payment_status_history (payment_id, from_status, to_status, reason)"
            " VALUES ($1, $2, $3, $4)",
            payment_id,
            from_status.value if from_status else None,
            to_status.value,
            reason,
        )
        record = await self._load(conn, payment_id, None)
        assert record is not None
        await outbox.enqueue(
            conn,
            topic=self._topic,
            event_type=EVENT_FOR_STATUS[to_status],
            payment=record.to_proto(with_qr=False),
            sequence=record.version,
        )
        return record

    async def _load(
        self, conn: asyncpg.Connection, payment_id: str, merchant_id: str | None
    ) -> PaymentRecord | None:
        row = await conn.fetchrow("SELECT * FROM payments WHERE payment_id = $1", payment_id)
        if row is None or (merchant_id is not None and row["merchant_id"] != merchant_id):
            return None
        steps = await conn.fetch(
            "SELECT from_status, to_status, reason, created_at FROM payment_status_history"
            " WHERE payment_id = $1 ORDER BY id",
            payment_id,
        )
        history = tuple(TransitionRecord(**dict(s)) for s in steps)
        return PaymentRecord.from_row(row, history)


def _encode_cursor(record: PaymentRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.payment_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created_at, payment_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), payment_id
    except ValueError as exc:
        raise invalid_field("page_token", "is not a token this API issued") from exc
