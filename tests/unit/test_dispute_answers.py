"""The merchant's answer to a dispute reaches its provider even if the provider was down when
the merchant answered: the disputes job resends it, backing off, until it is acknowledged.
Real PostgreSQL; the provider's dispute desk (the outside world) is a stand-in that refuses
the first calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.errors import Unavailable
from gateway_core.fees import DEFAULT_PRICING
from gateway_core.ids import new_id
from orchestrator.connectors.registry import DETAILS_TYPES
from orchestrator.disputes import RENOTIFY_AFTER, Disputes
from orchestrator.providers.disputes import DisputeDeskClient
from orchestrator.repository import Repository
from orchestrator.servicers.wire import encode_event

PROVIDER = "razorpay"


class FlakyDesk:
    """A provider's dispute desk that is down for its first `down` calls."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.received: list[tuple[str, str]] = []

    async def submit_evidence(
        self, *, provider: str, case_reference: str, payment_id: str, summary: str, **_: str
    ) -> None:
        self._answer("evidence", case_reference)

    async def accept(self, *, provider: str, case_reference: str, payment_id: str) -> None:
        self._answer("accept", case_reference)

    def _answer(self, kind: str, case_reference: str) -> None:
        if self.down > 0:
            self.down -= 1
            raise Unavailable(f"{PROVIDER} is unavailable; retry shortly")
        self.received.append((kind, case_reference))


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("dispute_answers", "orchestrator")


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "orchestrator", "dispute-answer-tests")
    try:
        yield pool
    finally:
        await pool.close()


async def open_dispute(pool: asyncpg.Pool) -> tuple[str, str]:
    """A captured card payment and an unanswered dispute on it (as the callback leaves it)."""
    merchant_id, payment_id, dispute_id = new_id("MER"), new_id("PAY"), new_id("DSP")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO merchants (merchant_id, name, vpa) VALUES ($1, 'Shop', $2)",
            merchant_id,
            f"{merchant_id.lower()}@paygate",
        )
        await conn.execute(
            "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
            " payment_method, status, provider) VALUES ($1, $2, 5000, 'INR', 'CARD', 'CREATED',"
            " $3)",
            payment_id,
            merchant_id,
            PROVIDER,
        )
        await conn.execute(
            "INSERT INTO disputes (dispute_id, payment_id, merchant_id, provider,"
            " provider_reference, amount_paisa, currency, reason_code, status, respond_by,"
            " fee_paisa, tax_paisa) VALUES ($1, $2, $3, $4, $1, 5000, 'INR', '4853',"
            " 'NEEDS_RESPONSE', now() + interval '1 day', 0, 0)",
            dispute_id,
            payment_id,
            merchant_id,
            PROVIDER,
        )
    return merchant_id, dispute_id


def disputes_with(pool: asyncpg.Pool, desk: FlakyDesk) -> Disputes:
    return Disputes(
        Repository(pool, "payments.events", encode_event, DETAILS_TYPES),
        DEFAULT_PRICING,
        desk=lambda provider: desk,  # type: ignore[arg-type,return-value]
        callback_url=lambda provider: f"http://gateway.test/{provider}",
    )


async def due_now(pool: asyncpg.Pool, dispute_id: str) -> None:
    """Let the backoff pass (the clock is the database's)."""
    await pool.execute(
        "UPDATE disputes SET notify_after = now() - interval '1 second' WHERE dispute_id = $1",
        dispute_id,
    )


async def test_an_answer_the_provider_missed_is_resent_with_backoff_until_acknowledged(
    pool: asyncpg.Pool,
) -> None:
    desk = FlakyDesk(down=2)
    disputes = disputes_with(pool, desk)
    merchant_id, dispute_id = await open_dispute(pool)

    answered = await disputes.submit_evidence(dispute_id, merchant_id, {"summary": "proof"})

    assert answered.status == "UNDER_REVIEW"
    assert answered.provider_notified_at is None  # the provider was down
    assert answered.notify_after > datetime.now(UTC)  # not resent at once
    assert await disputes.renotify() == 0
    await due_now(pool, dispute_id)
    assert await disputes.renotify() == 0  # down again: pushed back, and the backoff grows
    first = await disputes.get(dispute_id, None)
    assert first.notify_attempts == 1
    assert first.notify_after - datetime.now(UTC) > RENOTIFY_AFTER * 2 - timedelta(seconds=1)
    await due_now(pool, dispute_id)
    assert await disputes.renotify() == 1

    assert desk.received == [("evidence", dispute_id)]
    assert (await disputes.get(dispute_id, None)).provider_notified_at is not None
    await due_now(pool, dispute_id)
    assert await disputes.renotify() == 0  # acknowledged: never sent again


async def test_an_acceptance_reaches_the_provider_at_once_when_it_is_up(pool: asyncpg.Pool) -> None:
    desk = FlakyDesk(down=0)
    disputes = disputes_with(pool, desk)
    merchant_id, dispute_id = await open_dispute(pool)

    accepted = await disputes.accept(dispute_id, merchant_id)

    assert accepted.status == "ACCEPTED"
    assert accepted.provider_notified_at is not None
    assert desk.received == [("accept", dispute_id)]


def test_the_stand_in_desk_has_the_clients_shape() -> None:
    for name in ("submit_evidence", "accept"):
        assert callable(getattr(DisputeDeskClient, name))
