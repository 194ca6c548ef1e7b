"""Payment attempts in a real PostgreSQL: a payment starts with one attempt at its provider,
a failover adds the next, and migration 0012 backfills the attempts of payments that failed
over before it (from gateway_response.failed_over_from)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import asyncpg

from devstack.postgres import ScratchServer
from gateway_core.db import create_pool, migrate
from gateway_core.ids import new_id
from gateway_core.services import BY_NAME
from orchestrator.connectors.card import CardDetails
from orchestrator.connectors.registry import DETAILS_TYPES
from orchestrator.processing import RepositoryBooks
from orchestrator.repository import NewPayment, Repository
from orchestrator.servicers.wire import encode_event, payment_message

MIGRATIONS = BY_NAME["orchestrator"].migrations_dir


async def test_a_failover_is_a_second_attempt_shown_on_the_wire(
    postgres_server: ScratchServer, new_payment: Callable[..., NewPayment]
) -> None:
    settings = await postgres_server.database("attempts", "orchestrator")
    pool = await create_pool(settings, "orchestrator", "attempts-tests")
    try:
        repo = Repository(pool, "payments.events", encode_event, DETAILS_TYPES)
        merchant = await repo.create_merchant(
            merchant_id=new_id("MER"), name="Shop", email="", vpa="shop@pg", category="5411"
        )
        created = await repo.create_payment(
            new_payment(
                merchant.merchant_id,
                payment_method="CARD",
                payment_details=CardDetails(card_token="tok_1"),
                provider="razorpay",
            )
        )
        assert [(a.provider, a.status) for a in created.attempts] == [("razorpay", "SERVING")]
        books = RepositoryBooks(repo)
        await books.pass_over(created.payment_id, "razorpay", "UNAVAILABLE")
        await books.pass_over(created.payment_id, "payu", "SKIPPED")
        await books.switch_provider(created.payment_id, "ccavenue")
        payment = await repo.get_payment(created.payment_id, None)
    finally:
        await pool.close()
    assert payment.provider == "ccavenue"
    wire = payment_message(payment)
    assert [(a.attempt_number, a.provider, a.status) for a in wire.attempts] == [
        (1, "razorpay", "UNAVAILABLE"),
        (2, "payu", "SKIPPED"),
        (3, "ccavenue", "SERVING"),
    ]


async def test_migration_0012_backfills_the_attempts_of_earlier_payments(
    postgres_server: ScratchServer, tmp_path: Path
) -> None:
    before = tmp_path / "before-0012"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("00*.sql")):
        if path.name < "0012":
            shutil.copy(path, before / path.name)
    settings = await postgres_server.database("pre_0012")
    await migrate(settings, "orchestrator", before)
    conn = await asyncpg.connect(settings.dsn, server_settings={"search_path": "orchestrator"})
    try:
        await conn.execute(
            "INSERT INTO merchants (merchant_id, name, vpa) VALUES ('M', 'M', 'm@pg')"
        )
        for payment_id, provider, response, failure in [
            ("P_UPI", "upi_core", "{}", ""),
            ("P_FAILOVER", "ccavenue", '{"failed_over_from": "razorpay,payu(circuit open)"}', ""),
            (
                "P_NONE",
                "ccavenue",
                '{"failed_over_from": "razorpay,payu,ccavenue"}',
                "gateways_unavailable",
            ),
        ]:
            await conn.execute(
                "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
                " payment_method, status, provider, gateway_response, failure_reason)"
                " VALUES ($1, 'M', 100, 'INR', 'CARD', 'CREATED', $2, $3::jsonb, $4)",
                payment_id,
                provider,
                response,
                failure,
            )
        await migrate(settings, "orchestrator", MIGRATIONS)
        rows = await conn.fetch(
            "SELECT payment_id, attempt_number, provider, status FROM payment_attempts"
            " ORDER BY payment_id, attempt_number"
        )
    finally:
        await conn.close()
    assert [tuple(r.values()) for r in rows] == [
        ("P_FAILOVER", 1, "razorpay", "UNAVAILABLE"),
        ("P_FAILOVER", 2, "payu", "SKIPPED"),
        ("P_FAILOVER", 3, "ccavenue", "SERVING"),
        ("P_NONE", 1, "razorpay", "UNAVAILABLE"),
        ("P_NONE", 2, "payu", "UNAVAILABLE"),
        ("P_NONE", 3, "ccavenue", "UNAVAILABLE"),
        ("P_UPI", 1, "upi_core", "SERVING"),
    ]
