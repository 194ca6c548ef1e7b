"""The web schema: checkout sessions and their outbox, dashboard sign-ins and browser sessions.

A session's status changes and its event are written in one transaction (outbox), and every
change is conditional on the session still being OPEN, so a completion and an expiry racing each
other produce exactly one outcome and one event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.errors import Conflict, FailedPrecondition, NotFound
from gateway_core.ids import new_id
from paygate.checkout.v1 import checkout_pb2
from paygate.events.v1 import events_pb2
from web.sessions import (
    EVENT_COMPLETED,
    EVENT_EXPIRED,
    Customer,
    NewSession,
    Session,
    Status,
    new_session_id,
)

NOTIFY_CHANNEL = "web_outbox"
_COLUMNS = (
    "checkout_session_id, merchant_id, status, amount_paisa, currency, description,"
    " customer_name, customer_email, customer_phone, methods, return_url, metadata, payment_id,"
    " expires_at, created_at, closed_at"
)


def session_from_row(row: asyncpg.Record) -> Session:
    return Session(
        checkout_session_id=row["checkout_session_id"],
        merchant_id=row["merchant_id"],
        status=Status(row["status"]),
        amount_paisa=row["amount_paisa"],
        currency=row["currency"],
        description=row["description"],
        customer=Customer(
            name=row["customer_name"], email=row["customer_email"], phone=row["customer_phone"]
        ),
        methods=tuple(row["methods"]),
        return_url=row["return_url"],
        metadata=dict(row["metadata"]),
        payment_id=row["payment_id"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        closed_at=row["closed_at"],
    )


def _timestamp(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def session_to_proto(session: Session, url: str) -> checkout_pb2.CheckoutSession:
    return checkout_pb2.CheckoutSession(
        checkout_session_id=session.checkout_session_id,
        merchant_id=session.merchant_id,
        status=session.status.value,
        amount_paisa=session.amount_paisa,
        currency=session.currency,
        description=session.description,
        customer=checkout_pb2.Customer(
            name=session.customer.name,
            email=session.customer.email,
            phone=session.customer.phone,
        ),
        methods=list(session.methods),
        return_url=session.return_url,
        metadata=session.metadata,
        url=url,
        payment_id=session.payment_id,
        expires_at=_timestamp(session.expires_at),
        created_at=_timestamp(session.created_at),
        closed_at=_timestamp(session.closed_at),
    )


@dataclass(frozen=True)
class Login:
    email: str
    merchant_id: str
    is_admin: bool
    password_hash: str
    updated_at: datetime


@dataclass(frozen=True)
class BrowserSession:
    """A signed-in dashboard browser."""

    email: str
    merchant_id: str
    is_admin: bool
    csrf_token: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Repository:
    def __init__(self, pool: asyncpg.Pool, page_url: Any) -> None:
        self._pool = pool
        # session id -> the page's URL, for the events' snapshots
        self._page_url = page_url

    # -- checkout sessions ----------------------------------------------------------------

    async def create(
        self, merchant_id: str, new: NewSession, idempotency_key: str | None
    ) -> Session:
        digest = new.digest()
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO checkout_sessions (checkout_session_id, merchant_id, amount_paisa,
                currency, description, customer_name, customer_email, customer_phone, methods,
                return_url, metadata, idempotency_key, request_digest, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now() + $14)
            ON CONFLICT (merchant_id, idempotency_key) WHERE idempotency_key IS NOT NULL
            DO NOTHING
            RETURNING {_COLUMNS}
            """,  # noqa: S608 - only _COLUMNS is interpolated
            new_session_id(),
            merchant_id,
            new.amount_paisa,
            new.currency,
            new.description,
            new.customer.name,
            new.customer.email,
            new.customer.phone,
            list(new.methods),
            new.return_url,
            new.metadata,
            idempotency_key,
            digest,
            new.expires_in,
        )
        if row is not None:
            return session_from_row(row)
        first = await self._pool.fetchrow(
            f"SELECT {_COLUMNS}, request_digest FROM checkout_sessions"  # noqa: S608 - _COLUMNS
            " WHERE merchant_id = $1 AND idempotency_key = $2",
            merchant_id,
            idempotency_key,
        )
        if first is None:  # pragma: no cover - the conflicting row cannot vanish
            raise Conflict("retry the request", reason="IDEMPOTENCY_IN_PROGRESS")
        if first["request_digest"] != digest:
            raise Conflict(
                "this Idempotency-Key was used for a different checkout session request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return session_from_row(first)

    async def get(self, checkout_session_id: str, merchant_id: str | None = None) -> Session:
        """The session (of `merchant_id`, when given); NotFound otherwise."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM checkout_sessions WHERE checkout_session_id = $1"  # noqa: S608 - only _COLUMNS is interpolated
            " AND ($2::text IS NULL OR merchant_id = $2)",
            checkout_session_id,
            merchant_id,
        )
        if row is None:
            raise NotFound(
                f"checkout session {checkout_session_id} not found", reason="SESSION_NOT_FOUND"
            )
        return session_from_row(row)

    async def attach_payment(self, checkout_session_id: str, payment_id: str) -> None:
        """Records the latest payment attempt of an OPEN session."""
        await self._pool.execute(
            "UPDATE checkout_sessions SET payment_id = $2"
            " WHERE checkout_session_id = $1 AND status = 'OPEN'",
            checkout_session_id,
            payment_id,
        )

    async def complete(self, checkout_session_id: str, payment_id: str) -> Session | None:
        """OPEN -> COMPLETE with its event; None if it was not OPEN (already closed)."""
        return await self._close(checkout_session_id, Status.COMPLETE, payment_id)

    async def expire(self, checkout_session_id: str, merchant_id: str | None = None) -> Session:
        """OPEN -> EXPIRED with its event. An EXPIRED one is answered as it is; a COMPLETE one
        is FailedPrecondition."""
        current = await self.get(checkout_session_id, merchant_id)
        closed = await self._close(checkout_session_id, Status.EXPIRED, None)
        if closed is not None:
            return closed
        current = await self.get(checkout_session_id, merchant_id)
        if current.status is Status.COMPLETE:
            raise FailedPrecondition(
                "the checkout session is already COMPLETE (it was paid)",
                reason="SESSION_ALREADY_COMPLETE",
            )
        return current

    async def expire_due(self, limit: int = 100) -> list[Session]:
        """OPEN sessions past their expires_at -> EXPIRED, each with its event, in one
        transaction. SKIP LOCKED passes over the sessions another replica is expiring or a
        payment is completing, so replicas share the work and none waits on (or fails over) a
        session closed under it."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""
                UPDATE checkout_sessions SET status = 'EXPIRED', closed_at = now()
                FROM (
                    SELECT checkout_session_id AS due_id FROM checkout_sessions
                    WHERE status = 'OPEN' AND expires_at <= now()
                    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
                ) due
                WHERE checkout_session_id = due.due_id
                RETURNING {_COLUMNS}
                """,  # noqa: S608 - only _COLUMNS is interpolated
                limit,
            )
            sessions = [session_from_row(row) for row in rows]
            for session in sessions:
                await self._announce(conn, EVENT_EXPIRED, session)
        return sessions

    async def _close(
        self, checkout_session_id: str, status: Status, payment_id: str | None
    ) -> Session | None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                UPDATE checkout_sessions
                SET status = $2, closed_at = now(), payment_id = coalesce($3, payment_id)
                WHERE checkout_session_id = $1 AND status = 'OPEN'
                RETURNING {_COLUMNS}
                """,  # noqa: S608 - only _COLUMNS is interpolated
                checkout_session_id,
                status.value,
                payment_id,
            )
            if row is None:
                return None
            session = session_from_row(row)
            event_type = EVENT_COMPLETED if status is Status.COMPLETE else EVENT_EXPIRED
            await self._announce(conn, event_type, session)
        return session

    async def _announce(self, conn: asyncpg.Connection, event_type: str, session: Session) -> None:
        """The session's event, in the caller's transaction (the outbox relay publishes it)."""
        await conn.execute(
            "INSERT INTO outbox (event_key, payload) VALUES ($1, $2)",
            session.checkout_session_id,
            self._event(event_type, session),
        )
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")

    def _event(self, event_type: str, session: Session) -> bytes:
        occurred = _timestamp(session.closed_at or datetime.now(UTC))
        event = events_pb2.Event(
            event_id=new_id("EVT"),
            type=event_type,
            occurred_at=occurred,
            merchant_id=session.merchant_id,
            payment_id=session.payment_id,
            checkout_session=session_to_proto(session, self._page_url(session.checkout_session_id)),
            sequence=1,
        )
        return json_format.MessageToJson(
            event, preserving_proto_field_name=True, indent=None
        ).encode()

    # -- dashboard sign-ins ---------------------------------------------------------------

    async def set_login(
        self, email: str, merchant_id: str, is_admin: bool, password_hash: str
    ) -> Login:
        row = await self._pool.fetchrow(
            """
            INSERT INTO dashboard_logins (email, merchant_id, is_admin, password_hash)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (email) DO UPDATE SET merchant_id = EXCLUDED.merchant_id,
                is_admin = EXCLUDED.is_admin, password_hash = EXCLUDED.password_hash,
                updated_at = now()
            RETURNING email, merchant_id, is_admin, password_hash, updated_at
            """,
            email,
            merchant_id,
            is_admin,
            password_hash,
        )
        return Login(**dict(row))

    async def find_login(self, email: str) -> Login | None:
        row = await self._pool.fetchrow(
            "SELECT email, merchant_id, is_admin, password_hash, updated_at"
            " FROM dashboard_logins WHERE email = $1",
            email,
        )
        return Login(**dict(row)) if row else None

    async def update_hash(self, email: str, password_hash: str) -> None:
        await self._pool.execute(
            "UPDATE dashboard_logins SET password_hash = $2 WHERE email = $1",
            email,
            password_hash,
        )

    async def open_browser_session(
        self, token: str, email: str, csrf_token: str, ttl_seconds: float
    ) -> None:
        await self._pool.execute(
            "INSERT INTO dashboard_sessions (token_digest, email, csrf_token, expires_at)"
            " VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            token_digest(token),
            email,
            csrf_token,
            ttl_seconds,
        )

    async def browser_session(self, token: str) -> BrowserSession | None:
        row = await self._pool.fetchrow(
            """
            SELECT l.email, l.merchant_id, l.is_admin, s.csrf_token
            FROM dashboard_sessions s JOIN dashboard_logins l USING (email)
            WHERE s.token_digest = $1 AND s.expires_at > now()
            """,
            token_digest(token),
        )
        if row is None:
            return None
        return BrowserSession(
            email=row["email"],
            merchant_id=row["merchant_id"],
            is_admin=row["is_admin"],
            csrf_token=row["csrf_token"],
        )

    async def close_browser_session(self, token: str) -> None:
        await self._pool.execute(
            "DELETE FROM dashboard_sessions WHERE token_digest = $1 OR expires_at < now()",
            token_digest(token),
        )
