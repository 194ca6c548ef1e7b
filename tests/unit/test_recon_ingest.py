"""Reconciliation against a real PostgreSQL: books from events, files ingested and matched."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool, migrate
from gateway_core.services import BY_NAME
from paygate.disputes.v1 import disputes_pb2
from paygate.events.v1 import events_pb2
from paygate.payments.v1 import payments_pb2
from reconciliation import events
from reconciliation.ingest import FileOrigin, ingest_file
from reconciliation.matching import Outcome, ist_date, overdue_on, settlement_deadline
from reconciliation.settlement_file import HEADER, MalformedFile

DAY = date(2026, 12, 5)
CAPTURED = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)  # 11:30 IST on the 5th
HEAD = ",".join(HEADER)
SLA_DAYS = 3


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("recon", "reconciliation")


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "reconciliation", "recon-tests")
    try:
        yield pool
    finally:
        await pool.close()


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def event(
    payment_id: str,
    *,
    provider: str,
    reference: str,
    amount: int,
    fees: int = 0,
    tax: int = 0,
    status: str = "SUCCESS",
    sequence: int = 3,
    refunds: list[payments_pb2.Refund] | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    payment = payments_pb2.Payment(
        payment_id=payment_id,
        merchant_id="MER_1",
        amount_paisa=amount,
        currency="INR",
        payment_method=payments_pb2.UPI,
        status=status,
        fees_paisa=fees,
        tax_paisa=tax,
        provider=provider,
        external_txn_id=reference,
        refunds=refunds or [],
    )
    if status in ("SUCCESS", "REFUNDED", "PARTIALLY_REFUNDED"):
        payment.captured_amount_paisa = amount
        payment.status_history.append(
            payments_pb2.StatusTransition(
                from_status=payments_pb2.Payment.PENDING,
                to_status=payments_pb2.Payment.SUCCESS,
                at=_ts(CAPTURED),
            )
        )
    return events_pb2.Event(
        event_id=event_id or f"EVT_{payment_id}_{sequence}",
        type="payment.success",
        payment_id=payment_id,
        payment=payment,
        sequence=sequence,
    )


def refund(refund_id: str, payment_id: str, reference: str, amount: int) -> payments_pb2.Refund:
    return payments_pb2.Refund(
        refund_id=refund_id,
        payment_id=payment_id,
        amount_paisa=amount,
        status=payments_pb2.Refund.PROCESSED,
        kind=payments_pb2.Refund.REFUND,
        external_refund_id=reference,
        processed_at=_ts(CAPTURED + timedelta(hours=1)),
    )


def csv_file(*rows: str) -> io.BytesIO:
    return io.BytesIO(("\n".join([HEAD, *rows]) + "\n").encode())


def row(
    reference: str, our_id: str, kind: str, amount: str, fee: str = "0.00", tax: str = "0.00"
) -> str:
    return (
        f"{reference},{our_id},{kind},{amount},{fee},{tax},INR,"
        "2026-12-05T23:59:59+05:30,setl_A,UTR123,UPI"
    )


async def outcomes(pool: asyncpg.Pool, run_id: str) -> dict[str, int]:
    found = await pool.fetchval(
        "SELECT outcomes FROM reconciliation_runs WHERE run_id = $1", run_id
    )
    return {name: entry["count"] for name, entry in found.items()}


async def test_events_apply_once_and_never_go_back_in_time(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        newer = event(
            "PAY_E1", provider="p_events", reference="R1", amount=500, status="REFUNDED", sequence=5
        )
        older = event(
            "PAY_E1", provider="p_events", reference="R1", amount=500, status="SUCCESS", sequence=3
        )
        assert await events.apply(conn, newer) is True
        assert await events.apply(conn, newer) is False  # the same event id again
        assert await events.apply(conn, older) is True  # a new id, but an older snapshot
        stored = await conn.fetchrow("SELECT * FROM book_payments WHERE payment_id = 'PAY_E1'")
    assert (stored["status"], stored["sequence"], stored["captured_paisa"]) == ("REFUNDED", 5, 500)
    assert stored["settlement_date"] == DAY


async def test_a_refund_event_of_the_same_sequence_updates_the_books(pool: asyncpg.Pool) -> None:
    # A refund does not change the payment's version: its events carry the same sequence.
    pending = refund("RFD_S1", "PAY_S1", "RFS1", 300)
    pending.status = payments_pb2.Refund.PENDING
    created = event("PAY_S1", provider="p_seq", reference="RS1", amount=500, refunds=[pending])
    processed = event(
        "PAY_S1",
        provider="p_seq",
        reference="RS1",
        amount=500,
        refunds=[refund("RFD_S1", "PAY_S1", "RFS1", 300)],
        event_id="EVT_S1_processed",
    )
    async with pool.acquire() as conn:
        assert await events.apply(conn, created) is True
        assert await events.apply(conn, processed) is True
        stored = await conn.fetchrow("SELECT * FROM book_refunds WHERE refund_id = 'RFD_S1'")
    assert (stored["status"], stored["settlement_date"]) == ("PROCESSED", DAY)


def test_a_wallet_is_due_when_it_debits_and_a_voided_hold_is_due_as_its_refund() -> None:
    held = event("PAY_W1", provider="paytm", reference="WTX1", amount=900, status="CANCELLED")
    held.payment.payment_method = payments_pb2.WALLET
    for to_status, hour in (("AUTHORIZED", 6), ("CANCELLING", 7), ("CANCELLED", 8)):
        held.payment.status_history.append(
            payments_pb2.StatusTransition(
                to_status=to_status,
                at=_ts(CAPTURED.replace(hour=hour)),
            )
        )
    payment, refunds = events.entries(held)
    assert (payment.captured_paisa, payment.captured_at) == (900, CAPTURED)
    (void,) = refunds
    assert (void.refund_id, void.amount_paisa, void.status, void.kind) == (
        "VOID_PAY_W1",
        900,
        "PROCESSED",
        "VOID",
    )
    assert void.processed_at == CAPTURED.replace(hour=8)
    # A card's authorization takes no money: nothing is due until the capture.
    held.payment.payment_method = payments_pb2.CARD
    payment, refunds = events.entries(held)
    assert (payment.captured_paisa, refunds) == (0, [])


async def test_a_day_is_matched_and_the_same_file_twice_changes_nothing(pool: asyncpg.Pool) -> None:
    provider = "p_day"
    async with pool.acquire() as conn:
        await events.apply(conn, event("PAY_D1", provider=provider, reference="RD1", amount=10_000))
        await events.apply(
            conn,
            event(
                "PAY_D2",
                provider=provider,
                reference="RD2",
                amount=50_000,
                fees=950,
                tax=171,
                status="PARTIALLY_REFUNDED",
                refunds=[refund("RFD_D2", "PAY_D2", "RFN_D2", 20_000)],
            ),
        )
    content = [
        row("RD1", "PAY_D1", "payment", "100.00"),
        row("RD2", "PAY_D2", "payment", "500.00", "9.50", "1.71"),
        row("RFN_D2", "RFD_D2", "refund", "200.00"),
    ]
    origin = FileOrigin(provider, DAY, "UPLOADED", "ops")
    first = await ingest_file(pool, csv_file(*content), origin, sla_days=SLA_DAYS)
    assert first.already_ingested is False
    assert await outcomes(pool, first.run_id) == {"MATCHED": 3}
    run = await pool.fetchrow("SELECT * FROM reconciliation_runs WHERE run_id = $1", first.run_id)
    assert (run["payments_paisa"], run["refunds_paisa"], run["fees_paisa"], run["tax_paisa"]) == (
        60_000,
        20_000,
        950,
        171,
    )
    assert run["net_paisa"] == 60_000 - 20_000 - 950 - 171
    assert run["exception_count"] == 0
    lines_before = await pool.fetchval("SELECT count(*) FROM settlement_lines")
    again = await ingest_file(pool, csv_file(*content), origin, sla_days=SLA_DAYS)
    assert (again.run_id, again.already_ingested) == (first.run_id, True)
    assert await pool.fetchval("SELECT count(*) FROM settlement_lines") == lines_before


async def test_each_discrepancy_is_one_outcome_and_one_exception(pool: asyncpg.Pool) -> None:
    provider = "p_bad"
    async with pool.acquire() as conn:
        for n, status in enumerate(["SUCCESS"] * 4 + ["FAILED"], start=1):
            await events.apply(
                conn,
                event(
                    f"PAY_B{n}",
                    provider=provider,
                    reference=f"RB{n}",
                    amount=10_000,
                    fees=190,
                    tax=34,
                    status=status,
                ),
            )
    result = await ingest_file(
        pool,
        csv_file(
            row("RB1", "PAY_B1", "payment", "99.00", "1.90", "0.34"),  # short
            row("RB2", "PAY_B2", "payment", "100.00", "2.90", "0.52"),  # fee
            row("RB3", "PAY_B3", "payment", "100.00", "1.90", "0.34"),
            row("RB3", "PAY_B3", "payment", "100.00", "1.90", "0.34"),  # twice
            row("XTR9", "pay_stranger", "payment", "100.00", "1.90", "0.34"),  # unknown
            row("RB5", "PAY_B5", "payment", "100.00", "1.90", "0.34"),  # we failed it
        ),
        FileOrigin(provider, DAY, "UPLOADED", "ops"),
        sla_days=0,
    )
    assert await outcomes(pool, result.run_id) == {
        "AMOUNT_MISMATCH": 1,
        "FEE_MISMATCH": 1,
        "MATCHED": 1,
        "DUPLICATE": 1,
        "MISSING_INTERNALLY": 1,
        "STATUS_MISMATCH": 1,
        "MISSING_IN_FILE": 1,  # PAY_B4: captured today, not in today's file, T+0
    }
    raised = await pool.fetch(
        "SELECT type, payment_id, line_number, expected, actual FROM reconciliation_exceptions"
        " WHERE run_id = $1 ORDER BY type",
        result.run_id,
    )
    assert [(r["type"], r["payment_id"], r["line_number"]) for r in raised] == [
        ("AMOUNT_MISMATCH", "PAY_B1", 2),
        ("DUPLICATE", "PAY_B3", 5),
        ("FEE_MISMATCH", "PAY_B2", 3),
        ("MISSING_INTERNALLY", None, 6),
        ("MISSING_IN_FILE", "PAY_B4", None),
        ("STATUS_MISMATCH", "PAY_B5", 7),
    ]


async def test_a_malformed_file_leaves_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await events.apply(
            conn, event("PAY_M1", provider="p_malformed", reference="RM1", amount=100)
        )
    counts = "SELECT (SELECT count(*) FROM settlement_files), (SELECT count(*) FROM settled_items)"
    before = tuple(await pool.fetchrow(counts))
    with pytest.raises(MalformedFile) as refused:
        await ingest_file(
            pool,
            csv_file(
                row("RM1", "PAY_M1", "payment", "1.00"), row("RM2", "PAY_M2", "payment", "1.0")
            ),
            FileOrigin("p_malformed", DAY, "UPLOADED", "ops"),
            sla_days=SLA_DAYS,
        )
    assert refused.value.line_number == 3
    assert tuple(await pool.fetchrow(counts)) == before


async def test_an_omitted_payment_is_expected_then_missing_then_matched_by_a_later_file(
    pool: asyncpg.Pool,
) -> None:
    provider = "p_late"
    async with pool.acquire() as conn:
        await events.apply(conn, event("PAY_L1", provider=provider, reference="RL1", amount=700))

    async def reconcile(day: date, *rows: str) -> str:
        origin = FileOrigin(provider, day, "UPLOADED", "ops")
        return (await ingest_file(pool, csv_file(*rows), origin, sla_days=SLA_DAYS)).run_id

    assert "EXPECTED" in await outcomes(pool, await reconcile(DAY))
    assert "EXPECTED" in await outcomes(pool, await reconcile(DAY + timedelta(days=2)))
    deadline_run = await reconcile(DAY + timedelta(days=3))
    assert await outcomes(pool, deadline_run) == {"MISSING_IN_FILE": 1}
    exception = await pool.fetchrow(
        "SELECT * FROM reconciliation_exceptions WHERE payment_id = 'PAY_L1'"
    )
    assert (exception["type"], exception["status"]) == ("MISSING_IN_FILE", "OPEN")
    late = await reconcile(DAY + timedelta(days=4), row("RL1", "PAY_L1", "payment", "7.00"))
    assert await outcomes(pool, late) == {"MATCHED": 1}
    exception = await pool.fetchrow(
        "SELECT * FROM reconciliation_exceptions WHERE payment_id = 'PAY_L1'"
    )
    assert (exception["status"], exception["resolved_by"]) == ("RESOLVED", "reconciliation")
    assert late in exception["resolution_note"]


GOOD = "RG1,PAY_G1,payment,1234.50,24.69,4.44,INR,2026-12-05T23:59:59+05:30,setl_1,UTR1,UPI"


async def refusal(pool: asyncpg.Pool, content: bytes) -> MalformedFile:
    with pytest.raises(MalformedFile) as refused:
        await ingest_file(
            pool, io.BytesIO(content), FileOrigin("p_format", DAY, "UPLOADED", "ops"), sla_days=3
        )
    return refused.value


@pytest.mark.parametrize(
    "amount",
    [
        "1234.5",
        "1234.500",
        "1234",
        "1e3",
        "",
        "NaN",
        "-5.00",
        "01.00",
        '"1,234.50"',
        "\u0661\u0662.\u0660\u0660",
    ],
)
async def test_an_amount_that_is_not_rupees_with_two_decimals_is_refused(
    pool: asyncpg.Pool, amount: str
) -> None:
    broken = GOOD.replace("1234.50", amount)
    refused = await refusal(pool, f"{HEAD}\n{GOOD}\n{broken}\n".encode())
    assert refused.line_number == 3
    assert refused.reason.startswith("amount must be rupees with exactly two decimals")


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (GOOD.replace(",INR,", ",USD,"), "currency must be INR"),
        (GOOD.replace("payment", "payout"), "type must be one of"),
        (GOOD.replace(",UPI", ",CASH"), "method must be one of"),
        (GOOD.replace("24.69", "-1.00"), "fee must be rupees"),
        (GOOD.replace("4.44", "x"), "tax must be rupees"),
        (GOOD.replace("+05:30", ""), "settled_at must be an ISO 8601 time with an offset"),
        (GOOD.replace("2026-12-05", "2026-13-45"), "settled_at must be"),
        (GOOD.replace("RG1", ""), "provider_reference must be"),
        (GOOD.replace("PAY_G1", ""), "merchant_reference must be"),
        (GOOD.replace("RG1", "R G1"), "provider_reference must be"),
        (GOOD + ",extra", "expected 11 comma-separated fields"),
        (GOOD.rsplit(",", 1)[0], "expected 11 comma-separated fields"),
        ("", "expected 11 comma-separated fields"),
        (GOOD.replace("setl_1", "setl_2"), "settlement_id and utr must be the same on every line"),
        (GOOD.replace("UTR1", "UTR2"), "settlement_id and utr must be the same on every line"),
    ],
)
async def test_a_line_breaking_a_rule_is_refused_with_its_number(
    pool: asyncpg.Pool, broken: str, reason: str
) -> None:
    refused = await refusal(pool, f"{HEAD}\n{GOOD}\n{GOOD}\n{broken}\n".encode())
    assert refused.line_number == 4
    assert reason in refused.reason
    assert str(refused).startswith("line 4: ")


async def test_an_unclosed_quote_is_refused(pool: asyncpg.Pool) -> None:
    # The quoted field swallows the lines after it: PostgreSQL's CSV reader names a line
    # between the opening quote and the end of the file.
    refused = await refusal(pool, f'{HEAD}\n{GOOD}\n"{GOOD}\n{GOOD}\n'.encode())
    assert refused.reason == "not valid CSV: a quoted field is not closed"
    assert 3 <= refused.line_number <= 5


async def test_bytes_that_are_not_utf8_are_refused_with_their_line(pool: asyncpg.Pool) -> None:
    refused = await refusal(pool, f"{HEAD}\n{GOOD}\n".encode() + GOOD.encode()[:-3] + b"\xff\n")
    assert (refused.line_number, refused.reason) == (3, "not valid UTF-8")


async def test_a_wrong_or_missing_header_is_line_one(pool: asyncpg.Pool) -> None:
    wrong = await refusal(pool, f"{GOOD}\n".encode())
    assert (wrong.line_number, "header" in wrong.reason) == (1, True)
    empty = await refusal(pool, b"")
    assert (empty.line_number, "header line is missing" in empty.reason) == (1, True)


async def test_a_header_only_file_is_a_day_without_settlements(pool: asyncpg.Pool) -> None:
    origin = FileOrigin("p_empty", DAY, "UPLOADED", "ops")
    result = await ingest_file(pool, io.BytesIO(f"\ufeff{HEAD}\r\n".encode()), origin, sla_days=3)
    run = await pool.fetchrow("SELECT * FROM reconciliation_runs WHERE run_id = $1", result.run_id)
    assert (run["line_count"], run["net_paisa"], run["exception_count"]) == (0, 0, 0)
    # The same empty file is another day's own file, not that day's run again.
    other = FileOrigin("p_empty", DAY + timedelta(days=1), "UPLOADED", "ops")
    again = await ingest_file(pool, io.BytesIO(f"\ufeff{HEAD}\r\n".encode()), other, sla_days=3)
    assert (again.already_ingested, again.run_id != result.run_id) == (False, True)


async def test_amounts_are_exact_paisa(pool: asyncpg.Pool) -> None:
    rows = [
        GOOD.replace("RG1", f"RX{n}").replace("PAY_G1", f"PAY_X{n}").replace("1234.50", amount)
        for n, amount in enumerate(["0.10", "0.20", "999999999999999.99"])
    ]
    adjustment = GOOD.replace("RG1,PAY_G1,payment,1234.50", "ADJ1,,adjustment,-0.05")
    origin = FileOrigin("p_exact", DAY, "UPLOADED", "ops")
    body = "\n".join([HEAD, *rows, adjustment]) + "\n"
    result = await ingest_file(pool, io.BytesIO(body.encode()), origin, sla_days=3)
    run = await pool.fetchrow("SELECT * FROM reconciliation_runs WHERE run_id = $1", result.run_id)
    assert run["payments_paisa"] == 10 + 20 + 99999999999999999
    assert run["adjustments_paisa"] == -5
    assert run["fees_paisa"] == 4 * 2469


def test_only_matched_and_expected_need_no_person() -> None:
    assert {o for o in Outcome if not o.raises_exception} == {Outcome.MATCHED, Outcome.EXPECTED}


def test_deadlines_count_ist_days() -> None:
    # 18:30 UTC is midnight in India: the next IST day.
    assert ist_date(datetime(2026, 12, 5, 18, 29, 59, tzinfo=UTC)) == date(2026, 12, 5)
    assert ist_date(datetime(2026, 12, 5, 18, 30, tzinfo=UTC)) == date(2026, 12, 6)
    assert settlement_deadline(date(2026, 12, 5), 3) == date(2026, 12, 8)
    # The file of the 8th is the last chance of items of the 5th (T+3), and of the 8th (T+0).
    assert overdue_on(date(2026, 12, 8), 3) == date(2026, 12, 5)
    assert overdue_on(date(2026, 12, 8), 0) == date(2026, 12, 8)


async def test_a_days_file_fetched_again_after_it_grew_restates_it_without_duplicates(
    pool: asyncpg.Pool,
) -> None:
    provider = "p_grown"
    async with pool.acquire() as conn:
        for n in (1, 2, 3):
            await events.apply(
                conn, event(f"PAY_G{n}", provider=provider, reference=f"RGR{n}", amount=1000)
            )
    first_lines = [
        row("RGR1", "PAY_G1", "payment", "9.00"),  # short: one exception
        row("RGR2", "PAY_G2", "payment", "10.00"),
    ]
    origin = FileOrigin(provider, DAY, "FETCHED", "ops")
    first = await ingest_file(pool, csv_file(*first_lines), origin, sla_days=SLA_DAYS)
    grown = await ingest_file(
        pool,
        csv_file(*first_lines, row("RGR3", "PAY_G3", "payment", "10.00")),
        origin,
        sla_days=SLA_DAYS,
    )
    assert grown.already_ingested is False
    assert await outcomes(pool, grown.run_id) == {"AMOUNT_MISMATCH": 1, "MATCHED": 2}
    raised = await pool.fetch(
        "SELECT run_id FROM reconciliation_exceptions WHERE payment_id = 'PAY_G1'"
    )
    assert [r["run_id"] for r in raised] == [first.run_id]
    # Another settlement (another day's file) listing a settled payment again is a DUPLICATE.
    other_day = FileOrigin(provider, DAY + timedelta(days=1), "FETCHED", "ops")
    other = await ingest_file(
        pool,
        csv_file(row("RGR2", "PAY_G2", "payment", "10.00").replace("setl_A", "setl_B")),
        other_day,
        sla_days=SLA_DAYS,
    )
    assert await outcomes(pool, other.run_id) == {"DUPLICATE": 1}


async def test_a_quoted_file_is_judged_whole_by_the_database(pool: asyncpg.Pool) -> None:
    # Quotes keep the screen from clearing lines (a quoted field may hold a line break): the
    # database's rules still find the broken line.
    quoted = GOOD.replace("RG1", '"RG1"')
    broken = GOOD.replace(",UPI", ",CASH")
    refused = await refusal(pool, f"{HEAD}\n{quoted}\n{GOOD}\n{broken}\n".encode())
    assert (refused.line_number, refused.reason.startswith("method must be one of")) == (4, True)


async def test_the_settled_items_of_older_releases_survive_the_move_into_the_lines(
    postgres_server: ScratchServer, tmp_path: Path
) -> None:
    # Migration 0005 replaced the settled_items table by a mark on the settling line: a
    # database migrated before it keeps which line settled which item.
    settings = await postgres_server.database("recon_upgrade")
    migrations = BY_NAME["reconciliation"].migrations_dir
    moved = next(migrations.glob("*_settled_by_lines.sql"))
    for path in sorted(migrations.glob("*.sql")):
        if path.name < moved.name:
            shutil.copy(path, tmp_path)
    await migrate(settings, "reconciliation", tmp_path)
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=settings.db_port,
        user=settings.db_username,
        password=settings.db_password,
        database=settings.db_database,
        server_settings={"search_path": "reconciliation"},
    )
    try:
        for line, outcome, payment in ((2, "MATCHED", "PAY_U1"), (3, "DUPLICATE", "PAY_U1")):
            await conn.execute(
                "INSERT INTO settlement_lines (settlement_file_id, line_number, type,"
                " provider_reference, merchant_reference, amount_paisa, fee_paisa, tax_paisa,"
                " settled_at, method, outcome, payment_id)"
                " VALUES ('SFL_U', $1, 'payment', 'RU1', $3, 100, 0, 0, now(), 'UPI', $2, $3)",
                line,
                outcome,
                payment,
            )
        await conn.execute("INSERT INTO settled_items VALUES ('PAY_U1', 'SFL_U', 2, 'setl_u')")
        shutil.copy(moved, tmp_path)
        await migrate(settings, "reconciliation", tmp_path)
        settled = await conn.fetch("SELECT * FROM settled_items")
        assert [(r["item_id"], r["settlement_file_id"], r["line_number"]) for r in settled] == [
            ("PAY_U1", "SFL_U", 2)
        ]
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("UPDATE settlement_lines SET settles = true WHERE line_number = 3")
    finally:
        await conn.close()


def dispute_event(
    payment: events_pb2.Event, case: str, amount: int, status: str, version: int
) -> events_pb2.Event:
    """A dispute.* event: the payment as it is, and the dispute."""
    dispute = disputes_pb2.Dispute(
        dispute_id=f"DSP_{case}",
        payment_id=payment.payment_id,
        merchant_id="MER_1",
        provider=payment.payment.provider,
        provider_reference=case,
        amount_paisa=amount,
        currency="INR",
        status=status,
        created_at=_ts(CAPTURED + timedelta(hours=2)),
    )
    return events_pb2.Event(
        event_id=f"EVT_{case}_{version}",
        type="dispute.created",
        payment_id=payment.payment_id,
        payment=payment.payment,
        sequence=payment.sequence,
        dispute=dispute,
    )


async def test_chargeback_lines_match_the_disputes_learned_from_events(pool: asyncpg.Pool) -> None:
    provider = "p_disputes"
    paid = event("PAY_D1", provider=provider, reference="RD1", amount=10_000)
    async with pool.acquire() as conn:
        await events.apply(conn, paid)
        await events.apply(conn, dispute_event(paid, "CB_1", 6_000, "UNDER_REVIEW", 2))
        # An older event arriving late does not take the dispute back.
        await events.apply(conn, dispute_event(paid, "CB_1", 6_000, "NEEDS_RESPONSE", 1))
        await events.apply(conn, dispute_event(paid, "CB_2", 4_000, "NEEDS_RESPONSE", 1))
        learned = await conn.fetchval(
            "SELECT status FROM book_disputes WHERE dispute_id = 'DSP_CB_1'"
        )
    assert learned == "UNDER_REVIEW"

    result = await ingest_file(
        pool,
        csv_file(
            row("RD1", "PAY_D1", "payment", "100.00"),
            row("CB_1", "PAY_D1", "chargeback", "60.00"),
            row("CB_2", "PAY_D1", "chargeback", "41.00"),  # the dispute is for 40.00
            row("CB_9", "PAY_D1", "chargeback", "10.00"),  # no such dispute
        ),
        FileOrigin(provider, DAY, "UPLOADED", "ops"),
        sla_days=0,
    )

    lines = await pool.fetch(
        "SELECT line_number, outcome, payment_id, expected, actual FROM settlement_lines"
        " WHERE settlement_file_id = (SELECT settlement_file_id FROM reconciliation_runs"
        " WHERE run_id = $1) ORDER BY line_number",
        result.run_id,
    )
    assert [(r["outcome"], r["payment_id"]) for r in lines] == [
        ("MATCHED", "PAY_D1"),
        ("MATCHED", "PAY_D1"),
        ("AMOUNT_MISMATCH", "PAY_D1"),
        ("MISSING_INTERNALLY", "PAY_D1"),
    ]
    assert (lines[2]["expected"], lines[2]["actual"]) == ("4000", "4100")
