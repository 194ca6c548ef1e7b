"""Disputes (chargebacks): opened by a provider's signed callback, answered by the merchant
(evidence or acceptance), decided by the provider's second callback or lost when `respond_by`
passes unanswered.

Every change locks the dispute (opening one locks its payment, as refunds do) and writes the
status, the ledger journal and the outbox event in one transaction, so a callback delivered
twice, two replicas of the disputes job, or a refund racing a chargeback can never move money
twice or take more than was captured less refunds. The provider is told of the merchant's
answer after that transaction commits; one that could not be told is told again by the job
(`provider_notified_at` stays NULL until it acknowledged).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway_core.errors import (
    FailedPrecondition,
    GatewayError,
    NotFound,
    invalid_field,
)
from gateway_core.fees import Pricing, dispute_fee
from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from orchestrator import ledger_store
from orchestrator.domain.disputes import (
    EVENT_FOR_STATUS,
    RESOLVED,
    DisputeStatus,
    Phase,
    check_evidence,
    ensure_transition,
    reason_text,
)
from orchestrator.domain.ledger import dispute_opened_entry, dispute_won_entry
from orchestrator.domain.payment import Dispute, Payment
from orchestrator.domain.states import CAPTURED
from orchestrator.idempotency import bind_effects
from orchestrator.providers.base import ProviderNotFound, ProviderTimeout
from orchestrator.providers.disputes import DisputeDeskClient
from orchestrator.repository import Repository
from orchestrator.rows import dispute_from_row

log = get_logger(__name__)

# Callback document types a provider sends about disputes.
OPENED = "dispute.opened"
DECIDED = "dispute.decided"
CALLBACK_TYPES = frozenset({OPENED, DECIDED})
# An answer the provider has not acknowledged is sent again after this long, doubling with
# each try up to MAX_RENOTIFY_BACKOFF.
RENOTIFY_AFTER = timedelta(seconds=5)
MAX_RENOTIFY_BACKOFF = timedelta(minutes=10)
BATCH = 50
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

_DISPUTE = "SELECT * FROM disputes WHERE dispute_id = $1"
_LOCKED_DISPUTE = "SELECT * FROM disputes WHERE dispute_id = $1 FOR UPDATE"
_MOVE = (
    "UPDATE disputes SET status = $2, version = version + 1, updated_at = now(),"
    " resolved_at = CASE WHEN $3 THEN now() END"
)
_LOCKED_CASE = "SELECT * FROM disputes WHERE provider = $1 AND provider_reference = $2 FOR UPDATE"


@dataclass(frozen=True)
class DisputeResult:
    applied: bool  # False: a replay, or news the dispute already had
    dispute: Dispute
    payment: Payment


@dataclass(frozen=True)
class DisputeFilter:
    merchant_id: str | None = None
    status: str | None = None
    phase: str | None = None
    payment_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class Disputes:
    def __init__(
        self,
        repo: Repository,
        pricing: Mapping[str, Pricing],
        desk: Callable[[str], DisputeDeskClient],
        callback_url: Callable[[str], str],
    ) -> None:
        self._repo = repo
        self._pool = repo.pool
        self._pricing = dict(pricing)
        self._desk = desk  # the dispute desk of a provider, by its name
        self._callback_url = callback_url

    # Provider callbacks (already authenticated by their signature)

    async def on_callback(self, provider: str, doc: Mapping[str, Any]) -> DisputeResult:
        kind = doc.get("type")
        case = _text(doc, "case_reference")
        payment_id = _text(doc, "transaction_ref")
        amount = doc.get("amount_paisa")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise invalid_field(
                "body.amount_paisa", "is required: a positive whole number of paisa"
            )
        if kind == OPENED:
            return await self._open(provider, case, payment_id, amount, doc)
        outcome = doc.get("outcome")
        if outcome not in (DisputeStatus.WON, DisputeStatus.LOST):
            raise invalid_field("body.outcome", "must be WON or LOST")
        return await self._decide(provider, case, payment_id, amount, DisputeStatus(outcome))

    async def _open(
        self, provider: str, case: str, payment_id: str, amount: int, doc: Mapping[str, Any]
    ) -> DisputeResult:
        reason_code = _text(doc, "reason_code")
        phase = str(doc.get("phase") or Phase.CHARGEBACK)
        if phase not in Phase.__members__:
            raise invalid_field("body.phase", f"must be one of {', '.join(Phase)}")
        respond_by = _time(doc, "respond_by")
        async with self._pool.acquire() as conn, conn.transaction():
            payment = await self._repo.lock_payment(conn, payment_id)
            if payment is None:
                raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
            # Under the payment's lock: a concurrent copy of this callback waits, then finds it.
            known = await conn.fetchrow(_LOCKED_CASE, provider, case)
            if known is not None:
                return DisputeResult(False, dispute_from_row(known), payment)
            if payment.provider != provider:
                raise FailedPrecondition(
                    f"payment {payment_id} is not served by {provider}", reason="PROVIDER_MISMATCH"
                )
            if payment.status not in CAPTURED:
                raise FailedPrecondition(
                    f"only a captured payment can be disputed; this one is {payment.status}",
                    reason="PAYMENT_NOT_CAPTURED",
                )
            disputable = payment.amount_paisa - payment.refund_reserved_paisa
            disputable -= payment.disputed_paisa
            if amount > disputable:
                raise FailedPrecondition(
                    f"the dispute's {amount} paisa exceed the {disputable} paisa captured and"
                    " neither refunded nor disputed already",
                    reason="DISPUTE_EXCEEDS_CAPTURED",
                )
            fee = dispute_fee(self._pricing[payment.payment_method])
            row = await conn.fetchrow(
                "INSERT INTO disputes (dispute_id, payment_id, merchant_id, provider,"
                " provider_reference, amount_paisa, currency, reason_code, reason, phase, status,"
                " respond_by, fee_paisa, tax_paisa) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                " $10, 'NEEDS_RESPONSE', $11, $12, $13) RETURNING *",
                new_id("DSP"),
                payment_id,
                payment.merchant_id,
                provider,
                case,
                amount,
                payment.currency,
                reason_code,
                reason_text(reason_code),
                phase,
                respond_by,
                fee.fee_paisa,
                fee.tax_paisa,
            )
            assert row is not None
            dispute = dispute_from_row(row)
            await ledger_store.post_entry(
                conn,
                dispute_opened_entry(
                    payment_id=payment_id,
                    dispute_id=dispute.dispute_id,
                    merchant_id=payment.merchant_id,
                    provider=provider,
                    currency=payment.currency,
                    amount_paisa=amount,
                    fee=fee,
                ),
            )
            payment = await self._announce(conn, dispute)
        log.info(
            "dispute opened",
            dispute_id=dispute.dispute_id,
            payment_id=payment_id,
            provider=provider,
            amount_paisa=amount,
            reason_code=reason_code,
        )
        return DisputeResult(True, dispute, payment)

    async def _decide(
        self, provider: str, case: str, payment_id: str, amount: int, outcome: DisputeStatus
    ) -> DisputeResult:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCKED_CASE, provider, case)
            if row is None or row["payment_id"] != payment_id:
                raise NotFound(f"{provider} raised no dispute {case}", reason="DISPUTE_NOT_FOUND")
            dispute = dispute_from_row(row)
            if amount != dispute.amount_paisa:
                raise FailedPrecondition(
                    "the callback's amount differs from the dispute's", reason="AMOUNT_MISMATCH"
                )
            if dispute.status is not DisputeStatus.UNDER_REVIEW:
                # Decided already (a replay), or never answered: the news changes nothing.
                return DisputeResult(False, dispute, await self._repo.reload(conn, payment_id))
            dispute = await self._move(conn, dispute, outcome)
            payment = await self._repo.reload(conn, payment_id)
        log.info("dispute decided", dispute_id=dispute.dispute_id, outcome=outcome.value)
        return DisputeResult(True, dispute, payment)

    # The merchant's answers

    async def submit_evidence(
        self, dispute_id: str, merchant_id: str | None, evidence: Mapping[str, str]
    ) -> Dispute:
        async with self._pool.acquire() as conn, conn.transaction():
            # Whose it is first: another merchant's id is 404 whatever the evidence says.
            dispute = await self._locked(conn, dispute_id, merchant_id)
            checked = check_evidence(evidence)
            if dispute.evidence is not None:
                raise FailedPrecondition(
                    f"evidence for dispute {dispute_id} was submitted already, at"
                    f" {_rfc3339(dispute.evidence_submitted_at)}: it is accepted once",
                    reason="DISPUTE_EVIDENCE_ALREADY_SUBMITTED",
                )
            await self._answerable(conn, dispute, "evidence is")
            await bind_effects(conn, dispute_id)
            dispute = await self._move(
                conn,
                dispute,
                DisputeStatus.UNDER_REVIEW,
                evidence=checked.fields,
                evidence_submitted_at=datetime.now(UTC),
                # The answer is sent right after this commit; the job only if that failed.
                notify_after=datetime.now(UTC) + RENOTIFY_AFTER,
            )
        await self.notify_provider(dispute)
        return await self.get(dispute_id, merchant_id)

    async def accept(self, dispute_id: str, merchant_id: str | None) -> Dispute:
        async with self._pool.acquire() as conn, conn.transaction():
            dispute = await self._locked(conn, dispute_id, merchant_id)
            await self._answerable(conn, dispute, "accepting it is")
            await bind_effects(conn, dispute_id)
            dispute = await self._move(
                conn,
                dispute,
                DisputeStatus.ACCEPTED,
                notify_after=datetime.now(UTC) + RENOTIFY_AFTER,
            )
        await self.notify_provider(dispute)
        return await self.get(dispute_id, merchant_id)

    async def notify_provider(self, dispute: Dispute) -> bool:
        """Tell the provider the merchant's answer; True once it acknowledged."""
        desk = self._desk(dispute.provider)
        try:
            if dispute.status is DisputeStatus.UNDER_REVIEW:
                await desk.submit_evidence(
                    provider=dispute.provider,
                    case_reference=dispute.provider_reference,
                    payment_id=dispute.payment_id,
                    summary=(dispute.evidence or {}).get("summary", ""),
                    callback_url=self._callback_url(dispute.provider),
                )
            elif dispute.status is DisputeStatus.ACCEPTED:
                await desk.accept(
                    provider=dispute.provider,
                    case_reference=dispute.provider_reference,
                    payment_id=dispute.payment_id,
                )
            else:
                return False
        except (ProviderTimeout, ProviderNotFound, GatewayError) as exc:
            log.warning(
                "dispute answer not delivered to the provider; the disputes job retries",
                dispute_id=dispute.dispute_id,
                provider=dispute.provider,
                error=str(exc),
            )
            return False
        await self._pool.execute(
            "UPDATE disputes SET provider_notified_at = now()"
            " WHERE dispute_id = $1 AND provider_notified_at IS NULL",
            dispute.dispute_id,
        )
        return True

    # Reads

    async def get(self, dispute_id: str, merchant_id: str | None) -> Dispute:
        """NotFound also when it is another merchant's: ids of others' disputes reveal nothing."""
        row = await self._pool.fetchrow(_DISPUTE, dispute_id)
        if row is None or (merchant_id is not None and row["merchant_id"] != merchant_id):
            raise NotFound(f"dispute {dispute_id} not found", reason="DISPUTE_NOT_FOUND")
        return dispute_from_row(row)

    async def list(
        self, where: DisputeFilter, *, page_size: int, page_token: str
    ) -> tuple[list[Dispute], str]:
        if page_size < 0:
            raise invalid_field("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        clauses: list[str] = []
        args: list[Any] = []

        def add(clause: str, value: Any) -> None:
            args.append(value)
            clauses.append(clause.format(f"${len(args)}"))

        if where.merchant_id is not None:
            add("merchant_id = {}", where.merchant_id)
        if where.status:
            add("status = {}", where.status)
        if where.phase:
            add("phase = {}", where.phase)
        if where.payment_id:
            add("payment_id = {}", where.payment_id)
        if where.created_from is not None:
            add("created_at >= {}", where.created_from)
        if where.created_to is not None:
            add("created_at < {}", where.created_to)
        if page_token:
            created_at, dispute_id = _decode_cursor(page_token)
            args.extend([created_at, dispute_id])
            clauses.append(f"(created_at, dispute_id) < (${len(args) - 1}, ${len(args)})")
        sql = "SELECT * FROM disputes"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        args.append(limit + 1)
        sql += f" ORDER BY created_at DESC, dispute_id DESC LIMIT ${len(args)}"
        rows = await self._pool.fetch(sql, *args)
        records = [dispute_from_row(r) for r in rows[:limit]]
        token = _encode_cursor(records[-1]) if len(rows) > limit else ""
        return records, token

    # The disputes job

    async def lose_overdue(self) -> int:
        """Unanswered disputes past respond_by are LOST; safe with several replicas (rows one
        replica holds are skipped by the others)."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT * FROM disputes WHERE status = 'NEEDS_RESPONSE' AND respond_by <= now()"
                " ORDER BY respond_by LIMIT $1 FOR UPDATE SKIP LOCKED",
                BATCH,
            )
            for row in rows:
                dispute = await self._move(conn, dispute_from_row(row), DisputeStatus.LOST)
                log.info("dispute lost unanswered", dispute_id=dispute.dispute_id)
        return len(rows)

    async def renotify(self) -> int:
        """Answers the provider has not acknowledged, sent again. Each is claimed (pushed back
        by its backoff) before it is sent, so replicas do not send the same one at once."""
        rows = await self._pool.fetch(
            """
            UPDATE disputes d SET notify_attempts = d.notify_attempts + 1,
                notify_after = now() + least($1::interval * (2 ^ least(d.notify_attempts + 1, 16)),
                                             $2::interval)
            FROM (SELECT dispute_id FROM disputes
                  WHERE provider_notified_at IS NULL AND status IN ('UNDER_REVIEW', 'ACCEPTED')
                    AND notify_after <= now()
                  ORDER BY notify_after LIMIT $3 FOR UPDATE SKIP LOCKED) due
            WHERE d.dispute_id = due.dispute_id
            RETURNING d.*
            """,
            RENOTIFY_AFTER,
            MAX_RENOTIFY_BACKOFF,
            BATCH,
        )
        sent = 0
        for row in rows:
            sent += await self.notify_provider(dispute_from_row(row))
        return sent

    # Inside a transaction

    async def _locked(
        self, conn: asyncpg.Connection, dispute_id: str, merchant_id: str | None
    ) -> Dispute:
        row = await conn.fetchrow(_LOCKED_DISPUTE, dispute_id)
        if row is None or (merchant_id is not None and row["merchant_id"] != merchant_id):
            raise NotFound(f"dispute {dispute_id} not found", reason="DISPUTE_NOT_FOUND")
        return dispute_from_row(row)

    @staticmethod
    async def _answerable(conn: asyncpg.Connection, dispute: Dispute, what: str) -> None:
        if dispute.status is not DisputeStatus.NEEDS_RESPONSE:
            raise FailedPrecondition(
                f"dispute {dispute.dispute_id} is {dispute.status}: {what} accepted only while it"
                " is NEEDS_RESPONSE",
                reason="DISPUTE_NOT_OPEN",
                metadata={"status": dispute.status.value},
            )
        # The database's clock decides, as it does for the job that closes overdue disputes.
        if await conn.fetchval("SELECT now() >= $1::timestamptz", dispute.respond_by):
            raise FailedPrecondition(
                f"dispute {dispute.dispute_id} had to be answered by"
                f" {_rfc3339(dispute.respond_by)}: {what} no longer accepted",
                reason="DISPUTE_RESPONSE_OVERDUE",
            )

    async def _move(
        self,
        conn: asyncpg.Connection,
        dispute: Dispute,
        target: DisputeStatus,
        **changes: Any,
    ) -> Dispute:
        ensure_transition(dispute.status, target)
        # Column names come from this module's callers, never from a request.
        sets = "".join(f", {column} = ${i + 4}" for i, column in enumerate(changes))
        sql = f"{_MOVE}{sets} WHERE dispute_id = $1 RETURNING *"
        row = await conn.fetchrow(
            sql,
            dispute.dispute_id,
            target.value,
            target in RESOLVED,
            *changes.values(),
        )
        assert row is not None
        moved = dispute_from_row(row)
        if target is DisputeStatus.WON:
            await ledger_store.post_entry(
                conn,
                dispute_won_entry(
                    payment_id=moved.payment_id,
                    dispute_id=moved.dispute_id,
                    merchant_id=moved.merchant_id,
                    provider=moved.provider,
                    currency=moved.currency,
                    amount_paisa=moved.amount_paisa,
                ),
            )
        await self._announce(conn, moved)
        return moved

    async def _announce(self, conn: asyncpg.Connection, dispute: Dispute) -> Payment:
        """The dispute's event, with its payment as it is now (it shows its disputes)."""
        payment = await self._repo.reload(conn, dispute.payment_id)
        await self._repo.announce(conn, EVENT_FOR_STATUS[dispute.status], payment, dispute=dispute)
        return payment


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise invalid_field(f"body.{name}", "is required: 1 to 100 characters")
    return value.strip()


def _time(doc: Mapping[str, Any], name: str) -> datetime:
    value = doc.get(name)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise invalid_field(f"body.{name}", "is required: an RFC 3339 time with an offset")
    return moment


def _rfc3339(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _encode_cursor(record: Dispute) -> str:
    raw = f"{record.created_at.isoformat()}|{record.dispute_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created_at, dispute_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), dispute_id
    except ValueError as exc:
        raise invalid_field("page_token", "is not a token this API issued") from exc
