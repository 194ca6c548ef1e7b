"""PostgreSQL access for the orchestrator's own schema (the pool's search_path points at it).

Every status change goes through `transition`, which locks the payment row, checks the move
against the state machine, and writes the history row, the outbox event and (on capture) the
ledger entry in the same transaction.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway_core.errors import Aborted, FailedPrecondition, GatewayError, NotFound, invalid_field
from gateway_core.fees import Fee
from orchestrator import ledger_store, outbox
from orchestrator.connectors.card import emi
from orchestrator.domain.ledger import capture_entry, emi_discount_entry, refund_entry
from orchestrator.domain.states import EVENT_FOR_STATUS, Status, can_transition, ensure_transition
from orchestrator.idempotency import bind_effects
from orchestrator.providers.fraud import Assessment
from orchestrator.records import (
    DisputeRecord,
    MerchantRecord,
    PaymentRecord,
    RefundRecord,
    TransitionRecord,
)

# Columns a transition may change alongside the status.
_CHANGEABLE = frozenset(
    {
        "external_txn_id",
        "gateway_response",
        "failure_reason",
        "processed_at",
        "payment_details",
        "next_inquiry_at",
        "inquiry_attempts",
        "provider",
        "expires_at",
        "operation",
        "operation_from",
    }
)
CAPTURED = frozenset({Status.SUCCESS, Status.PARTIALLY_REFUNDED, Status.REFUNDED})
# Waiting for the customer or the provider: inquiries and expiry look after these.
OPEN = frozenset({Status.CREATED, Status.PENDING, Status.REQUIRES_ACTION})
# A capture, cancel or void is at the provider: the payment is held until it is resolved.
IN_OPERATION = frozenset({Status.CAPTURING, Status.CANCELLING})
# Closed without the customer's money: a provider success reported now must be reversed.
CLOSED_UNPAID = frozenset({Status.FAILED, Status.EXPIRED, Status.CANCELLED})
REASON_IN_PROGRESS = "PAYMENT_OPERATION_IN_PROGRESS"
_PAYMENT = "SELECT * FROM payments WHERE payment_id = $1"
_LOCKED_PAYMENT = "SELECT * FROM payments WHERE payment_id = $1 FOR UPDATE"


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
    fee: Fee = field(default_factory=lambda: Fee(0, 0))
    fraud: Assessment | None = None
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

    record: PaymentRecord
    applied: bool  # False: the payment was already there, or the move is not allowed now


class Repository:
    def __init__(self, pool: asyncpg.Pool, events_topic: str) -> None:
        self._pool = pool
        self._topic = events_topic

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def events_topic(self) -> str:
        return self._topic

    async def lock_payment(self, conn: asyncpg.Connection, payment_id: str) -> PaymentRecord | None:
        """The payment under a row lock held until the caller's transaction ends (refunds and
        disputes of one payment take it, so what they take back can never exceed the capture)."""
        return await self._load(conn, payment_id, None, lock=True)

    async def reload(self, conn: asyncpg.Connection, payment_id: str) -> PaymentRecord:
        return await self._reload(conn, payment_id)

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
        """Insert a payment in CREATED with its event and optionally move it on at once, in
        one transaction: a half-created payment is never visible. It is the request's first
        durable effect, so its Idempotency-Key is bound to the payment here."""
        async with self._pool.acquire() as conn, conn.transaction():
            await bind_effects(conn, new.payment_id)
            await conn.execute(
                "INSERT INTO payments (payment_id, merchant_id, user_id, amount_paisa, currency,"
                " payment_method, status, description, callback_url, metadata, payment_details,"
                " capture_method, payment_url, provider, expires_at, fees_paisa, tax_paisa,"
                " fraud_score, fraud_decision, fraud_signals, next_inquiry_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'CREATED', $7, $8, $9, $10, $11,"
                " $12, $13, $14, $15, $16, $17, $18, $19, $20)",
                new.payment_id,
                new.merchant_id,
                new.user_id,
                new.amount_paisa,
                new.currency,
                new.payment_method,
                new.description,
                new.callback_url,
                new.metadata,
                new.payment_details,
                new.capture_method,
                new.payment_url,
                new.provider,
                new.expires_at,
                new.fee.fee_paisa,
                new.fee.tax_paisa,
                new.fraud.score if new.fraud else None,
                new.fraud.decision if new.fraud else None,
                [s.__dict__ for s in new.fraud.signals] if new.fraud else [],
                new.next_inquiry_at,
            )
            record = await self._record_step(conn, new.payment_id, None, Status.CREATED, "created")
            if then is not None:
                record = (await self._move(conn, record, then[0], then[1], {})).record
            return record

    async def get_payment(self, payment_id: str, merchant_id: str | None) -> PaymentRecord:
        """The payment with its history; NotFound also when it belongs to another merchant,
        so ids of other merchants' payments reveal nothing."""
        async with self._pool.acquire() as conn:
            record = await self._load(conn, payment_id, merchant_id)
        if record is None:
            raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
        return record

    async def find_payment(self, payment_id: str) -> PaymentRecord | None:
        async with self._pool.acquire() as conn:
            return await self._load(conn, payment_id, None)

    async def find_refund(self, refund_id: str) -> RefundRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
        return RefundRecord.from_row(row) if row is not None else None

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
    ) -> Transition:
        """Move a payment to `target` under a row lock.

        strict=True (a merchant's request): an illegal move raises a clear 4xx error.
        strict=False (a provider's report, a job): an impossible move is a no-op, so late or
        repeated reports never overwrite a final status.
        only_from: a no-op unless the payment is in one of these statuses now (a job finishing
        what it started must not finish someone else's operation).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            record = await self._load(conn, payment_id, merchant_id, lock=True)
            if record is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            if only_from is not None and record.status not in only_from:
                return Transition(record, applied=False)
            if record.status == target or (
                not strict and not can_transition(record.status, target)
            ):
                return Transition(record, applied=False)
            return await self._move(conn, record, target, reason, dict(changes or {}))

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
    ) -> PaymentRecord:
        """Hold the payment for a capture, cancel or void: CAPTURING or CANCELLING, under the
        row lock, so of two concurrent operations exactly one gets it and the other a 409.

        `refusal(status)` is raised when the payment is not in `allowed_from`. The claim is the
        request's first effect (it binds the Idempotency-Key), and it schedules a status
        inquiry, so a process that dies after it leaves work the inquiry job finishes.
        """
        target = Status.CAPTURING if operation == "CAPTURE" else Status.CANCELLING
        async with self._pool.acquire() as conn, conn.transaction():
            record = await self._load(conn, payment_id, merchant_id, lock=True)
            if record is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            if record.status in IN_OPERATION:
                raise Aborted(
                    f"payment {payment_id} is {record.status}: another operation is at the "
                    "provider; retry when it has finished",
                    reason=REASON_IN_PROGRESS,
                    metadata={"status": record.status.value},
                )
            if record.status not in allowed_from:
                raise refusal(record.status)
            await bind_effects(conn, payment_id)
            moved = await self._move(
                conn,
                record,
                target,
                reason,
                {
                    "operation": operation,
                    "operation_from": record.status.value,
                    "next_inquiry_at": datetime.now(UTC) + inquire_after,
                },
            )
            return moved.record

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

    # Background work queues

    async def claim_due_inquiries(self, limit: int, lease: timedelta) -> list[PaymentRecord]:
        """Payments whose outcome is unknown and due for a status inquiry, leased to this
        worker so other replicas skip them (see `_claim_for_job`)."""
        return await self._claim_for_job(
            "next_inquiry_at <= now() AND status IN"
            " ('CREATED', 'PENDING', 'REQUIRES_ACTION', 'CAPTURING', 'CANCELLING')",
            "next_inquiry_at",
            limit,
            lease,
        )

    async def claim_expired(self, limit: int, lease: timedelta) -> list[PaymentRecord]:
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
    ) -> tuple[PaymentRecord, RefundRecord]:
        """Record a PENDING refund if the payment still has that much to refund.

        The payment row lock serialises concurrent refunds, so their total can never exceed
        what was captured, whatever the interleaving.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            payment = await self._load(conn, payment_id, merchant_id, lock=True)
            if payment is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            if payment.status not in CAPTURED:
                raise FailedPrecondition(
                    f"only captured payments can be refunded; this one is {payment.status}",
                    reason="PAYMENT_NOT_CAPTURED",
                )
            # Money a dispute took (or may keep) back for the customer cannot be refunded too.
            refundable = (
                payment.amount_paisa - payment.refund_reserved_paisa - payment.disputed_paisa
            )
            amount = refundable if amount_paisa is None else amount_paisa
            if amount <= 0 or amount > refundable:
                raise invalid_field(
                    "amount_paisa",
                    f"must be between 1 and the refundable {refundable} paisa",
                    reason="REFUND_EXCEEDS_CAPTURED",
                )
            await bind_effects(conn, refund_id)
            row = await conn.fetchrow(
                "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_paisa, currency,"
                " status, reason, metadata) VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7)"
                " RETURNING *",
                refund_id,
                payment_id,
                payment.merchant_id,
                amount,
                payment.currency,
                reason,
                dict(metadata),
            )
            assert row is not None
            refund = RefundRecord.from_row(row)
            payment = await self._reload(conn, payment_id)
            await self._refund_event(conn, "refund.created", payment, refund)
            return payment, refund

    async def finish_refund(
        self, refund_id: str, *, processed: bool, external_refund_id: str, failure_reason: str
    ) -> tuple[PaymentRecord, RefundRecord]:
        """Settle a PENDING refund: PROCESSED moves the payment and posts the ledger entry;
        FAILED frees the amount again. A second call is a no-op."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT payment_id, status FROM refunds WHERE refund_id = $1", refund_id
            )
            if row is None:
                raise NotFound(f"refund {refund_id} not found", reason="REFUND_NOT_FOUND")
            payment = await self._load(conn, row["payment_id"], None, lock=True)
            assert payment is not None
            if row["status"] != "PENDING":
                return payment, _find_refund(payment, refund_id)
            updated = await conn.fetchrow(
                "UPDATE refunds SET status = $2, external_refund_id = $3, failure_reason = $4,"
                " processed_at = now() WHERE refund_id = $1 RETURNING *",
                refund_id,
                "PROCESSED" if processed else "FAILED",
                external_refund_id,
                failure_reason,
            )
            assert updated is not None
            refund = RefundRecord.from_row(updated)
            if not processed:
                payment = await self._reload(conn, payment.payment_id)
                await self._refund_event(conn, "refund.failed", payment, refund)
                return payment, refund
            await ledger_store.post_entry(
                conn,
                refund_entry(
                    payment_id=payment.payment_id,
                    refund_id=refund_id,
                    merchant_id=payment.merchant_id,
                    provider=payment.provider,
                    currency=payment.currency,
                    amount_paisa=refund.amount_paisa,
                ),
            )
            payment = await self._reload(conn, payment.payment_id)
            await self._refund_event(conn, "refund.processed", payment, refund)
            if refund.kind == "REVERSAL":
                return payment, refund  # the payment stays closed; its money went back
            target = (
                Status.REFUNDED
                if payment.refunded_paisa >= payment.amount_paisa
                else Status.PARTIALLY_REFUNDED
            )
            moved = await self._move(conn, payment, target, f"refund {refund_id}", {})
            return moved.record, refund

    async def record_reversal(
        self, payment_id: str, refund_id: str, reason: str, changes: Mapping[str, Any]
    ) -> tuple[PaymentRecord, RefundRecord | None]:
        """A provider took the money of a payment the gateway had closed (or is cancelling):
        book what happened and open the refund that gives it back, in one transaction.

        The payment stays closed (a CANCELLING one becomes CANCELLED: the merchant's cancel
        stands). The capture is posted without a fee (the merchant never sold anything), a
        REVERSAL refund of the whole amount is recorded PENDING with its event, and the fee
        shown on the payment goes to zero. Returns the refund to settle, or None when the
        payment is not closed (nothing to reverse) or its reversal already exists.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            payment = await self._load(conn, payment_id, None, lock=True)
            if payment is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            if payment.status == Status.CANCELLING and payment.operation_from in OPEN:
                payment = (
                    await self._move(conn, payment, Status.CANCELLED, reason, dict(changes))
                ).record
            elif payment.status in CLOSED_UNPAID:
                sets, args = _set_clause(changes, start=2)
                if sets:
                    await conn.execute(
                        f"UPDATE payments SET {sets} WHERE payment_id = $1",  # noqa: S608
                        payment_id,
                        *args,
                    )
                    payment = await self._reload(conn, payment_id)
            else:
                return payment, None
            row = await conn.fetchrow(
                "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_paisa, currency,"
                " status, reason, kind) VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, 'REVERSAL')"
                " ON CONFLICT DO NOTHING RETURNING *",
                refund_id,
                payment_id,
                payment.merchant_id,
                payment.amount_paisa,
                payment.currency,
                reason,
            )
            if row is None:
                return payment, None
            await conn.execute(
                "UPDATE payments SET fees_paisa = 0, tax_paisa = 0, updated_at = now()"
                " WHERE payment_id = $1",
                payment_id,
            )
            await ledger_store.post_entry(
                conn,
                capture_entry(
                    payment_id=payment_id,
                    merchant_id=payment.merchant_id,
                    provider=payment.provider,
                    currency=payment.currency,
                    amount_paisa=payment.amount_paisa,
                    fee=Fee(0, 0),
                ),
            )
            refund = RefundRecord.from_row(row)
            payment = await self._reload(conn, payment_id)
            await self._refund_event(conn, "refund.created", payment, refund)
            return payment, refund

    async def stale_pending_refunds(self, limit: int) -> list[tuple[PaymentRecord, RefundRecord]]:
        """Refunds still PENDING a while after they were asked for (the provider was silent)."""
        rows = await self._pool.fetch(
            "SELECT refund_id, payment_id FROM refunds WHERE status = 'PENDING'"
            " AND created_at < now() - interval '10 seconds' ORDER BY created_at LIMIT $1",
            limit,
        )
        found: list[tuple[PaymentRecord, RefundRecord]] = []
        for row in rows:
            payment = await self.get_payment(row["payment_id"], None)
            found.append((payment, _find_refund(payment, row["refund_id"])))
        return found

    # Internals

    async def _claim_for_job(
        self, condition: str, order_by: str, limit: int, lease: timedelta
    ) -> list[PaymentRecord]:
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
        return [PaymentRecord.from_row(r) for r in rows]

    async def _move(
        self,
        conn: asyncpg.Connection,
        record: PaymentRecord,
        target: Status,
        reason: str,
        changes: dict[str, Any],
    ) -> Transition:
        ensure_transition(record.status, target)
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"not changeable with a transition: {sorted(unknown)}")
        if target not in OPEN and target not in IN_OPERATION:
            changes.setdefault("next_inquiry_at", None)  # nothing left to ask the provider
        if target not in IN_OPERATION:
            changes.setdefault("operation", None)
            changes.setdefault("operation_from", None)
        sets, args = _set_clause(changes, start=4)
        extra = f", {sets}" if sets else ""
        await conn.execute(
            f"UPDATE payments SET status = $1, version = version + 1, updated_at = now(){extra}"  # noqa: S608
            " WHERE payment_id = $2 AND version = $3",
            target.value,
            record.payment_id,
            record.version,
            *args,
        )
        if target == Status.SUCCESS:
            await self._post_capture(conn, record, changes.get("provider", record.provider))
        moved = await self._record_step(conn, record.payment_id, record.status, target, reason)
        return Transition(moved, applied=True)

    async def _post_capture(
        self, conn: asyncpg.Connection, record: PaymentRecord, provider: str
    ) -> None:
        await ledger_store.post_entry(
            conn,
            capture_entry(
                payment_id=record.payment_id,
                merchant_id=record.merchant_id,
                provider=provider,
                currency=record.currency,
                amount_paisa=record.amount_paisa,
                fee=Fee(record.fees_paisa, record.tax_paisa),
            ),
        )
        # The plan chosen when the payment was created (connectors/card), never chosen again.
        terms = emi.terms_of(record.payment_details, record.amount_paisa)
        if terms is not None and terms.merchant_discount_paisa:
            await ledger_store.post_entry(
                conn,
                emi_discount_entry(
                    payment_id=record.payment_id,
                    merchant_id=record.merchant_id,
                    provider=provider,
                    currency=record.currency,
                    discount_paisa=terms.merchant_discount_paisa,
                ),
            )

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
        record = await self._reload(conn, payment_id)
        await outbox.enqueue(
            conn,
            topic=self._topic,
            event_type=EVENT_FOR_STATUS[to_status],
            payment=record.to_proto(with_qr=False),
            sequence=record.version,
        )
        return record

    async def _refund_event(
        self,
        conn: asyncpg.Connection,
        event_type: str,
        payment: PaymentRecord,
        refund: RefundRecord,
    ) -> None:
        await outbox.enqueue(
            conn,
            topic=self._topic,
            event_type=event_type,
            payment=payment.to_proto(with_qr=False),
            sequence=payment.version,
            refund=refund.to_proto(),
        )

    async def _reload(self, conn: asyncpg.Connection, payment_id: str) -> PaymentRecord:
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
    ) -> PaymentRecord | None:
        row = await conn.fetchrow(_LOCKED_PAYMENT if lock else _PAYMENT, payment_id)
        if row is None or (merchant_id is not None and row["merchant_id"] != merchant_id):
            return None
        steps = await conn.fetch(
            "SELECT from_status, to_status, reason, created_at FROM payment_status_history"
            " WHERE payment_id = $1 ORDER BY id",
            payment_id,
        )
        refunds = await conn.fetch(
            "SELECT * FROM refunds WHERE payment_id = $1 ORDER BY created_at, refund_id",
            payment_id,
        )
        disputes = await conn.fetch(
            "SELECT * FROM disputes WHERE payment_id = $1 ORDER BY created_at, dispute_id",
            payment_id,
        )
        return PaymentRecord.from_row(
            row,
            tuple(TransitionRecord(**dict(s)) for s in steps),
            tuple(RefundRecord.from_row(r) for r in refunds),
            tuple(DisputeRecord.from_row(d) for d in disputes),
        )


def _find_refund(payment: PaymentRecord, refund_id: str) -> RefundRecord:
    return next(r for r in payment.refunds if r.refund_id == refund_id)


def _set_clause(changes: Mapping[str, Any], *, start: int) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    for offset, (column, value) in enumerate(sorted(changes.items())):
        parts.append(f"{column} = ${start + offset}")
        args.append(value)  # the pool's codec turns dicts into jsonb
    return ", ".join(parts), args


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
