"""The payment state machine: one table, the same in code and in the database migration."""

from __future__ import annotations

import re

import pytest

from gateway_core.errors import FailedPrecondition
from gateway_core.services import BY_NAME
from orchestrator.domain.states import TRANSITIONS, Status, can_transition, ensure_transition


def migration_transitions() -> set[tuple[str, str]]:
    sql = (BY_NAME["orchestrator"].migrations_dir / "0001_init.sql").read_text()
    block = sql.split("INSERT INTO payment_transitions", 1)[1].split(";", 1)[0]
    return set(re.findall(r"\('([A-Z_]+)', '([A-Z_]+)'\)", block))


def test_database_table_equals_code_table() -> None:
    assert migration_transitions() == {(a.value, b.value) for a, b in TRANSITIONS}


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


def test_terminal_statuses_have_no_way_out_but_refunds() -> None:
    for terminal in (Status.FAILED, Status.EXPIRED, Status.CANCELLED, Status.REFUNDED):
        assert not [t for f, t in TRANSITIONS if f == terminal]
