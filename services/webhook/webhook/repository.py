"""The webhook service's tables: endpoints, callback secrets, deliveries and their attempts.

Deliveries are rows, not in-memory jobs: a restart, a `kill -9` or a broker outage loses none.
Workers claim due rows with FOR UPDATE SKIP LOCKED and take a lease on them (`lease_id`,
`next_attempt_at` moved forward), so replicas never send one delivery at once, and a worker
that dies mid-attempt leaves its deliveries due again when their lease ends. An outcome is
recorded only under the lease it was claimed with: a replay that started the delivery over
meanwhile is not overwritten by the old attempt's result.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from gateway_core.ids import new_id
from webhook.events import ALL_EVENTS, PaymentEvent

ENABLED = "ENABLED"
DISABLED = "DISABLED"
PENDING = "PENDING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
# After a rotation the old secret keeps signing (alongside the new) this long.
ROTATION_OVERLAP = timedelta(hours=24)
ENDPOINT_DISABLED_ERROR = "endpoint disabled"


class NotFoundError(LookupError):
    """No such row for this merchant."""


@dataclass(frozen=True)
class Endpoint:
    webhook_id: str
    merchant_id: str
    url: str
    events: list[str]
    secret: str
    description: str
    status: str
    disabled_reason: str
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> Endpoint:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CallbackSecret:
    secret: str
    previous_secret_expires_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Attempt:
    attempted_at: datetime
    response_code: int
    error: str
    latency_ms: int


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    webhook_id: str | None
    event_id: str
    event_type: str
    payment_id: str
    status: str
    attempts: int
    last_response_code: int
    last_error: str
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    dead_lettered_at: datetime | None
    created_at: datetime
    history: tuple[Attempt, ...] = ()

    @classmethod
    def of(cls, row: asyncpg.Record, history: Sequence[Attempt] = ()) -> Delivery:
        fields = {n: row[n] for n in cls.__dataclass_fields__ if n != "history"}
        return cls(**fields, history=tuple(history))


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds the lease on, with what it needs to send it."""

    delivery_id: str
    lease_id: uuid.UUID
    merchant_id: str
    webhook_id: str | None
    url: str
    event_type: str
    payload: bytes
    attempts: int
    event_at: datetime
    traceparent: str
    # Newest first; the previous one only while a rotation's overlap lasts.
    secrets: tuple[str, ...]
    endpoint_enabled: bool


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, and what happens next."""

    claimed: Claimed
    attempted_at: datetime
    latency_ms: int
    response_code: int
    error: str
    status: str  # PENDING (retry at next_attempt_at), SUCCEEDED or FAILED
    next_attempt_at: datetime | None = None
    dead_letter: bool = False
    # The endpoint answered 410 Gone: disable it now.
    gone: bool = False
    # No attempt was made (the endpoint was disabled meanwhile): nothing to log.
    attempted: bool = True


@dataclass(frozen=True)
class DisabledEndpoint:
    webhook_id: str
    merchant_id: str
    url: str
    reason: str
    # "gone" (it answered 410) or "failing" (WEBHOOK_DISABLE_AFTER without a success).
    cause: str
    disabled_at: datetime


_ENDPOINT_COLUMNS = """
webhook_id, merchant_id, url, events, secret, description, status, disabled_reason,
disabled_at, previous_secret_expires_at, created_at, updated_at
"""
_DELIVERY_COLUMNS = """
delivery_id, webhook_id, event_id, event_type, payment_id, status, attempts,
last_response_code, last_error, next_attempt_at, delivered_at, dead_lettered_at, created_at
"""


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- endpoints --------------------------------------------------------------------------

    async def create_endpoint(
        self, merchant_id: str, *, url: str, events: list[str], secret: str, description: str
    ) -> Endpoint:
        row = await self.pool.fetchrow(
            f"""
            INSERT INTO webhooks (webhook_id, merchant_id, url, events, secret, description)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING {_ENDPOINT_COLUMNS}
            """,  # noqa: S608 - the column lists are constants
            new_id("WH"),
            merchant_id,
            url,
            events,
            secret,
            description,
        )
        return Endpoint.of(row)

    async def list_endpoints(self, merchant_id: str, *, limit: int, after: str) -> list[Endpoint]:
        rows = await self.pool.fetch(
            f"""
            SELECT {_ENDPOINT_COLUMNS} FROM webhooks
            WHERE merchant_id = $1 AND ($2 = '' OR webhook_id < $2)
            ORDER BY webhook_id DESC LIMIT $3
            """,  # noqa: S608 - the column lists are constants
            merchant_id,
            after,
            limit,
        )
        return [Endpoint.of(r) for r in rows]

    async def get_endpoint(self, merchant_id: str, webhook_id: str) -> Endpoint:
        row = await self.pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhooks "  # noqa: S608 - a constant
            "WHERE merchant_id = $1 AND webhook_id = $2",
            merchant_id,
            webhook_id,
        )
        if row is None:
            raise NotFoundError(webhook_id)
        return Endpoint.of(row)

    async def update_endpoint(
        self,
        merchant_id: str,
        webhook_id: str,
        *,
        url: str | None,
        events: list[str] | None,
        description: str | None,
        status: str | None,
        recover_since: datetime | None,
    ) -> Endpoint:
        """Change what is given; re-enabling clears the failure streak, and with
        `recover_since` makes what FAILED for the endpoint since then due again."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                UPDATE webhooks SET
                    url = coalesce($3, url),
                    events = coalesce($4, events),
                    description = coalesce($5, description),
                    status = coalesce($6, status),
                    disabled_reason = CASE
                        WHEN $6 = 'ENABLED' THEN ''
                        WHEN $6 = 'DISABLED' AND status = 'ENABLED' THEN 'disabled by the merchant'
                        ELSE disabled_reason END,
                    disabled_at = CASE
                        WHEN $6 = 'ENABLED' THEN NULL
                        WHEN $6 = 'DISABLED' AND status = 'ENABLED' THEN now()
                        ELSE disabled_at END,
                    failing_since = CASE WHEN $6 = 'ENABLED' THEN NULL ELSE failing_since END,
                    updated_at = now()
                WHERE merchant_id = $1 AND webhook_id = $2
                RETURNING {_ENDPOINT_COLUMNS}
                """,  # noqa: S608 - the column lists are constants
                merchant_id,
                webhook_id,
                url,
                events,
                description,
                status,
            )
            if row is None:
                raise NotFoundError(webhook_id)
            if status == DISABLED:
                await _fail_pending(conn, webhook_id)
            if status == ENABLED and recover_since is not None:
                await conn.execute(
                    """
                    UPDATE deliveries SET status = 'PENDING', next_attempt_at = now(),
                        lease_id = NULL, dead_lettered_at = NULL, updated_at = now()
                    WHERE webhook_id = $1 AND status = 'FAILED' AND created_at >= $2
                    """,
                    webhook_id,
                    recover_since,
                )
        return Endpoint.of(row)

    async def delete_endpoint(self, merchant_id: str, webhook_id: str) -> None:
        deleted = await self.pool.fetchval(
            "DELETE FROM webhooks WHERE merchant_id = $1 AND webhook_id = $2 RETURNING 1",
            merchant_id,
            webhook_id,
        )
        if deleted is None:
            raise NotFoundError(webhook_id)

    async def rotate_endpoint_secret(
        self, merchant_id: str, webhook_id: str, secret: str
    ) -> Endpoint:
        row = await self.pool.fetchrow(
            f"""
            UPDATE webhooks SET previous_secret = secret, secret = $3,
                previous_secret_expires_at = now() + $4::interval, updated_at = now()
            WHERE merchant_id = $1 AND webhook_id = $2
            RETURNING {_ENDPOINT_COLUMNS}
            """,  # noqa: S608 - the column lists are constants
            merchant_id,
            webhook_id,
            secret,
            ROTATION_OVERLAP,
        )
        if row is None:
            raise NotFoundError(webhook_id)
        return Endpoint.of(row)

    # -- the callback secret -----------------------------------------------------------------

    async def callback_secret(self, merchant_id: str, generated: str) -> CallbackSecret:
        """The merchant's callback secret, created as `generated` on first use."""
        row = await self.pool.fetchrow(
            """
            WITH created AS (
                INSERT INTO callback_secrets (merchant_id, secret) VALUES ($1, $2)
                ON CONFLICT (merchant_id) DO NOTHING
                RETURNING secret, previous_secret_expires_at, created_at
            )
            SELECT * FROM created
            UNION ALL
            SELECT secret, previous_secret_expires_at, created_at FROM callback_secrets
            WHERE merchant_id = $1
            LIMIT 1
            """,
            merchant_id,
            generated,
        )
        return _callback_secret(row)

    async def rotate_callback_secret(self, merchant_id: str, secret: str) -> CallbackSecret:
        row = await self.pool.fetchrow(
            """
            INSERT INTO callback_secrets (merchant_id, secret) VALUES ($1, $2)
            ON CONFLICT (merchant_id) DO UPDATE SET
                previous_secret = callback_secrets.secret, secret = EXCLUDED.secret,
                previous_secret_expires_at = now() + $3::interval, updated_at = now()
            RETURNING secret, previous_secret_expires_at, created_at
            """,
            merchant_id,
            secret,
            ROTATION_OVERLAP,
        )
        return _callback_secret(row)

    # -- deliveries --------------------------------------------------------------------------

    async def fan_out(self, event: PaymentEvent, traceparent: str, generated_secret: str) -> int:
        """One delivery of `event` per endpoint of its merchant that subscribed to it (FAILED
        at once for a disabled one, so re-enabling can recover it), and one to the payment's
        callback_url. An event seen before adds nothing. Returns how many were added.

        One statement (atomic without a transaction, one round trip: the consumer fans out
        one event at a time). Its deliveries' ids share one new ULID, numbered per target."""
        added = await self.pool.fetchval(
            """
            WITH secret AS (
                INSERT INTO callback_secrets (merchant_id, secret)
                SELECT $1, $9 WHERE $8 <> ''
                ON CONFLICT (merchant_id) DO NOTHING
            ),
            targets AS (
                SELECT webhook_id, NULL::text AS url, status = 'ENABLED' AS enabled
                FROM webhooks
                WHERE merchant_id = $1 AND (events @> ARRAY[$2] OR events @> ARRAY[$11])
                UNION ALL
                SELECT NULL, $8, true WHERE $8 <> ''
            ),
            added AS (
                INSERT INTO deliveries (
                    delivery_id, webhook_id, url, status, last_error, next_attempt_at,
                    merchant_id, event_id, event_type, payment_id, payload, event_at, traceparent)
                SELECT $3 || '_' || row_number() OVER (), t.webhook_id, t.url,
                    CASE WHEN t.enabled THEN 'PENDING' ELSE 'FAILED' END,
                    CASE WHEN t.enabled THEN '' ELSE $12 END,
                    CASE WHEN t.enabled THEN now() END,
                    $1, $4, $2, $5, $6, $7, $10
                FROM targets t
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM added
            """,
            event.merchant_id,
            event.event_type,
            new_id("DLV"),
            event.event_id,
            event.payment_id,
            event.body.decode(),
            event.occurred_at,
            event.callback_url,
            generated_secret,
            traceparent,
            ALL_EVENTS,
            ENDPOINT_DISABLED_ERROR,
        )
        return int(added)

    async def add_test_delivery(self, endpoint: Endpoint, payload: bytes, at: datetime) -> str:
        delivery_id = new_id("DLV")
        await self.pool.execute(
            """
            INSERT INTO deliveries (delivery_id, merchant_id, webhook_id, event_id, event_type,
                payload, event_at, next_attempt_at)
            VALUES ($1, $2, $3, $4, 'webhook.test', $5, $6, now())
            """,
            delivery_id,
            endpoint.merchant_id,
            endpoint.webhook_id,
            new_id("EVT"),
            payload.decode(),
            at,
        )
        return delivery_id

    async def claim_due(self, limit: int, lease: timedelta) -> list[Claimed]:
        """Up to `limit` due deliveries, leased to this worker for `lease`."""
        rows = await self.pool.fetch(
            """
            WITH due AS (
                SELECT delivery_id, webhook_id, merchant_id FROM deliveries
                WHERE status = 'PENDING' AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE deliveries d SET
                lease_id = gen_random_uuid(), next_attempt_at = now() + $2::interval
            FROM due
            LEFT JOIN webhooks w ON w.webhook_id = due.webhook_id
            LEFT JOIN callback_secrets c
                ON due.webhook_id IS NULL AND c.merchant_id = due.merchant_id
            WHERE d.delivery_id = due.delivery_id
            RETURNING d.delivery_id, d.lease_id, d.merchant_id, d.webhook_id,
                coalesce(w.url, d.url) AS url, d.event_type, d.payload, d.attempts, d.event_at,
                d.traceparent, coalesce(w.status = 'ENABLED', true) AS endpoint_enabled,
                coalesce(w.secret, c.secret) AS secret,
                CASE WHEN coalesce(w.previous_secret_expires_at, c.previous_secret_expires_at)
                    > now() THEN coalesce(w.previous_secret, c.previous_secret) END
                    AS previous_secret
            """,
            limit,
            lease,
        )
        return [
            Claimed(
                delivery_id=r["delivery_id"],
                lease_id=r["lease_id"],
                merchant_id=r["merchant_id"],
                webhook_id=r["webhook_id"],
                url=r["url"],
                event_type=r["event_type"],
                payload=r["payload"].encode(),
                attempts=r["attempts"],
                event_at=r["event_at"],
                traceparent=r["traceparent"],
                secrets=tuple(s for s in (r["secret"], r["previous_secret"]) if s),
                endpoint_enabled=r["endpoint_enabled"],
            )
            for r in rows
        ]

    async def record(
        self, outcomes: Sequence[Outcome], disable_after: timedelta
    ) -> list[DisabledEndpoint]:
        """Record a batch of attempts in one transaction; returns the endpoints this disabled
        (a 410 Gone, or failing without a success for `disable_after`)."""
        if not outcomes:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                """
                WITH updated AS (
                    UPDATE deliveries SET
                        status = $3,
                        attempts = attempts + CASE WHEN $10 THEN 1 ELSE 0 END,
                        last_response_code = CASE WHEN $10 THEN $4 ELSE last_response_code END,
                        last_error = $5,
                        next_attempt_at = $6,
                        delivered_at = CASE WHEN $3 = 'SUCCEEDED' THEN $8 ELSE delivered_at END,
                        dead_lettered_at = CASE WHEN $7 THEN now() ELSE dead_lettered_at END,
                        dead_letter_published_at = CASE WHEN $7 THEN NULL
                            ELSE dead_letter_published_at END,
                        lease_id = NULL,
                        updated_at = now()
                    WHERE delivery_id = $1 AND lease_id = $2
                    RETURNING delivery_id, attempts
                )
                INSERT INTO delivery_attempts (
                    delivery_id, attempt, attempted_at, response_code, error, latency_ms)
                SELECT delivery_id, attempts, $8, $4, $5, $9 FROM updated WHERE $10
                """,
                [
                    (
                        o.claimed.delivery_id,
                        o.claimed.lease_id,
                        o.status,
                        o.response_code,
                        o.error,
                        o.next_attempt_at,
                        o.dead_letter,
                        o.attempted_at,
                        o.latency_ms,
                        o.attempted,
                    )
                    for o in outcomes
                ],
            )
            attempted = [o for o in outcomes if o.attempted and o.claimed.webhook_id]
            failed = sorted({o.claimed.webhook_id or "" for o in attempted if o.error})
            succeeded = sorted({o.claimed.webhook_id or "" for o in attempted if not o.error})
            gone = sorted({o.claimed.webhook_id or "" for o in attempted if o.gone})
            if failed:
                await conn.execute(
                    "UPDATE webhooks SET failing_since = now() "
                    "WHERE webhook_id = ANY($1) AND failing_since IS NULL",
                    failed,
                )
            if succeeded:
                await conn.execute(
                    "UPDATE webhooks SET failing_since = NULL "
                    "WHERE webhook_id = ANY($1) AND failing_since IS NOT NULL",
                    succeeded,
                )
            disabled = await _disable(conn, gone, "gone", "the endpoint answered 410 Gone", None)
            disabled += await _disable(
                conn,
                failed,
                "failing",
                f"failing without a success for {_human(disable_after)}",
                disable_after,
            )
            return disabled

    async def list_deliveries(
        self, merchant_id: str, webhook_id: str, *, status: str | None, limit: int, after: str
    ) -> list[Delivery]:
        await self.get_endpoint(merchant_id, webhook_id)
        rows = await self.pool.fetch(
            f"""
            SELECT {_DELIVERY_COLUMNS} FROM deliveries
            WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2)
                AND ($3 = '' OR delivery_id < $3)
            ORDER BY delivery_id DESC LIMIT $4
            """,  # noqa: S608 - the column lists are constants
            webhook_id,
            status,
            after,
            limit,
        )
        attempts = await self.pool.fetch(
            """
            SELECT delivery_id, attempted_at, response_code, error, latency_ms
            FROM delivery_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt
            """,
            [r["delivery_id"] for r in rows],
        )
        history: dict[str, list[Attempt]] = {}
        for a in attempts:
            history.setdefault(a["delivery_id"], []).append(
                Attempt(a["attempted_at"], a["response_code"], a["error"], a["latency_ms"])
            )
        return [Delivery.of(r, history.get(r["delivery_id"], ())) for r in rows]

    async def get_delivery(self, merchant_id: str, webhook_id: str, delivery_id: str) -> Delivery:
        await self.get_endpoint(merchant_id, webhook_id)
        row = await self.pool.fetchrow(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "  # noqa: S608 - a constant
            "WHERE webhook_id = $1 AND delivery_id = $2",
            webhook_id,
            delivery_id,
        )
        if row is None:
            raise NotFoundError(delivery_id)
        attempts = await self.pool.fetch(
            "SELECT attempted_at, response_code, error, latency_ms FROM delivery_attempts "
            "WHERE delivery_id = $1 ORDER BY attempt",
            delivery_id,
        )
        return Delivery.of(row, [Attempt(*a) for a in attempts])

    async def replay(self, merchant_id: str, webhook_id: str, delivery_id: str) -> None:
        """Make the delivery due now, whatever its status; an attempt in flight loses its
        lease, so its result is not recorded over the replay's."""
        await self.get_endpoint(merchant_id, webhook_id)
        updated = await self.pool.fetchval(
            """
            UPDATE deliveries SET status = 'PENDING', next_attempt_at = now(), lease_id = NULL,
                dead_lettered_at = NULL, updated_at = now()
            WHERE webhook_id = $1 AND delivery_id = $2
            RETURNING 1
            """,
            webhook_id,
            delivery_id,
        )
        if updated is None:
            raise NotFoundError(delivery_id)

    async def queue_stats(self) -> tuple[int, float]:
        """Pending deliveries, and the age in seconds of the oldest."""
        row = await self.pool.fetchrow(
            """
            SELECT count(*) AS depth,
                coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
            FROM deliveries WHERE status = 'PENDING'
            """
        )
        return int(row["depth"]), float(row["oldest"])


async def _fail_pending(conn: asyncpg.Connection, webhook_id: str) -> None:
    await conn.execute(
        """
        UPDATE deliveries SET status = 'FAILED', last_error = $2, next_attempt_at = NULL,
            lease_id = NULL, updated_at = now()
        WHERE webhook_id = $1 AND status = 'PENDING'
        """,
        webhook_id,
        ENDPOINT_DISABLED_ERROR,
    )


async def _disable(
    conn: asyncpg.Connection,
    webhook_ids: list[str],
    cause: str,
    reason: str,
    failing_for: timedelta | None,
) -> list[DisabledEndpoint]:
    """Disable the ENABLED ones of `webhook_ids` (only those failing for at least
    `failing_for`, when given) and fail what was pending for them."""
    if not webhook_ids:
        return []
    rows = await conn.fetch(
        """
        UPDATE webhooks SET status = 'DISABLED', disabled_reason = $2, disabled_at = now(),
            updated_at = now()
        WHERE webhook_id = ANY($1) AND status = 'ENABLED'
            AND ($3::interval IS NULL OR failing_since <= now() - $3::interval)
        RETURNING webhook_id, merchant_id, url, disabled_at
        """,
        webhook_ids,
        reason,
        failing_for,
    )
    for row in rows:
        await _fail_pending(conn, row["webhook_id"])
    return [
        DisabledEndpoint(
            r["webhook_id"], r["merchant_id"], r["url"], reason, cause, r["disabled_at"]
        )
        for r in rows
    ]


def _callback_secret(row: asyncpg.Record) -> CallbackSecret:
    return CallbackSecret(row["secret"], row["previous_secret_expires_at"], row["created_at"])


def _human(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"
