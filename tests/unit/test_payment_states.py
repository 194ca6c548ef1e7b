"""The payment state machine: one table, the same in code and in the migrated database."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.db import migrate
from gateway_core.errors import FailedPrecondition
from gateway_core.services import BY_NAME
from orchestrator.domain.states import (
    EVENT_FOR_STATUS,
    TERMINAL,
    TRANSITIONS,
    Status,
    can_transition,
    ensure_transition,
)
from paygate.payments.v1 import payments_pb2


def test_every_status_is_on_the_wire_and_has_an_event() -> None:
    wire = set(payments_pb2.Payment.Status.keys()) - {"STATUS_UNSPECIFIED"}
    assert wire == {s.value for s in Status}
    assert set(EVENT_FOR_STATUS) == set(Status)


def test_upi_intent_path_is_legal() -> None:
    assert can_transition(Status.CREATED, Status.PENDING)
    assert can_transition(Status.PENDING, Status.SUCCESS)
    assert can_transition(Status.PENDING, Status.EXPIRED)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.SUCCESS, Status.PENDING),
        (Status.FAILED, Status.SUCCESS),
        (Status.REFUNDED, Status.SUCCESS),
        (Status.EXPIRED, Status.PENDING),
        (Status.CANCELLED, Status.AUTHORIZED),
    ],
)
def test_illegal_transition_is_an_error_not_an_overwrite(current: Status, target: Status) -> None:
    with pytest.raises(FailedPrecondition) as info:
        ensure_transition(current, target)
    assert info.value.reason == "ILLEGAL_TRANSITION"


def test_terminal_statuses_have_no_way_out() -> None:
    for terminal in TERMINAL:
        assert not [t for f, t in TRANSITIONS if f == terminal]


@pytest.mark.parametrize("source", [Status.CREATED, Status.PENDING, Status.REQUIRES_ACTION])
def test_a_cancel_always_passes_through_cancelling(source: Status) -> None:
    """Nothing is cancelled without telling the provider first (issue 8, items 1 and 11)."""
    assert not can_transition(source, Status.CANCELLED)
    assert can_transition(source, Status.CANCELLING)


def test_a_held_authorization_moves_only_through_an_operation() -> None:
    assert {t for f, t in TRANSITIONS if f == Status.AUTHORIZED} == {
        Status.CAPTURING,
        Status.CANCELLING,
    }


async def test_authorizations_held_before_migration_0007_get_a_capture_deadline(
    postgres_server: ScratchServer, tmp_path: Path
) -> None:
    """0007 makes expiry void AUTHORIZED payments past expires_at; those authorized before it
    carry their creation-time deadline and must not all be voided on the first round."""
    migrations = BY_NAME["orchestrator"].migrations_dir
    before = tmp_path / "before-0007"
    before.mkdir()
    for path in sorted(migrations.glob("000[1-6]_*.sql")):
        shutil.copy(path, before / path.name)
    settings = await postgres_server.database("pre_0007")
    await migrate(settings, "orchestrator", before)
    conn = await asyncpg.connect(settings.dsn, server_settings={"search_path": "orchestrator"})
    try:
        await conn.execute(
            "INSERT INTO merchants (merchant_id, name, vpa) VALUES ('MER_OLD', 'Old', 'old@pg')"
        )
        await conn.execute(
            "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
            " payment_method, status, capture_method, expires_at)"
            " VALUES ('PAY_HELD', 'MER_OLD', 1000, 'INR', 'WALLET', 'CREATED', 'MANUAL',"
            " now() - interval '2 hours')"
        )
        await conn.execute(
            "UPDATE payments SET status = 'AUTHORIZED', processed_at = now() - interval '1 hour'"
            " WHERE payment_id = 'PAY_HELD'"
        )
        await migrate(settings, "orchestrator", migrations)
        left = await conn.fetchval(
            "SELECT expires_at - now() FROM payments WHERE payment_id = 'PAY_HELD'"
        )
    finally:
        await conn.close()
    assert timedelta(days=4, hours=22) < left < timedelta(days=5)
