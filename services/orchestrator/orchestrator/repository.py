"""PostgreSQL access for the orchestrator's own schema (the pool's search_path points at it).

Every status change is decided by `lifecycle.decide` on the payment as it stands under its row
lock, and `_persist` carries the Decision out in the same transaction: the status and history
row, the ledger entries, the refund rows and the outbox events. No rule of the lifecycle lives
here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway_core.errors import GatewayError, NotFound, invalid_field
from gateway_core.fees import Fee
from orchestrator import ledger_store, outbox
from orchestrator.connectors.base import DetailsType
from orchestrator.domain.payment import (
    Dispute,
    FraudVerdict,
    Merchant,
    MethodDetails,
    Payment,
    Refund,
)
from orchestrator.domain.states import (
    EVENT_FOR_STATUS,
    Status,
)
from orchestrator.idempotency import bind_effects
from orchestrator.lifecycle import (
    Claim,
    Decision,
    Enter,
    LateSuccess,
    OpenRefund,
    Post,
    PublishPayment,
    RefundAsked,
    RefundSettled,
    Report,
    ScheduleInquiry,
    SetColumns,
    decide,
)
from orchestrator.rows import (
    Row,
    column_value,
    fraud_columns,
    merchant_from_row,
    payment_from_row,
    refund_from_row,
)

# A payment and its children in one statement: each child list is an array of the child
# table's row type, which asyncpg decodes as Records with named fields (rows.py maps them by
# column name, as it does plain rows). asyncpg builds those composite codecs once per
# connection and keeps them: a migration that changes a child table must run before the
# services start (it does: migrations run at start-up), or live connections decode stale shapes.
_PAYMENT = """
SELECT p.*,
    ARRAY(SELECT h FROM payment_status_history h
          WHERE h.payment_id = p.payment_id ORDER BY h.id) AS history,
    ARRAY(SELECT r FROM refunds r
          WHERE r.payment_id = p.payment_id ORDER BY r.created_at, r.refund_id) AS refunds,
    ARRAY(SELECT d FROM disputes d
          WHERE d.payment_id = p.payment_id ORDER BY d.created_at, d.dispute_id) AS disputes,
    ARRAY(SELECT a FROM payment_attempts a
          WHERE a.payment_id = p.payment_id ORDER BY a.attempt_number) AS attempts
FROM payments p
WHERE p.payment_id = $1
"""
# The row lock is its own statement, before the load: under READ COMMITTED one statement
# `... FOR UPDATE OF p` that waited for the lock would return the payment row as its holder
# left it but the children as of the statement's start (its snapshot), missing, say, the
# refund the holder had just added. The load after it takes a new snapshot and sees them all.
_LOCK_PAYMENT = "SELECT merchant_id FROM payments WHERE payment_id = $1 FOR UPDATE"


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
    payment_details: MethodDetails
    capture_method: str
    payment_url: str
    provider: str
    expires_at: datetime | None
    fee: Fee = field(default_factory=lambda: Fee(0, 0))
    fraud: FraudVerdict | None = None
    # The status inquiries' safety net: a handler that dies before the provider answered
    # leaves the payment where the inquiry job will find it.
    next_inquiry_at: datetime | None = None


@dataclass(frozen=True)
class PaymentFilter:
    status: str | None = None
    payment_method: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """The outcome of asking for a status change."""

    record: Payment
    applied: bool  # False: the payment was already there, or the move is not allowed now


class Repository:
    def __init__(
        self,
        pool: asyncpg.Pool,
        events_topic: str,
        encode_event: outbox.EventEncoder,
        details_types: Mapping[str, DetailsType],
    ) -> None:
        """`encode_event` writes the outbox payloads (the wire form); `details_types`: what
        each payment method keeps as its details (connectors.registry.DETAILS_TYPES)."""
        self._pool = pool
        self._topic = events_topic
        self._encode_event = encode_event
        self._details_types = details_types

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def lock_payment(self, conn: asyncpg.Connection, payment_id: str) -> Payment | None:
        """The payment under a row lock held until the caller's transaction ends (refunds and
        disputes of one payment take it, so what they take back can never exceed the capture)."""
        return await self._load(conn, payment_id, None, lock=True)

    async def reload(self, conn: asyncpg.Connection, payment_id: str) -> Payment:
        return await self._reload(conn, payment_id)

    # Merchants

    async def create_merchant(
        self, *, merchant_id: str, name: str, email: str, vpa: str, category: str
    ) -> Merchant:
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
        return merchant_from_row(row)

    async def get_merchant(self, merchant_id: str) -> Merchant | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM merchants WHERE merchant_id = $1", merchant_id
        )
        return merchant_from_row(row) if row else None

    async def list_merchants(self, *, limit: int, after_id: str) -> list[Merchant]:
        rows = await self._pool.fetch(
            "SELECT * FROM merchants WHERE merchant_id > $1 ORDER BY merchant_id LIMIT $2",
            after_id,
            limit,
        )
        return [merchant_from_row(r) for r in rows]

    # Payments

    async def create_payment(
        self, new: NewPayment, *, then: tuple[Status, str] | None = None
    ) -> Payment:
        """Insert a payment in CREATED with its event and optionally move it on at once, in
        one transaction: a half-created payment is never visible. It is the request's first
        durable effect, so its Idempotency-Key is bound to the payment here."""
        async with self._pool.acquire() as conn, conn.transaction():
            await bind_effects(conn, new.payment_id)
            # The payment, its first attempt and its first status in one statement (one round
            # trip, not three); the children's foreign keys are checked at its end.
            await conn.execute(
                "WITH created AS ("
                " INSERT INTO payments (payment_id, merchant_id, user_id, amount_paisa, currency,"
                " payment_method, status, description, callback_url, metadata, payment_details,"
                " capture_method, payment_url, provider, expires_at, fees_paisa, tax_paisa,"
                " fraud_score, fraud_decision, fraud_signals, next_inquiry_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'CREATED', $7, $8, $9, $10, $11,"
                " $12, $13, $14, $15, $16, $17, $18, $19, $20)"
                " RETURNING payment_id, provider),"
                " first_attempt AS ("
                " INSERT INTO payment_attempts (payment_id, attempt_number, provider, status)"
                " SELECT payment_id, 1, provider, 'SERVING' FROM created)"
                " INSERT INTO payment_status_history (payment_id, from_status, to_status, reason)"
                " SELECT payment_id, NULL, 'CREATED', 'created' FROM created",
                new.payment_id,
                new.merchant_id,
                new.user_id,
                new.amount_paisa,
                new.currency,
                new.payment_method,
                new.description,
                new.callback_url,
                new.metadata,
                new.payment_details.encode(),
                new.capture_method,
                new.payment_url,
                new.provider,
                new.expires_at,
                new.fee.fee_paisa,
                new.fee.tax_paisa,
                *fraud_columns(new.fraud),
                new.next_inquiry_at,
            )
            record = await self._reload(conn, new.payment_id)
            await self.announce(conn, EVENT_FOR_STATUS[Status.CREATED], record)
            if then is not None:
                moved = decide(record, Report(then[0], then[1], datetime.now(UTC), strict=True))
                record, _ = await self._persist(conn, record, moved)
            return record

    async def get_payment(self, payment_id: str, merchant_id: str | None) -> Payment:
        """The payment with its history; NotFound also when it belongs to another merchant,
        so ids of other merchants' payments reveal nothing."""
        async with self._pool.acquire() as conn:
            record = await self._load(conn, payment_id, merchant_id)
        if record is None:
            raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
        return record

    async def find_payment(self, payment_id: str) -> Payment | None:
        async with self._pool.acquire() as conn:
            return await self._load(conn, payment_id, None)

    async def find_refund(self, refund_id: str) -> Refund | None:
        row = await self._pool.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
        return refund_from_row(row) if row is not None else None

    async def transition(
        self,
        payment_id: str,
        target: Status,
        reason: str,
        *,
        strict: bool,
        changes: Mapping[str, Any] | None = None,
        merchant_id: str | None = None,
        only_from: frozenset[Status] | None = None,
        inquire_after: timedelta | None = None,
    ) -> Transition:
        """Move a payment to `target` under a row lock, as `lifecycle.Report` decides.

        strict=True (a merchant's request): an illegal move raises a clear 4xx error.
        strict=False (a provider's report, a job): an impossible move is a no-op.
        only_from: a no-op unless the payment is in one of these statuses now.
        inquire_after: the payment stays open; ask its provider again this soon.
        """
        event = Report(
            target,
            reason,
            datetime.now(UTC),
            changes=dict(changes or {}),
            strict=strict,
            only_from=only_from,
            inquire_after=inquire_after,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            record = await self._load(conn, payment_id, merchant_id, lock=True)
            if record is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            decision = decide(record, event)
            if not decision.applied:
                return Transition(record, applied=False)
            moved, _ = await self._persist(conn, record, decision)
            return Transition(moved, applied=True)

    async def claim_operation(
        self,
        payment_id: str,
        merchant_id: str | None,
        *,
        operation: str,
        allowed_from: frozenset[Status],
        refusal: Callable[[Status], GatewayError],
        reason: str,
        inquire_after: timedelta,
    ) -> Payment:
        """Hold the payment for a capture, cancel or void: CAPTURING or CANCELLING, under the
        row lock, so of two concurrent operations exactly one gets it and the other a 409.

        `refusal(status)` is raised when the payment is not in `allowed_from`. The claim is the
        request's first effect (it binds the Idempotency-Key), and it schedules a status
        inquiry, so a process that dies after it leaves work the inquiry job finishes.
        """
        event = Claim(operation, allowed_from, refusal, reason, datetime.now(UTC), inquire_after)
        async with self._pool.acquire() as conn, conn.transaction():
            record = await self._load(conn, payment_id, merchant_id, lock=True)
            if record is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            decision = decide(record, event)
            await bind_effects(conn, payment_id)
            held, _ = await self._persist(conn, record, decision)
            return held

    async def pass_over(self, payment_id: str, provider: str, status: str) -> None:
        """The payment moves on from `provider` (UNAVAILABLE, or SKIPPED: not tried): its
        serving attempt there ends so, or a new attempt records it."""
        async with self._pool.acquire() as conn, conn.transaction():
            ended = await conn.fetchval(
                "UPDATE payment_attempts SET status = $3 WHERE payment_id = $1"
                " AND provider = $2 AND status = 'SERVING' RETURNING attempt_number",
                payment_id,
                provider,
                status,
            )
            if ended is None:
                await self._add_attempt(conn, payment_id, provider, status)

    async def switch_provider(self, payment_id: str, provider: str) -> None:
        """`provider` serves the payment from now on: a new attempt, recorded before its call,
        so a process that dies during it leaves the inquiries asking the right provider."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE payments SET provider = $2, updated_at = now() WHERE payment_id = $1",
                payment_id,
                provider,
            )
            await self._add_attempt(conn, payment_id, provider, "SERVING")

    async def _add_attempt(
        self, conn: asyncpg.Connection, payment_id: str, provider: str, status: str
    ) -> None:
        await conn.execute(
            "INSERT INTO payment_attempts (payment_id, attempt_number, provider, status)"
            " SELECT $1, coalesce(max(attempt_number), 0) + 1, $2, $3 FROM payment_attempts"
            " WHERE payment_id = $1",
            payment_id,
            provider,
            status,
        )

    async def update_details(self, payment_id: str, changes: Mapping[str, Any]) -> None:
        """Change provider bookkeeping that is not a status change (no event)."""
        sets, args = _set_clause(changes, start=2)
        await self._pool.execute(
            f"UPDATE payments SET {sets}, updated_at = now() WHERE payment_id = $1",  # noqa: S608
            payment_id,
            *args,
        )

    async def list_payments(
        self, merchant_id: str, flt: PaymentFilter, *, limit: int, page_token: str
    ) -> tuple[list[Payment], str]:
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
        records = [self._payment_from_row(r) for r in rows[:limit]]
        next_token = _encode_cursor(records[-1]) if len(rows) > limit else ""
        return records, next_token

    # Background work queues

    async def claim_due_inquiries(self, limit: int, lease: timedelta) -> list[Payment]:
        """Payments whose outcome is unknown and due for a status inquiry, leased to this
        worker so other replicas skip them (see `_claim_for_job`)."""
        return await self._claim_for_job(
            "next_inquiry_at <= now() AND status IN"
            " ('CREATED', 'PENDING', 'REQUIRES_ACTION', 'CAPTURING', 'CANCELLING')",
            "next_inquiry_at",
            limit,
            lease,
        )

    async def claim_expired(self, limit: int, lease: timedelta) -> list[Payment]:
        """Open payments and held authorizations past their expires_at, leased likewise."""
        return await self._claim_for_job(
            "expires_at < now() AND status IN"
            " ('CREATED', 'PENDING', 'REQUIRES_ACTION', 'AUTHORIZED')",
            "expires_at",
            limit,
            lease,
        )

    async def job_succeeded(self, payment_id: str) -> None:
        await self._pool.execute(
            "UPDATE payments SET job_lease_until = NULL, job_failures = 0 WHERE payment_id = $1",
            payment_id,
        )

    async def job_failed(self, payment_id: str, backoff: timedelta) -> None:
        """Leave the payment alone for `backoff`; every other due payment goes on."""
        await self._pool.execute(
            "UPDATE payments SET job_lease_until = now() + $2, job_failures = job_failures + 1"
            " WHERE payment_id = $1",
            payment_id,
            backoff,
        )

    async def schedule_inquiry(self, payment_id: str, delay: timedelta | None) -> None:
        """Ask the provider again after `delay` (None: stop asking)."""
        await self._pool.execute(
            "UPDATE payments SET next_inquiry_at = now() + $2,"
            " inquiry_attempts = inquiry_attempts + 1 WHERE payment_id = $1",
            payment_id,
            delay,
        )

    async def inquiry_attempts(self, payment_id: str) -> int:
        value = await self._pool.fetchval(
            "SELECT inquiry_attempts FROM payments WHERE payment_id = $1", payment_id
        )
        return int(value or 0)

    async def remember_callback(
        self, provider: str, event_id: str, payment_id: str, status: str
    ) -> bool:
        """True the first time a provider's callback event is seen; False for a replay."""
        inserted = await self._pool.fetchval(
            "INSERT INTO provider_callbacks (provider, event_id, payment_id, status)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
            provider,
            event_id,
            payment_id,
            status,
        )
        return bool(inserted)

    # Refunds

    async def reserve_refund(
        self,
        *,
        refund_id: str,
        payment_id: str,
        merchant_id: str | None,
        amount_paisa: int | None,
        reason: str,
        metadata: Mapping[str, str],
    ) -> tuple[Payment, Refund]:
        """Record a PENDING refund if the payment still has that much to refund.

        The payment row lock serialises concurrent refunds, so their total can never exceed
        what was captured, whatever the interleaving.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            payment = await self._load(conn, payment_id, merchant_id, lock=True)
            if payment is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            decision = decide(payment, RefundAsked(refund_id, amount_paisa, reason, metadata))
            await bind_effects(conn, refund_id)
            payment, _ = await self._persist(conn, payment, decision)
            return payment, _find_refund(payment, refund_id)

    async def finish_refund(
        self, refund_id: str, *, processed: bool, external_refund_id: str, failure_reason: str
    ) -> tuple[Payment, Refund]:
        """Record the provider's answer on a PENDING refund and carry out what follows
        (`lifecycle.RefundSettled`). A second call is a no-op.

        A callback, an inquiry and the retry job of any replica may settle one refund at once:
        its status is read under its row lock (taken after the payment's, the order every
        writer uses), so only the first settles it and the others find it final."""
        async with self._pool.acquire() as conn, conn.transaction():
            payment_id = await conn.fetchval(
                "SELECT payment_id FROM refunds WHERE refund_id = $1", refund_id
            )
            if payment_id is None:
                raise NotFound(f"refund {refund_id} not found", reason="REFUND_NOT_FOUND")
            payment = await self._load(conn, payment_id, None, lock=True)
            assert payment is not None
            status = await conn.fetchval(
                "SELECT status FROM refunds WHERE refund_id = $1 FOR UPDATE", refund_id
            )
            if status != "PENDING":
                return payment, _find_refund(payment, refund_id)
            await conn.execute(
                "UPDATE refunds SET status = $2, external_refund_id = $3, failure_reason = $4,"
                " processed_at = now() WHERE refund_id = $1",
                refund_id,
                "PROCESSED" if processed else "FAILED",
                external_refund_id,
                failure_reason,
            )
            payment = await self._reload(conn, payment.payment_id)
            refund = _find_refund(payment, refund_id)
            payment, _ = await self._persist(conn, payment, decide(payment, RefundSettled(refund)))
            return payment, _find_refund(payment, refund_id)

    async def record_reversal(
        self, payment_id: str, refund_id: str, reason: str, changes: Mapping[str, Any]
    ) -> tuple[Payment, Refund | None]:
        """A provider took the money of a payment the gateway had closed (or is cancelling):
        book it and open the refund that gives it back, in one transaction
        (`lifecycle.LateSuccess`). Returns the refund to settle, or None when the payment is
        not closed (nothing to reverse) or its reversal already exists."""
        async with self._pool.acquire() as conn, conn.transaction():
            payment = await self._load(conn, payment_id, None, lock=True)
            if payment is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            decision = decide(payment, LateSuccess(refund_id, reason, dict(changes)))
            if not decision.applied:
                return payment, None
            payment, complete = await self._persist(conn, payment, decision)
            return payment, _find_refund(payment, refund_id) if complete else None

    async def claim_stale_refunds(
        self, limit: int, lease: timedelta
    ) -> list[tuple[Payment, Refund]]:
        """Refunds still PENDING a while after they were asked for (the provider was silent),
        leased to this worker until now + `lease`: SKIP LOCKED passes over the ones another
        replica is claiming, and the lease hides them from every replica's next rounds."""
        rows = await self._pool.fetch(
            "UPDATE refunds r SET next_retry_at = now() + $2 FROM ("
            " SELECT refund_id FROM refunds WHERE status = 'PENDING'"
            " AND created_at < now() - interval '10 seconds'"
            " AND (next_retry_at IS NULL OR next_retry_at <= now())"
            " ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED) due"
            " WHERE r.refund_id = due.refund_id RETURNING r.refund_id, r.payment_id",
            limit,
            lease,
        )
        found: list[tuple[Payment, Refund]] = []
        for row in rows:
            payment = await self.get_payment(row["payment_id"], None)
            found.append((payment, _find_refund(payment, row["refund_id"])))
        return found

    # Internals

    async def _claim_for_job(
        self, condition: str, order_by: str, limit: int, lease: timedelta
    ) -> list[Payment]:
        """Lease due rows to this worker until now + `lease`.

        SKIP LOCKED passes over rows another worker is claiming (or a transition holds), and
        the lease keeps them from being claimed again while they are worked on; a worker that
        dies lets its lease run out. A failed payment's lease doubles as its backoff.
        """
        rows = await self._pool.fetch(
            "UPDATE payments p SET job_lease_until = now() + $2 FROM ("  # noqa: S608 - ours
            f" SELECT payment_id FROM payments WHERE {condition}"
            " AND (job_lease_until IS NULL OR job_lease_until <= now())"
            f" ORDER BY {order_by} LIMIT $1 FOR UPDATE SKIP LOCKED) due"
            " WHERE p.payment_id = due.payment_id RETURNING p.*",
            limit,
            lease,
        )
        return [self._payment_from_row(r) for r in rows]

    async def _persist(
        self, conn: asyncpg.Connection, payment: Payment, decision: Decision
    ) -> tuple[Payment, bool]:
        """Carry out a Decision's effects in order, inside the caller's transaction. Returns
        the payment after them, and False when an OpenRefund found its refund already there
        (the decision was carried out before; the effects after it are skipped)."""
        payment_id = payment.payment_id
        current, fresh, complete = payment, True, True

        async def latest() -> Payment:
            nonlocal current, fresh
            if not fresh:
                current, fresh = await self._reload(conn, payment_id), True
            return current

        for effect in decision.effects:
            if isinstance(effect, Enter):
                sets, args = _set_clause(effect.changes, start=4)
                extra = f", {sets}" if sets else ""
                # The move and its history row in one statement (one round trip, not two).
                source, reason = f"${4 + len(args)}", f"${5 + len(args)}"
                moved = await conn.fetchval(
                    "WITH moved AS (UPDATE payments SET status = $1, version = version + 1,"  # noqa: S608
                    f" updated_at = now(){extra} WHERE payment_id = $2 AND version = $3"
                    " RETURNING payment_id)"
                    " INSERT INTO payment_status_history (payment_id, from_status, to_status,"
                    f" reason) SELECT payment_id, {source}, $1, {reason} FROM moved RETURNING 1",
                    effect.target.value,
                    payment_id,
                    current.version,
                    *args,
                    effect.source.value,
                    effect.reason,
                )
                if moved != 1:  # the caller holds the row lock at this version
                    raise RuntimeError(f"payment {payment_id} changed under its row lock")
                fresh = False
            elif isinstance(effect, SetColumns):
                sets, args = _set_clause(effect.changes, start=2)
                await conn.execute(
                    f"UPDATE payments SET {sets}, updated_at = now() WHERE payment_id = $1",  # noqa: S608
                    payment_id,
                    *args,
                )
                fresh = False
            elif isinstance(effect, ScheduleInquiry):
                await conn.execute(
                    "UPDATE payments SET next_inquiry_at = $2 WHERE payment_id = $1",
                    payment_id,
                    effect.at,
                )
            elif isinstance(effect, OpenRefund):
                opened = await conn.fetchval(
                    "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_paisa,"
                    " currency, status, reason, metadata, kind)"
                    " VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8)"
                    " ON CONFLICT DO NOTHING RETURNING refund_id",
                    effect.refund_id,
                    payment_id,
                    payment.merchant_id,
                    effect.amount_paisa,
                    payment.currency,
                    effect.reason,
                    dict(effect.metadata),
                    effect.kind,
                )
                if opened is None:
                    complete = False
                    break
                fresh = False
            elif isinstance(effect, Post):
                await ledger_store.post_entry(conn, effect.entry)
            elif isinstance(effect, PublishPayment):
                await self.announce(conn, effect.event_type, await latest())
            else:
                announced = await latest()
                await self.announce(
                    conn,
                    effect.event_type,
                    announced,
                    refund=_find_refund(announced, effect.refund_id),
                )
        return await latest(), complete

    async def announce(
        self,
        conn: asyncpg.Connection,
        event_type: str,
        payment: Payment,
        *,
        refund: Refund | None = None,
        dispute: Dispute | None = None,
    ) -> None:
        """Queue the payment's event (with the refund or dispute it is about) in the outbox,
        inside the caller's transaction."""
        await outbox.enqueue(
            conn,
            topic=self._topic,
            encode=self._encode_event,
            event_type=event_type,
            payment=payment,
            sequence=payment.version,
            refund=refund,
            dispute=dispute,
        )

    def _payment_from_row(self, row: Row, **children: Sequence[Row]) -> Payment:
        details_type = self._details_types[row["payment_method"]]
        return payment_from_row(row, details_type, **children)

    async def _reload(self, conn: asyncpg.Connection, payment_id: str) -> Payment:
        record = await self._load(conn, payment_id, None)
        assert record is not None
        return record

    async def _load(
        self,
        conn: asyncpg.Connection,
        payment_id: str,
        merchant_id: str | None,
        *,
        lock: bool = False,
    ) -> Payment | None:
        """The payment with all its children (one statement; two with `lock`: see
        _LOCK_PAYMENT), or None when it does not exist or belongs to another merchant."""
        if lock:
            owner = await conn.fetchval(_LOCK_PAYMENT, payment_id)
            if owner is None or (merchant_id is not None and owner != merchant_id):
                return None
        try:
            row = await conn.fetchrow(_PAYMENT, payment_id)
        except asyncpg.exceptions.OutdatedSchemaCacheError:
            # A migration changed a child table since this connection learned its row type (a
            # rolling upgrade migrates while old replicas serve): learn it again, read again.
            await conn.reload_schema_state()
            row = await conn.fetchrow(_PAYMENT, payment_id)
        if row is None or (merchant_id is not None and row["merchant_id"] != merchant_id):
            return None
        return self._payment_from_row(
            row,
            history=row["history"],
            refunds=row["refunds"],
            disputes=row["disputes"],
            attempts=row["attempts"],
        )


def _find_refund(payment: Payment, refund_id: str) -> Refund:
    return next(r for r in payment.refunds if r.refund_id == refund_id)


def _set_clause(changes: Mapping[str, Any], *, start: int) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    for offset, (column, value) in enumerate(sorted(changes.items())):
        parts.append(f"{column} = ${start + offset}")
        args.append(column_value(value))
    return ", ".join(parts), args


def _encode_cursor(record: Payment) -> str:
    raw = f"{record.created_at.isoformat()}|{record.payment_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created_at, payment_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), payment_id
    except ValueError as exc:
        raise invalid_field("page_token", "is not a token this API issued") from exc
