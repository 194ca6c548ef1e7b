"""Reconciliation end to end: payments made through Envoy, learned from payments.events, matched
against the sandbox providers' settlement files fetched with their report keys, exceptions for
people, the settlement report as JSON and CSV, and the money moved in the orchestrator's ledger.

Every call goes through Envoy as an admin would make it. The stack is shared with the other
modules of the session, so today's files also hold their payments: assertions about outcomes
name this module's payments, and "no false exception" is checked over whole runs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from devstack.stack import Stack
from gateway_core.service_auth import ServiceIdentity, service_channel
from paygate.ledger.v1 import settlement_pb2, settlement_pb2_grpc

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

FUTURE_YEAR = str(datetime.now().year + 3)
METHODS = ("UPI", "CARD", "WALLET", "NET_BANKING")


def today() -> date:
    return datetime.now(ZoneInfo("Asia/Kolkata")).date()


def upi(amount: int, instruction: str = "", vpa: str = "success@upi") -> dict[str, Any]:
    notes = {"sandbox_settlement": instruction} if instruction else {}
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
        "metadata": {"order_id": "recon", **notes},
    }


def card(amount: int) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": "4242424242424242",
                "expiry_month": "12",
                "expiry_year": FUTURE_YEAR,
                "cvv": "123",
            }
        },
    }


def wallet(amount: int) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": "9999999999"},
    }


class Recon:
    """The reconciliation admin API through Envoy, and what the service has learned."""

    def __init__(self, api: httpx.AsyncClient, admin: dict[str, str], stack: Stack) -> None:
        self.api = api
        self.admin = admin
        self.stack = stack

    async def run(self, provider: str, day: date) -> list[dict[str, Any]]:
        reply = await self.api.post(
            "/api/v1/admin/reconciliation/runs",
            json={"provider": provider, "date": day.isoformat()},
            headers=self.admin,
        )
        assert reply.status_code == 200, reply.text
        runs: list[dict[str, Any]] = reply.json()["runs"]
        return runs

    async def run_one(self, provider: str, day: date) -> dict[str, Any]:
        (run,) = await self.run(provider, day)
        return run

    async def upload(self, provider: str, day: date, content: str) -> httpx.Response:
        return await self.api.post(
            "/api/v1/admin/settlements/files",
            params={"provider": provider, "date": day.isoformat()},
            content=content.encode(),
            headers={**self.admin, "Content-Type": "text/csv"},
        )

    async def exceptions(self, **filters: str) -> list[dict[str, Any]]:
        reply = await self.api.get(
            "/api/v1/admin/reconciliation/exceptions",
            params={"page_size": "500", **filters},
            headers=self.admin,
        )
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json()["exceptions"]
        return found

    async def report(self, day: date, provider: str) -> dict[str, Any]:
        reply = await self.api.get(
            "/api/v1/admin/settlements",
            params={"date": day.isoformat(), "provider": provider},
            headers=self.admin,
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        report: dict[str, Any] = reply.json()
        return report

    async def lines(self, run: dict[str, Any]) -> dict[int, asyncpg.Record]:
        """The run's file's lines with their outcomes (read from the service's own tables)."""
        conn = await asyncpg.connect(
            self.stack.dsn, server_settings={"search_path": "reconciliation"}
        )
        try:
            rows = await conn.fetch(
                "SELECT * FROM settlement_lines WHERE settlement_file_id = $1",
                run["settlement_file_id"],
            )
        finally:
            await conn.close()
        return {row["line_number"]: row for row in rows}

    async def learned(self, *payments: dict[str, Any], within: float = 30) -> None:
        """Wait until reconciliation's books hold these payments as they are now (it learns
        them from payments.events, a moment after the change)."""
        want = {
            p["payment_id"]: (
                p["status"],
                sorted((r["refund_id"], r["status"]) for r in p.get("refunds", [])),
            )
            for p in payments
        }
        conn = await asyncpg.connect(
            self.stack.dsn, server_settings={"search_path": "reconciliation"}
        )
        try:
            deadline = time.monotonic() + within
            while True:
                rows = await conn.fetch(
                    "SELECT payment_id, status FROM book_payments WHERE payment_id = ANY($1)",
                    list(want),
                )
                refunds = await conn.fetch(
                    "SELECT payment_id, refund_id, status FROM book_refunds"
                    " WHERE payment_id = ANY($1)",
                    list(want),
                )
                have = {
                    row["payment_id"]: (
                        row["status"],
                        sorted(
                            (r["refund_id"], r["status"])
                            for r in refunds
                            if r["payment_id"] == row["payment_id"]
                        ),
                    )
                    for row in rows
                }
                if have == want:
                    return
                assert time.monotonic() < deadline, f"reconciliation knows {have}, not {want}"
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    async def posted(self, run: dict[str, Any], items: set[str], within: float = 30) -> None:
        """Wait until the ledger holds every MATCHED line of the run's file that settles one of
        `items` (payment and refund ids): each has its journal."""
        deadline = time.monotonic() + within
        while True:
            waiting = [
                line
                for line in (await self.lines(run)).values()
                if line["outcome"] == "MATCHED"
                and (line["refund_id"] or line["payment_id"]) in items
                and line["journal_id"] is None
            ]
            if not waiting:
                return
            assert all(line["post_error"] is None for line in waiting), waiting
            assert time.monotonic() < deadline, f"{len(waiting)} line(s) not posted"
            await asyncio.sleep(0.2)


def outcome_counts(run: dict[str, Any]) -> dict[str, int]:
    return {entry["outcome"]: int(entry["count"]) for entry in run["outcomes"]}


@pytest.fixture
def recon(api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack) -> Recon:
    return Recon(api, merchant["admin"], stack)


@pytest.fixture
async def ledger(
    stack: Stack,
) -> AsyncIterator[settlement_pb2_grpc.SettlementLedgerServiceAsyncStub]:
    """The orchestrator's settlement ledger, with reconciliation's identity (tests read it)."""
    identity = ServiceIdentity(
        "reconciliation", stack.env["RECONCILIATION_SERVICE_KEY"], audience="orchestrator"
    )
    channel = service_channel(stack.env["ORCHESTRATOR_ADDR"], identity)
    try:
        yield settlement_pb2_grpc.SettlementLedgerServiceStub(channel)
    finally:
        await channel.close(None)


async def genuine_discrepancies(stack: Stack, lines: list[asyncpg.Record]) -> list[Any]:
    """Those of `lines` that are real differences between a provider and the gateway, which other
    modules of the session leave in today's files: a provider's fee on a payment the gateway
    reversed (money that arrived after the payment was closed and was sent back; the gateway
    books that capture without a fee, the provider still charges one)."""
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        reversed_ = {
            row["payment_id"]
            for row in await conn.fetch(
                "SELECT payment_id FROM refunds WHERE kind = 'REVERSAL' AND payment_id = ANY($1)",
                [line["payment_id"] for line in lines if line["payment_id"]],
            )
        }
    finally:
        await conn.close()
    return [
        line
        for line in lines
        if line["outcome"] == "FEE_MISMATCH"
        and line["payment_id"] in reversed_
        and line["expected"] == "0/0"
    ]


async def pay_by_bank(payments: Any, amount: int) -> dict[str, Any]:
    made: dict[str, Any] = await payments.create(
        {
            "amount_paisa": amount,
            "currency": "INR",
            "payment_method": "NET_BANKING",
            "payment_details": {"bank_code": "HDFC"},
            "callback_url": "https://merchant.example/return",
        }
    )
    async with httpx.AsyncClient(timeout=10) as browser:
        paid = await browser.post(made["next_action"]["redirect_url"], data={"action": "approve"})
        assert paid.status_code == 303
    return made


async def refund(payments: Any, payment_id: str, amount: int) -> None:
    reply = await payments.act(payment_id, "refund", {"amount_paisa": amount})
    assert reply.status_code == 200, reply.text


async def test_a_day_of_every_method_reconciles_with_every_line_matched(
    payments: Any, recon: Recon, ledger: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub
) -> None:
    made = [
        await payments.create(upi(10_000)),
        await payments.create(upi(23_456)),
        await payments.create(card(250_000)),
        await payments.create(wallet(50_000)),
        await pay_by_bank(payments, 25_000),
    ]
    for payment in made:
        await payments.wait_for(payment["payment_id"], "SUCCESS")
    await refund(payments, made[2]["payment_id"], 100_000)  # card, partly
    await refund(payments, made[3]["payment_id"], 50_000)  # wallet, in full
    settled = [await payments.get(p["payment_id"]) for p in made]
    await recon.learned(*settled)
    day = today()

    runs = [run for method in METHODS for run in await recon.run(method, day)]

    ours = {p["payment_id"] for p in settled} | {
        r["refund_id"] for p in settled for r in p["refunds"]
    }
    unsettled = set(ours)
    by_provider = {run["provider"]: run for run in runs}
    assert {p["provider"] for p in settled} <= set(by_provider)
    provider_fees_unbooked: dict[str, int] = {}
    for run in runs:
        # Every line of every file, ours or another module's, agrees with our books, except
        # what is truly different: see `genuine_discrepancies`.
        lines = await recon.lines(run)
        unmatched = [line for line in lines.values() if line["outcome"] != "MATCHED"]
        assert unmatched == await genuine_discrepancies(recon.stack, unmatched)
        assert int(run["exception_count"]) == len(unmatched)
        provider_fees_unbooked[run["provider"]] = sum(
            line["fee_paisa"] + line["tax_paisa"] for line in unmatched
        )
        # A provider with nothing settled today sends a header-only file: no settlement.
        assert bool(run["utr"] and run["settlement_id"]) == (int(run["line_count"]) > 0)
        # Chargebacks: the disputes module's, settled in today's card files.
        assert int(run["net_paisa"]) == (
            int(run["payments_paisa"])
            - int(run["refunds_paisa"])
            - int(run["chargebacks_paisa"])
            + int(run["adjustments_paisa"])
            - int(run["fees_paisa"])
            - int(run["tax_paisa"])
        )
        assert len(lines) == int(run["line_count"])
        for line in lines.values():
            if line["outcome"] == "MATCHED":
                unsettled.discard(line["refund_id"] or line["payment_id"])
    assert unsettled == set()  # each payment and refund of ours was settled by a MATCHED line

    # The report's per-provider figures are the sums of the payments that settle that day.
    for payment in settled:
        provider = payment["provider"]
        report = await recon.report(day, provider)
        (entry,) = report["providers"]
        assert entry["provider"] == provider
        assert entry["utr"] == by_provider[provider]["utr"]
        unbooked = provider_fees_unbooked[provider]
        assert int(entry["difference_paisa"]) == -unbooked
        assert int(entry["net_settled_paisa"]) == int(entry["expected_net_paisa"]) - unbooked
        assert int(entry["gross_paisa"]) == int(entry["expected_gross_paisa"])
        assert int(entry["refunds_paisa"]) == int(entry["expected_refunds_paisa"])
        assert int(entry["fees_paisa"]) + int(entry["tax_paisa"]) == (
            int(entry["expected_fees_paisa"]) + int(entry["expected_tax_paisa"]) + unbooked
        )
        assert {o["outcome"] for o in entry["outcomes"]} <= {"MATCHED", "FEE_MISMATCH"}
        assert int(entry["gross_paisa"]) >= payment["amount_paisa"]
    wallet_day = await recon.report(day, "WALLET")
    paytm = next(e for e in wallet_day["providers"] if e["provider"] == "paytm")
    assert int(paytm["refunds_paisa"]) >= 50_000
    assert int(paytm["fees_paisa"]) >= settled[3]["fees_paisa"]

    # The ledger moved each matched line from the provider's receivable to the bank, and for
    # every provider receivable = captured - refunded - adjusted - settled.
    for run in runs:
        await recon.posted(run, ours)
    reply = await ledger.GetProviderBalances(settlement_pb2.GetProviderBalancesRequest())
    balances = {b.provider: b for b in reply.balances}
    for balance in balances.values():
        # `adjusted`: what the acquirer keeps of a no-cost EMI payment (tests/e2e/test_emi_plans).
        assert balance.receivable_paisa == (
            balance.captured_paisa
            - balance.refunded_paisa
            - balance.adjusted_paisa
            - balance.settled_paisa
        ), balance
    # What this test's own lines settled is among what the ledger holds as settled.
    ours_settled: dict[str, int] = {}
    for payment in settled:
        refunded = sum(r["amount_paisa"] for r in payment["refunds"])
        provider = payment["provider"]
        ours_settled[provider] = ours_settled.get(provider, 0) + payment["amount_paisa"] - refunded
    for provider, amount in ours_settled.items():
        assert balances[provider].settled_paisa >= amount


async def test_each_injected_discrepancy_is_its_outcome_and_one_exception(
    payments: Any, recon: Recon
) -> None:
    made = {
        instruction: await payments.create(upi(11_000 + n, instruction))
        for n, instruction in enumerate(
            ["AMOUNT_MISMATCH", "FEE_MISMATCH", "DUPLICATE", "EXTRA", "OMIT", ""]
        )
    }
    failed = await payments.create(upi(9_900, vpa="failure@upi"))
    for payment in made.values():
        await payments.wait_for(payment["payment_id"], "SUCCESS")
    failed = await payments.wait_for(failed["payment_id"], "FAILED")
    current = {k: await payments.get(p["payment_id"]) for k, p in made.items()}
    await recon.learned(*current.values(), failed)
    day = today()
    upi_before = await recon.exceptions(provider="upi_core")

    run = await recon.run_one("upi_core", day)

    lines = await recon.lines(run)
    outcome_of: dict[str, list[str]] = {}
    for line in sorted(lines.values(), key=lambda row: row["line_number"]):
        outcome_of.setdefault(line["payment_id"] or line["provider_reference"], []).append(
            line["outcome"]
        )
    ids = {k: p["payment_id"] for k, p in current.items()}
    assert outcome_of[ids["AMOUNT_MISMATCH"]] == ["AMOUNT_MISMATCH"]
    assert outcome_of[ids["FEE_MISMATCH"]] == ["FEE_MISMATCH"]
    assert outcome_of[ids["DUPLICATE"]] == ["MATCHED", "DUPLICATE"]
    assert outcome_of[ids["EXTRA"]] == ["MATCHED"]
    assert outcome_of[ids[""]] == ["MATCHED"]
    assert ids["OMIT"] not in outcome_of
    strangers = [row for row in lines.values() if row["outcome"] == "MISSING_INTERNALLY"]
    assert len(strangers) == 1
    assert strangers[0]["payment_id"] is None

    raised = [e for e in await recon.exceptions(provider="upi_core") if e not in upi_before]
    by_type = {e["type"]: e for e in raised if e["run_id"] == run["run_id"]}
    # Exactly one exception per discrepancy, and none for anything else in the file.
    assert sorted(e["type"] for e in raised) == [
        "AMOUNT_MISMATCH",
        "DUPLICATE",
        "FEE_MISMATCH",
        "MISSING_INTERNALLY",
    ]
    assert by_type["AMOUNT_MISMATCH"]["payment_id"] == ids["AMOUNT_MISMATCH"]
    assert (by_type["AMOUNT_MISMATCH"]["expected"], by_type["AMOUNT_MISMATCH"]["actual"]) == (
        str(current["AMOUNT_MISMATCH"]["amount_paisa"]),
        str(current["AMOUNT_MISMATCH"]["amount_paisa"] - 100),
    )
    assert by_type["FEE_MISMATCH"]["payment_id"] == ids["FEE_MISMATCH"]
    assert by_type["FEE_MISMATCH"]["expected"] == "0/0"  # UPI: zero MDR, no GST
    assert by_type["DUPLICATE"]["payment_id"] == ids["DUPLICATE"]
    assert by_type["MISSING_INTERNALLY"]["provider_reference"] == strangers[0]["provider_reference"]
    assert {e["status"] for e in raised} == {"OPEN"}
    assert outcome_counts(run).get("EXPECTED", 0) >= 1  # the OMITted payment, until T+3

    # The provider settled what we consider failed: a file that arrived some other way.
    status_file = (
        "provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,"
        "settlement_id,utr,method\n"
        f"MANUAL{failed['payment_id'][-10:]},{failed['payment_id']},payment,99.00,0.00,0.00,INR,"
        f"{day.isoformat()}T23:59:59+05:30,setl_manual_{failed['payment_id'][-6:]},"
        f"UTRMANUAL{failed['payment_id'][-6:]},UPI\n"
    )
    uploaded = await recon.upload("upi_core", day - timedelta(days=30), status_file)
    assert uploaded.status_code == 200, uploaded.text
    assert outcome_counts(uploaded.json()) == {"STATUS_MISMATCH": 1}
    (status,) = await recon.exceptions(type="STATUS_MISMATCH", date=str(day - timedelta(days=30)))
    assert (status["payment_id"], status["expected"], status["actual"]) == (
        failed["payment_id"],
        "FAILED",
        "SETTLED",
    )


async def test_a_payment_omitted_today_is_missing_after_the_deadline_and_matched_when_settled(
    payments: Any, recon: Recon, stack: Stack
) -> None:
    omitted = await payments.create(upi(7_777, "OMIT"))
    omitted = await payments.wait_for(omitted["payment_id"], "SUCCESS")
    await recon.learned(omitted)
    day = today()
    await recon.run_one("upi_core", day)
    # Not settled by its own day's file, nor the next two: EXPECTED (T+3 by default).
    for later in (1, 2):
        run = await recon.run_one("upi_core", day + timedelta(days=later))
        assert "MISSING_IN_FILE" not in outcome_counts(run)
        assert outcome_counts(run)["EXPECTED"] >= 1
    assert await recon.exceptions(type="MISSING_IN_FILE", status="OPEN") == []

    deadline = await recon.run_one("upi_core", day + timedelta(days=3))

    missing = await recon.exceptions(type="MISSING_IN_FILE", status="OPEN")
    by_payment = {e["payment_id"]: e for e in missing}
    assert by_payment[omitted["payment_id"]]["amount_paisa"] == "7777"
    assert by_payment[omitted["payment_id"]]["run_id"] == deadline["run_id"]
    assert outcome_counts(deadline)["MISSING_IN_FILE"] == len(missing)
    # Nothing else went missing: only payments the sandbox was told to leave out.
    assert await sandbox_notes(stack, list(by_payment)) == dict.fromkeys(by_payment, "OMIT")
    before = await recon.report(day, "upi_core")

    async with httpx.AsyncClient(timeout=10) as client:
        released = await client.post(
            f"{stack.env['SANDBOX_PUBLIC_URL']}/settlements/upi_core/release",
            json={"payment_id": omitted["payment_id"], "date": str(day + timedelta(days=4))},
        )
    assert released.status_code == 200, released.text
    late = await recon.run_one("upi_core", day + timedelta(days=4))

    assert outcome_counts(late) == {"MATCHED": 1}
    (line,) = (await recon.lines(late)).values()
    assert (line["payment_id"], line["outcome"]) == (omitted["payment_id"], "MATCHED")
    closed = next(
        e
        for e in await recon.exceptions(type="MISSING_IN_FILE", date=day.isoformat())
        if e["payment_id"] == omitted["payment_id"]
    )
    assert (closed["status"], closed["resolved_by"]) == ("RESOLVED", "reconciliation")
    assert late["run_id"] in closed["resolution_note"]
    after = await recon.report(day, "upi_core")
    assert missing_in_file(after) == missing_in_file(before) - 1
    await recon.posted(late, {omitted["payment_id"]})


def missing_in_file(report: dict[str, Any]) -> int:
    (entry,) = report["providers"]
    return sum(int(o["count"]) for o in entry["outcomes"] if o["outcome"] == "MISSING_IN_FILE")


async def sandbox_notes(stack: Stack, payment_ids: list[str]) -> dict[str, str]:
    """metadata.sandbox_settlement of these payments, from the orchestrator's table."""
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        rows = await conn.fetch(
            "SELECT payment_id, metadata FROM payments WHERE payment_id = ANY($1)", payment_ids
        )
    finally:
        await conn.close()
    return {
        row["payment_id"]: json.loads(row["metadata"]).get("sandbox_settlement", "")
        if isinstance(row["metadata"], str)
        else row["metadata"].get("sandbox_settlement", "")
        for row in rows
    }


async def test_the_same_file_twice_changes_nothing(recon: Recon) -> None:
    day = today()
    first = await recon.run_one("upi_core", day)
    exceptions = await recon.exceptions()

    again = await recon.run_one("upi_core", day)

    assert again["already_ingested"] is True
    assert (again["run_id"], again["checksum_sha256"]) == (
        first["run_id"],
        first["checksum_sha256"],
    )
    assert await recon.exceptions() == exceptions
    content = (
        "provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,"
        "settlement_id,utr,method\n"
        "TWICE1,pay_twice_1,payment,1.00,0.00,0.00,INR,2026-12-05T23:59:59+05:30,setl_twice,"
        "UTRTWICE,UPI\n"
    )
    uploaded = await recon.upload("upi_core", day - timedelta(days=40), content)
    assert uploaded.status_code == 200, uploaded.text
    after_first = await recon.exceptions()
    repeated = await recon.upload("upi_core", day - timedelta(days=40), content)
    assert repeated.status_code == 200, repeated.text
    assert repeated.json()["already_ingested"] is True
    assert repeated.json()["run_id"] == uploaded.json()["run_id"]
    assert await recon.exceptions() == after_first


async def test_a_malformed_file_is_refused_with_its_line_and_nothing_is_stored(
    recon: Recon, api: httpx.AsyncClient
) -> None:
    day = today() + timedelta(days=50)
    runs_before = (await api.get("/api/v1/admin/reconciliation/runs", headers=recon.admin)).json()[
        "runs"
    ]
    content = (
        "provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,"
        "settlement_id,utr,method\n"
        "BAD1,pay_bad_1,payment,10.00,0.00,0.00,INR,2026-12-05T23:59:59+05:30,setl_bad,UTRBAD,UPI\n"
        "BAD2,pay_bad_2,payment,10.5,0.00,0.00,INR,2026-12-05T23:59:59+05:30,setl_bad,UTRBAD,UPI\n"
    )

    refused = await recon.upload("upi_core", day, content)

    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert "line 3" in body["message"]
    violations = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    assert violations["field_violations"][0]["field"] == "file"
    assert violations["field_violations"][0]["description"].startswith(
        "line 3: amount must be rupees with exactly two decimals"
    )
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert (info["reason"], info["metadata"]["line_number"]) == ("MALFORMED_SETTLEMENT_FILE", "3")
    runs_after = (await api.get("/api/v1/admin/reconciliation/runs", headers=recon.admin)).json()[
        "runs"
    ]
    assert runs_after == runs_before
    assert await recon.exceptions(date=day.isoformat()) == []
    # A wrong currency is refused the same way, naming its line.
    usd = content.replace(",INR,", ",USD,", 1)
    refused = await recon.upload("upi_core", day, usd)
    assert refused.status_code == 400
    assert "line 2: currency must be INR" in refused.json()["message"]


async def test_exceptions_are_listed_by_filter_and_resolved_with_who_and_when(
    recon: Recon, api: httpx.AsyncClient
) -> None:
    day = today() - timedelta(days=60)
    content = (
        "provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,"
        "settlement_id,utr,method\n"
        "LOST1,pay_lost_1,payment,5.00,0.00,0.00,INR,2026-12-05T23:59:59+05:30,setl_lost,UTRL,UPI\n"
    )
    uploaded = await recon.upload("upi_core", day, content)
    assert uploaded.status_code == 200, uploaded.text
    (found,) = await recon.exceptions(
        type="MISSING_INTERNALLY", provider="UPI", date=day.isoformat(), status="OPEN"
    )
    assert await recon.exceptions(type="MISSING_INTERNALLY", provider="CARD", date=str(day)) == []

    path = f"/api/v1/admin/reconciliation/exceptions/{found['exception_id']}/resolve"
    missing_note = await api.post(path, json={"note": "  "}, headers=recon.admin)
    assert missing_note.status_code == 400
    resolved = await api.post(
        path, json={"note": "refund sent to the provider"}, headers=recon.admin
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["resolution_note"], body["resolved_by"]) == (
        "RESOLVED",
        "refund sent to the provider",
        "ops-admin",
    )
    assert body["resolved_at"]
    assert await recon.exceptions(date=day.isoformat(), status="OPEN") == []
    again = await api.post(path, json={"note": "twice"}, headers=recon.admin)
    assert again.status_code == 409
    unknown = await api.post(
        "/api/v1/admin/reconciliation/exceptions/EXC_nope/resolve",
        json={"note": "x"},
        headers=recon.admin,
    )
    assert unknown.status_code == 404


async def test_the_settlement_report_streams_as_csv(recon: Recon, api: httpx.AsyncClient) -> None:
    day = today()
    report = await recon.report(day, "UPI")
    (entry,) = report["providers"]

    reply = await api.get(
        "/api/v1/admin/settlements",
        params={"date": day.isoformat(), "provider": "UPI"},
        headers={**recon.admin, "Accept": "text/csv"},
    )

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert len([r for r in rows if r["line_number"]]) == int(entry["line_count"])
    counted: dict[str, int] = {}
    for row in rows:
        counted[row["outcome"]] = counted.get(row["outcome"], 0) + 1
    assert counted == {o["outcome"]: int(o["count"]) for o in entry["outcomes"]}
    assert {r["utr"] for r in rows if r["line_number"]} == {entry["utr"]}


async def test_only_admins_reconcile(
    api: httpx.AsyncClient, merchant: dict[str, Any], recon: Recon
) -> None:
    as_merchant = await api.post(
        "/api/v1/admin/reconciliation/runs",
        json={"provider": "UPI", "date": today().isoformat()},
        headers=merchant["auth"],
    )
    assert as_merchant.status_code == 403
    bad_date = await api.post(
        "/api/v1/admin/reconciliation/runs",
        json={"provider": "UPI", "date": "05-12-2026"},
        headers=recon.admin,
    )
    assert bad_date.status_code == 400
    assert "date" in bad_date.text
    unknown = await api.post(
        "/api/v1/admin/reconciliation/runs",
        json={"provider": "no_such_bank", "date": today().isoformat()},
        headers=recon.admin,
    )
    assert unknown.status_code == 400
    assert "UNKNOWN_PROVIDER" in unknown.text
