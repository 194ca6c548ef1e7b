"""Rows rendered from the code after every migration run (services/orchestrator/migrations/
derived.py): the state machine the transition trigger checks, and the price list. The code is
their one home: whatever the database held before, a migration run leaves it equal to the code,
and the trigger then refuses exactly what the code refuses."""

from __future__ import annotations

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.db import migrate
from gateway_core.fees import DEFAULT_PRICING
from gateway_core.services import BY_NAME
from orchestrator.domain.states import TRANSITIONS, Status

MIGRATIONS = BY_NAME["orchestrator"].migrations_dir


async def test_a_migration_run_makes_the_database_state_machine_the_codes(
    postgres_server: ScratchServer,
) -> None:
    settings = await postgres_server.database("derived_states", "orchestrator")
    conn = await asyncpg.connect(settings.dsn, server_settings={"search_path": "orchestrator"})
    try:
        # Drift: a move the code forbids, and a legal one lost.
        await conn.execute(
            "INSERT INTO payment_transitions VALUES ('FAILED', 'SUCCESS');"
            " DELETE FROM payment_transitions"
            " WHERE from_status = 'PENDING' AND to_status = 'SUCCESS'"
        )
        await migrate(settings, "orchestrator", MIGRATIONS)
        rows = await conn.fetch("SELECT from_status, to_status FROM payment_transitions")
        assert {(r["from_status"], r["to_status"]) for r in rows} == {
            (a.value, b.value) for a, b in TRANSITIONS
        }
        await conn.execute(
            "INSERT INTO merchants (merchant_id, name, vpa) VALUES ('M', 'M', 'm@pg')"
        )
        await conn.execute(
            "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
            " payment_method, status) VALUES ('P', 'M', 100, 'INR', 'UPI', 'CREATED')"
        )
        await conn.execute("UPDATE payments SET status = 'FAILED' WHERE payment_id = 'P'")
        assert (Status.FAILED, Status.SUCCESS) not in TRANSITIONS
        with pytest.raises(asyncpg.CheckViolationError, match="illegal payment transition"):
            await conn.execute("UPDATE payments SET status = 'SUCCESS' WHERE payment_id = 'P'")
    finally:
        await conn.close()


async def test_a_migration_run_makes_the_database_prices_the_codes(
    postgres_server: ScratchServer,
) -> None:
    settings = await postgres_server.database("derived_prices", "orchestrator")
    conn = await asyncpg.connect(settings.dsn, server_settings={"search_path": "orchestrator"})
    try:
        await conn.execute("UPDATE pricing SET rate_bps = 9999 WHERE method = 'CARD'")
        stamps = "SELECT method, updated_at FROM pricing"
        before = dict(await conn.fetch(stamps))
        await migrate(settings, "orchestrator", MIGRATIONS)
        rows = await conn.fetch(
            "SELECT method, rate_bps, fixed_paisa, gst_bps, dispute_fee_paisa FROM pricing"
        )
        after = dict(await conn.fetch(stamps))
    finally:
        await conn.close()
    assert {tuple(r.values()) for r in rows} == {
        (p.method, p.rate_bps, p.fixed_paisa, p.gst_bps, p.dispute_fee_paisa)
        for p in DEFAULT_PRICING.values()
    }
    # Only the price that disagreed was rewritten.
    assert {m for m in after if after[m] != before[m]} == {"CARD"}
