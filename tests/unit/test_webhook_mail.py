"""The email outbox against a real PostgreSQL and a real SMTP server (aiosmtpd): queued once per
key, sent once, retried while the server is away, given up on a permanent refusal or when the
schedule is spent, and never sent twice by two senders at once."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.postgres import ScratchServer
from gateway_core.db import create_pool
from webhook.mail import MailSender, SmtpServer, queue_email

SENDER = "Receipts <receipts@shop.example>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Inbox:
    """An aiosmtpd handler keeping what it receives; refuses RCPTs at `refused` with 550."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refused: set[str] = set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def pool(postgres_server: ScratchServer) -> AsyncIterator[asyncpg.Pool]:
    settings = await postgres_server.database("webhook_mail", "webhook")
    created = await create_pool(settings, "webhook", "webhook-mail-tests")
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture(autouse=True)
async def no_emails(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM emails")


def sender(pool: asyncpg.Pool, port: int, schedule: tuple[float, ...] = (60.0,)) -> MailSender:
    server = SmtpServer("127.0.0.1", port, "", "", SENDER, starttls=False)
    return MailSender(pool, server, schedule=schedule)


async def queue(pool: asyncpg.Pool, key: str, to: str = "asha@example.com") -> bool:
    async with pool.acquire() as conn:
        return await queue_email(
            conn,
            dedupe_key=key,
            to=to,
            subject=f"Receipt {key}",
            text=f"text {key}",
            html=f"<p>html {key}</p>",
        )


async def row(pool: asyncpg.Pool, key: str) -> asyncpg.Record:
    found = await pool.fetchrow("SELECT * FROM emails WHERE dedupe_key = $1", key)
    assert found is not None
    return found


async def test_an_email_is_queued_once_per_key(pool: asyncpg.Pool) -> None:
    assert await queue(pool, "EVT_1") is True
    assert await queue(pool, "EVT_1", to="someone-else@example.com") is False

    assert await pool.fetchval("SELECT count(*) FROM emails") == 1
    assert (await row(pool, "EVT_1"))["recipient"] == "asha@example.com"


async def test_a_queued_email_is_sent_once_with_text_and_html(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    received, port = inbox
    await queue(pool, "EVT_2")

    assert await sender(pool, port).send_due() is True
    assert await sender(pool, port).send_due() is False

    [message] = received.messages
    assert message["To"] == "asha@example.com"
    assert message["From"] == SENDER
    assert message["Subject"] == "Receipt EVT_2"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "text EVT_2"
    assert html.get_content().strip() == "<p>html EVT_2</p>"
    sent = await row(pool, "EVT_2")
    assert (sent["status"], sent["attempts"]) == ("SENT", 1)
    assert message["Message-ID"] == f"<{sent['email_id']}@shop.example>"


async def test_an_unreachable_server_is_retried_on_the_schedule_then_the_email_goes(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    received, port = inbox
    await queue(pool, "EVT_3")

    assert await sender(pool, free_port(), schedule=(60.0,)).send_due() is True

    waiting = await row(pool, "EVT_3")
    assert (waiting["status"], waiting["attempts"]) == ("PENDING", 1)
    assert "SMTPConnect" in waiting["last_error"]
    delay = await pool.fetchval(
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM emails WHERE dedupe_key = 'EVT_3'"
    )
    assert 50 < delay <= 66  # 60 s with up to 10 % jitter
    assert await sender(pool, port).send_due() is False  # not due yet

    await pool.execute("UPDATE emails SET next_attempt_at = now()")
    assert await sender(pool, port).send_due() is True
    assert len(received.messages) == 1
    assert (await row(pool, "EVT_3"))["status"] == "SENT"


async def test_a_permanent_refusal_fails_at_once(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    received, port = inbox
    received.refused.add("gone@example.com")
    await queue(pool, "EVT_4", to="gone@example.com")

    await sender(pool, port).send_due()

    failed = await row(pool, "EVT_4")
    assert (failed["status"], failed["attempts"]) == ("FAILED", 1)
    assert "550" in failed["last_error"]
    assert received.messages == []


async def test_a_spent_schedule_fails_the_email(pool: asyncpg.Pool) -> None:
    await queue(pool, "EVT_5")
    down = free_port()

    await sender(pool, down, schedule=(60.0,)).send_due()
    await pool.execute("UPDATE emails SET next_attempt_at = now()")
    await sender(pool, down, schedule=(60.0,)).send_due()

    failed = await row(pool, "EVT_5")
    assert (failed["status"], failed["attempts"]) == ("FAILED", 2)


async def test_two_senders_at_once_send_each_email_once(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    received, port = inbox
    keys = [f"EVT_6_{n}" for n in range(30)]
    for key in keys:
        await queue(pool, key)

    while any(await asyncio.gather(sender(pool, port).send_due(), sender(pool, port).send_due())):
        pass

    assert sorted(m["Subject"] for m in received.messages) == sorted(f"Receipt {k}" for k in keys)
    assert await pool.fetchval("SELECT count(*) FROM emails WHERE status = 'SENT'") == len(keys)
