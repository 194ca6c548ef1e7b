"""The dispute state machine: one table, the same in code and in the migrated database, whose
trigger refuses any other move; and the merchant's evidence rules."""

from __future__ import annotations

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.db import migrate
from gateway_core.errors import FailedPrecondition, InvalidArgument
from gateway_core.fees import DEFAULT_PRICING, dispute_fee
from gateway_core.services import BY_NAME
from orchestrator.domain.disputes import (
    EVENT_FOR_STATUS,
    EVIDENCE_FIELDS,
    MAX_EVIDENCE_CHARS,
    RESOLVED,
    TRANSITIONS,
    DisputeStatus,
    can_transition,
    check_evidence,
    ensure_transition,
)
from orchestrator.domain.ledger import dispute_opened_entry, dispute_won_entry
from paygate.disputes.v1 import disputes_pb2

D = DisputeStatus


async def _connect(postgres_server: ScratchServer, name: str) -> asyncpg.Connection:
    settings = await postgres_server.database(name, "orchestrator")
    return await asyncpg.connect(settings.dsn, server_settings={"search_path": "orchestrator"})


async def test_a_migration_run_makes_the_database_dispute_machine_the_codes(
    postgres_server: ScratchServer,
) -> None:
    settings = await postgres_server.database("dispute_states", "orchestrator")
    conn = await asyncpg.connect(settings.dsn, server_settings={"search_path": "orchestrator"})
    try:
        # Drift: a move the code forbids; the next migration run (derived.py) repairs it.
        await conn.execute("INSERT INTO dispute_transitions VALUES ('WON', 'LOST')")
        await migrate(settings, "orchestrator", BY_NAME["orchestrator"].migrations_dir)
        rows = await conn.fetch("SELECT from_status, to_status FROM dispute_transitions")
        fees = await conn.fetch("SELECT method, dispute_fee_paisa FROM pricing")
    finally:
        await conn.close()
    assert {(r["from_status"], r["to_status"]) for r in rows} == {
        (a.value, b.value) for a, b in TRANSITIONS
    }
    assert {r["method"]: r["dispute_fee_paisa"] for r in fees} == {
        m: p.dispute_fee_paisa for m, p in DEFAULT_PRICING.items()
    }


async def test_the_database_refuses_an_illegal_dispute_move(postgres_server: ScratchServer) -> None:
    conn = await _connect(postgres_server, "dispute_trigger")
    try:
        await conn.execute(
            "INSERT INTO merchants (merchant_id, name, vpa) VALUES ('MER_D', 'D', 'd@pg')"
        )
        await conn.execute(
            "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
            " payment_method, status) VALUES ('PAY_D', 'MER_D', 1000, 'INR', 'CARD', 'CREATED')"
        )
        insert = (
            "INSERT INTO disputes (dispute_id, payment_id, merchant_id, provider,"
            " provider_reference, amount_paisa, currency, reason_code, status, respond_by,"
            " fee_paisa, tax_paisa) VALUES ($1, 'PAY_D', 'MER_D', 'razorpay', $1, 1000, 'INR',"
            " '4853', $2, now() + interval '1 day', 0, 0)"
        )
        with pytest.raises(asyncpg.CheckViolationError, match="must start in NEEDS_RESPONSE"):
            await conn.execute(insert, "DSP_WON", "WON")
        await conn.execute(insert, "DSP_1", "NEEDS_RESPONSE")
        await conn.execute(
            "UPDATE disputes SET status = 'ACCEPTED', resolved_at = now()"
            " WHERE dispute_id = 'DSP_1'"
        )
        with pytest.raises(asyncpg.CheckViolationError, match="illegal dispute transition"):
            await conn.execute("UPDATE disputes SET status = 'WON' WHERE dispute_id = 'DSP_1'")
    finally:
        await conn.close()


def test_every_status_is_on_the_wire_and_has_an_event() -> None:
    wire = set(disputes_pb2.Dispute.Status.keys()) - {"STATUS_UNSPECIFIED"}
    assert wire == {s.value for s in DisputeStatus}
    assert set(EVENT_FOR_STATUS) == set(DisputeStatus)
    assert set(EVENT_FOR_STATUS.values()) == {
        "dispute.created",
        "dispute.under_review",
        "dispute.won",
        "dispute.lost",
        "dispute.accepted",
    }


def test_the_lifecycle_of_the_issue() -> None:
    assert can_transition(D.NEEDS_RESPONSE, D.UNDER_REVIEW)
    assert can_transition(D.UNDER_REVIEW, D.WON)
    assert can_transition(D.UNDER_REVIEW, D.LOST)
    assert can_transition(D.NEEDS_RESPONSE, D.ACCEPTED)
    assert can_transition(D.NEEDS_RESPONSE, D.LOST)  # respond_by passed unanswered


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (D.NEEDS_RESPONSE, D.WON),  # nobody wins without evidence
        (D.UNDER_REVIEW, D.ACCEPTED),  # conceding after representment is not an option
        (D.UNDER_REVIEW, D.NEEDS_RESPONSE),
        (D.LOST, D.WON),
        (D.WON, D.LOST),
        (D.ACCEPTED, D.UNDER_REVIEW),
    ],
)
def test_illegal_moves_are_errors(current: DisputeStatus, target: DisputeStatus) -> None:
    with pytest.raises(FailedPrecondition) as info:
        ensure_transition(current, target)
    assert info.value.reason == "DISPUTE_ILLEGAL_TRANSITION"


def test_resolved_statuses_have_no_way_out() -> None:
    for final in RESOLVED:
        assert not [t for f, t in TRANSITIONS if f == final]


def test_evidence_needs_a_summary_and_names_each_bad_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_evidence(
            {"summary": " ", "shipping_proof": "x" * (MAX_EVIDENCE_CHARS + 1), "others": "ok"}
        )
    fields = {v.field: v.description for v in info.value.field_violations}
    assert set(fields) == {"evidence.summary", "evidence.shipping_proof"}
    assert "required" in fields["evidence.summary"]
    assert "at most 2000 characters" in fields["evidence.shipping_proof"]


def test_evidence_refuses_a_card_number() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_evidence({"summary": "card 4242 4242 4242 4242 was used"})
    assert info.value.reason == "CARD_DATA_IN_FREE_TEXT"
    assert "4242" not in info.value.message


def test_evidence_keeps_only_the_fields_given() -> None:
    evidence = check_evidence({"summary": "winning_evidence", "billing_proof": "invoice 7"})
    assert evidence.fields == {"summary": "winning_evidence", "billing_proof": "invoice 7"}
    assert set(evidence.fields) <= set(EVIDENCE_FIELDS)
    assert len(check_evidence({"summary": "s" * MAX_EVIDENCE_CHARS}).summary) == 2000


def test_dispute_journals_balance_and_the_fee_stays_charged() -> None:
    fee = dispute_fee(DEFAULT_PRICING["CARD"])
    assert (fee.fee_paisa, fee.tax_paisa) == (15_000, 2_700)
    opened = dispute_opened_entry(
        payment_id="PAY_1",
        dispute_id="DSP_1",
        merchant_id="MER_1",
        provider="razorpay",
        currency="INR",
        amount_paisa=50_000,
        fee=fee,
    )
    won = dispute_won_entry(
        payment_id="PAY_1",
        dispute_id="DSP_1",
        merchant_id="MER_1",
        provider="razorpay",
        currency="INR",
        amount_paisa=50_000,
    )
    payable = "merchant_payable:MER_1:INR"
    by_account = {p.account.account_id: p.amount_paisa for p in opened.postings}
    assert by_account[payable] == 50_000 + 17_700
    assert by_account["provider_clearing:razorpay:INR"] == -50_000
    back = {p.account.account_id: p.amount_paisa for p in won.postings}
    assert back[payable] == -50_000  # the amount comes back, the fee does not
    assert opened.journal_id != won.journal_id
