"""Email, persisted and retried: `queue_email` writes a row, `MailSender` sends it over SMTP.

A row is queued in the caller's transaction, unique on its `dedupe_key` (a receipt's event id),
so queuing the same email twice queues it once. Senders on every replica claim due rows with
`FOR UPDATE SKIP LOCKED` and take a lease on them (their `next_attempt_at` moves past the
send), so two replicas never send one row at the same time, and a sender that dies mid-send
leaves the row to be taken again when the lease ends. A failed attempt is retried on a backoff
schedule; a permanent refusal (an SMTP 5xx answer, such as an unknown mailbox) or a spent
schedule leaves the row FAILED, with the server's answer in `last_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib
import asyncpg
from prometheus_client import Counter

from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from webhook.settings import Settings

log = get_logger(__name__)

# Seconds from a failed attempt to the next: about a day in all, then FAILED.
RETRY_SCHEDULE: tuple[float, ...] = (10, 60, 300, 1800, 7200, 21600, 43200)
POLL_SECONDS = 1.0
BATCH = 20
# A claimed row is left alone this long: longer than one SMTP conversation can take.
LEASE_SECONDS = 120.0
SMTP_TIMEOUT_SECONDS = 30.0
_ERROR_LIMIT = 500

EMAILS = Counter(
    "webhook_emails_total",
    "Email send attempts by outcome: sent, retry (failed, will be tried again), failed (given up).",
    ["outcome"],
)

_CLAIM = """
UPDATE emails SET attempts = attempts + 1, next_attempt_at = now() + $2 * interval '1 second'
WHERE email_id IN (
    SELECT email_id FROM emails
    WHERE status = 'PENDING' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING email_id, recipient, subject, body_text, body_html, attempts
"""


async def queue_email(
    conn: asyncpg.Connection, *, dedupe_key: str, to: str, subject: str, text: str, html: str
) -> bool:
    """Queue one email (plain text and HTML) to `to`; False, changing nothing, when an email with
    this `dedupe_key` was queued before."""
    email_id = await conn.fetchval(
        "INSERT INTO emails (email_id, dedupe_key, recipient, subject, body_text, body_html)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING email_id",
        new_id("EML"),
        dedupe_key,
        to,
        subject,
        text,
        html,
    )
    return email_id is not None


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send: the SMTP_* settings."""

    host: str
    port: int
    username: str
    password: str
    sender: str
    # True: STARTTLS is required. False: used when the server offers it.
    starttls: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpServer:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
        )


@dataclass(frozen=True)
class _Claimed:
    email_id: str
    recipient: str
    subject: str
    text: str
    html: str
    attempts: int


class MailSender:
    """Sends due emails until cancelled (a ServiceApp background task on every replica)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        server: SmtpServer,
        *,
        schedule: tuple[float, ...] = RETRY_SCHEDULE,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._pool = pool
        self._server = server
        self._schedule = schedule
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due emails now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            sent_any = await self.send_due()
            if sent_any:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    async def send_due(self) -> bool:
        """One round: claim up to BATCH due emails and try each once; False if none was due."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_CLAIM, BATCH, LEASE_SECONDS)
        for row in rows:
            await self._attempt(
                _Claimed(
                    row["email_id"],
                    row["recipient"],
                    row["subject"],
                    row["body_text"],
                    row["body_html"],
                    row["attempts"],
                )
            )
        return bool(rows)

    async def _attempt(self, email: _Claimed) -> None:
        try:
            await aiosmtplib.send(
                self._message(email),
                hostname=self._server.host,
                port=self._server.port,
                username=self._server.username or None,
                password=self._server.password or None,
                start_tls=True if self._server.starttls else None,
                timeout=SMTP_TIMEOUT_SECONDS,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._failed(email, exc)
            return
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE emails SET status = 'SENT', sent_at = now(), last_error = ''"
                " WHERE email_id = $1",
                email.email_id,
            )
        EMAILS.labels("sent").inc()
        log.info("email sent", email_id=email.email_id, attempts=email.attempts)

    async def _failed(self, email: _Claimed, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT]
        retry_in = None if _permanent(exc) else self._delay(email.attempts)
        async with self._pool.acquire() as conn:
            if retry_in is None:
                await conn.execute(
                    "UPDATE emails SET status = 'FAILED', last_error = $2 WHERE email_id = $1",
                    email.email_id,
                    error,
                )
            else:
                await conn.execute(
                    "UPDATE emails SET last_error = $2, next_attempt_at = now() + $3"
                    " WHERE email_id = $1",
                    email.email_id,
                    error,
                    timedelta(seconds=retry_in),
                )
        outcome = "failed" if retry_in is None else "retry"
        EMAILS.labels(outcome).inc()
        log.warning(
            "email not sent",
            email_id=email.email_id,
            attempts=email.attempts,
            error=error,
            retry_in_seconds=retry_in,
        )

    def _delay(self, attempts: int) -> float | None:
        """Seconds until the next try after `attempts` failed ones (None: the schedule is spent),
        with up to 10 % jitter so that a recovered server is not hit by every retry at once."""
        if attempts > len(self._schedule):
            return None
        base = self._schedule[attempts - 1]
        return base * (1 + random.uniform(0, 0.1))  # noqa: S311 (jitter, not a secret)

    def _message(self, email: _Claimed) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._server.sender
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        # Stable across retries: a receiver can tell a resend (after a lost answer) from a new
        # email.
        message["Message-ID"] = f"<{email.email_id}@{_domain(self._server.sender)}>"
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        return message


def _permanent(exc: Exception) -> bool:
    """An SMTP 5xx answer about this message (not the server's login, which an operator fixes
    and which then sends it on retry)."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPNotSupported):
        return False
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in exc.recipients)
    code = getattr(exc, "code", 0)
    return isinstance(code, int) and 500 <= code < 600


def _domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    try:
        return Address(addr_spec=address).domain or "paygate.localhost"
    except (ValueError, IndexError):
        return "paygate.localhost"
