"""A database that does not answer in time gives the caller a clear, retryable 503 within the
statement timeout (DB_COMMAND_TIMEOUT), not a hang until Envoy's route timeout or a 500; and the
service answers normally once the database does."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from devstack.stack import Stack
from gateway_core.config import Settings

COMMAND_TIMEOUT = Settings.model_construct().db_command_timeout


async def test_a_statement_stuck_behind_a_lock_answers_503_database_timeout(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    path = f"/api/v1/admin/merchants/{merchant['merchant_id']}"
    assert "DB_COMMAND_TIMEOUT" not in stack.env, "the test expects the default timeout"
    blocker = await asyncpg.connect(stack.dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        # Every read of the merchants table now waits for this transaction.
        await blocker.execute("LOCK TABLE orchestrator.merchants IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        reply = await api.get(path, headers=merchant["admin"], timeout=COMMAND_TIMEOUT + 20)
        elapsed = time.monotonic() - started
        await transaction.rollback()
    finally:
        await blocker.close()

    assert reply.status_code == 503, reply.text
    body = reply.json()
    assert body["code"] == 14  # UNAVAILABLE
    reasons = [d.get("reason") for d in body.get("details", [])]
    assert "DATABASE_TIMEOUT" in reasons, body
    assert "retry" in body["message"]
    assert COMMAND_TIMEOUT * 0.9 <= elapsed < COMMAND_TIMEOUT + 10, elapsed

    again = await api.get(path, headers=merchant["admin"])
    assert again.status_code == 200, again.text
    assert again.json()["merchant_id"] == merchant["merchant_id"]
