"""Disputes (chargebacks) end to end through Envoy (issue 11, items 1-3).

The sandbox's card acquirers raise a chargeback SANDBOX_CHARGEBACK_DELAY_MS after capturing a
payment of card 4000 0000 0000 0259, and raise one on demand (`POST /disputes` on the sandbox)
for any captured card or UPI payment; each reaches the gateway as a signed provider callback.
Every test checks money: the merchant's payable (the admin balance) and, after each test, the
ledger's invariants (balanced journals, one chargeback per dispute).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from devstack import Stack
from devstack.webhook_receiver import WebhookReceiver
from gateway_core.signing import sign_callback

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

FUTURE_YEAR = str(time.gmtime().tm_year + 3)
CHARGEBACK_CARD = "4000000000000259"
PLAIN_CARD = "4242424242424242"
DISPUTE_FEE = 15_000 + 2_700  # ₹150 and 18 % GST
IST = ZoneInfo("Asia/Kolkata")


def card(number: str = CHARGEBACK_CARD, amount: int = 50_000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": number,
                "expiry_month": "12",
                "expiry_year": FUTURE_YEAR,
                "cvv": "123",
            }
        },
    }


def upi(amount: int = 20_000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
    }


def reason(reply: httpx.Response) -> str:
    for detail in reply.json().get("details", []):
        if detail.get("@type", "").endswith("ErrorInfo"):
            return str(detail["reason"])
    return ""


class Desk:
    """One merchant's disputes through the public API, and the sandbox's dispute control."""

    def __init__(self, api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack) -> None:
        self.api = api
        self.merchant = merchant
        self.sandbox = stack.env["SANDBOX_PUBLIC_URL"]

    async def payable(self) -> int:
        reply = await self.api.get(
            f"/api/v1/admin/merchants/{self.merchant['merchant_id']}/balance",
            headers=self.merchant["admin"],
        )
        assert reply.status_code == 200, reply.text
        return int(reply.json()["payable_paisa"])

    async def disputes_of(self, payment_id: str) -> list[dict[str, Any]]:
        reply = await self.api.get(
            "/api/v1/disputes", params={"payment_id": payment_id}, headers=self.merchant["auth"]
        )
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json()["disputes"]
        return found

    async def opened(self, payment_id: str, within: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while not (found := await self.disputes_of(payment_id)):
            assert time.monotonic() < deadline, f"no dispute on {payment_id}"
            await asyncio.sleep(0.2)
        [dispute] = found
        return dispute

    async def get(self, dispute_id: str) -> dict[str, Any]:
        reply = await self.api.get(f"/api/v1/disputes/{dispute_id}", headers=self.merchant["auth"])
        assert reply.status_code == 200, reply.text
        dispute: dict[str, Any] = reply.json()
        return dispute

    async def wait_for(self, dispute_id: str, status: str, within: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while (dispute := await self.get(dispute_id))["status"] != status:
            assert time.monotonic() < deadline, f"{dispute_id} stayed {dispute['status']}"
            await asyncio.sleep(0.2)
        return dispute

    async def evidence(self, dispute_id: str, **fields: str) -> httpx.Response:
        return await self.api.post(
            f"/api/v1/disputes/{dispute_id}/evidence",
            json={"evidence": fields},
            headers=self.merchant["auth"],
        )

    async def accept(self, dispute_id: str, **headers: str) -> httpx.Response:
        return await self.api.post(
            f"/api/v1/disputes/{dispute_id}/accept",
            json={},
            headers={**self.merchant["auth"], **headers},
        )

    async def raise_dispute(self, provider: str, payment_id: str, **extra: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(
                f"{self.sandbox}/disputes",
                json={"provider": provider, "payment_id": payment_id, **extra},
            )
        assert reply.status_code == 200, reply.text
        case: dict[str, Any] = reply.json()
        return case


@pytest.fixture
def desk(api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack) -> Desk:
    return Desk(api, merchant, stack)


async def captured(payments: Any, body: dict[str, Any]) -> dict[str, Any]:
    payment = await payments.create(body)
    paid: dict[str, Any] = await payments.wait_for(payment["payment_id"], "SUCCESS")
    return paid


async def test_a_chargeback_on_the_magic_card_opens_a_dispute_and_debits_the_merchant(
    payments: Any, desk: Desk
) -> None:
    payment = await captured(payments, card())
    before = await desk.payable()

    dispute = await desk.opened(payment["payment_id"])

    assert dispute["status"] == "NEEDS_RESPONSE"
    assert dispute["phase"] == "CHARGEBACK"
    # int64 fields are JSON strings (proto3 JSON), like the merchant balance's.
    assert (int(dispute["amount_paisa"]), dispute["currency"]) == (50_000, "INR")
    assert dispute["provider"] == payment["provider"]
    assert dispute["reason_code"] == "4853"
    assert int(dispute["fee_paisa"]) == DISPUTE_FEE
    assert datetime.fromisoformat(dispute["respond_by"]) > datetime.now(UTC) + timedelta(days=6)
    assert await desk.payable() == before - 50_000 - DISPUTE_FEE
    shown = (await payments.get(payment["payment_id"]))["disputes"]
    assert [d["dispute_id"] for d in shown] == [dispute["dispute_id"]]


async def test_winning_evidence_wins_the_money_back_but_not_the_fee(
    payments: Any, desk: Desk, api: httpx.AsyncClient, stack: Stack
) -> None:
    payment = await captured(payments, card())
    before = await desk.payable()
    dispute = await desk.opened(payment["payment_id"])

    reply = await desk.evidence(
        dispute["dispute_id"],
        summary="Delivered and signed for: winning_evidence",
        shipping_proof="AWB 1234567890, delivered 2026-12-01",
    )

    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "UNDER_REVIEW"
    assert reply.json()["evidence"]["shipping_proof"].startswith("AWB")
    assert reply.json()["evidence"]["submitted_at"]
    again = await desk.evidence(dispute["dispute_id"], summary="one more thing")
    assert again.status_code == 400, again.text
    assert reason(again) == "DISPUTE_EVIDENCE_ALREADY_SUBMITTED"
    won = await desk.wait_for(dispute["dispute_id"], "WON")
    assert won["resolved_at"]
    assert won["evidence"]["summary"].endswith("winning_evidence")
    assert await desk.payable() == before - DISPUTE_FEE

    # The provider's decision delivered again (a retry, or a replay): the money moves once.
    provider = dispute["provider"]
    body = json.dumps(
        {
            "event_id": f"EVT_{uuid.uuid4().hex}",
            "type": "dispute.decided",
            "provider": provider,
            "transaction_ref": payment["payment_id"],
            "case_reference": dispute["provider_reference"],
            "amount_paisa": 50_000,
            "outcome": "WON",
        }
    ).encode()
    again_decided = await api.post(
        f"/api/v1/provider-callbacks/{provider}",
        content=body,
        headers={
            "content-type": "application/json",
            "x-provider-signature": sign_callback(
                stack.env[f"PROVIDER_CALLBACK_SECRET_{provider.upper()}"], body
            ),
        },
    )
    assert again_decided.status_code == 200, again_decided.text
    assert again_decided.json()["applied"] is False
    assert await desk.payable() == before - DISPUTE_FEE


async def test_other_evidence_loses_and_the_money_stays_with_the_customer(
    payments: Any, desk: Desk
) -> None:
    payment = await captured(payments, card())
    before = await desk.payable()
    dispute = await desk.opened(payment["payment_id"])

    reply = await desk.evidence(dispute["dispute_id"], summary="The customer is mistaken.")

    assert reply.status_code == 200, reply.text
    await desk.wait_for(dispute["dispute_id"], "LOST")
    await asyncio.sleep(1.0)  # nothing more arrives
    assert await desk.payable() == before - 50_000 - DISPUTE_FEE


async def test_accepting_concedes_and_answers_only_once(payments: Any, desk: Desk) -> None:
    payment = await captured(payments, card())
    before = await desk.payable()
    dispute = await desk.opened(payment["payment_id"])

    key = {"Idempotency-Key": f"accept-{uuid.uuid4().hex}"}
    reply = await desk.accept(dispute["dispute_id"], **key)

    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "ACCEPTED"
    assert reply.json()["resolved_at"]
    retried = await desk.accept(dispute["dispute_id"], **key)  # the first answer, replayed
    assert (retried.status_code, retried.json()) == (200, reply.json())
    again = await desk.accept(dispute["dispute_id"])
    assert (again.status_code, reason(again)) == (400, "DISPUTE_NOT_OPEN")
    late = await desk.evidence(dispute["dispute_id"], summary="winning_evidence")
    assert (late.status_code, reason(late)) == (400, "DISPUTE_NOT_OPEN")
    assert await desk.payable() == before - 50_000 - DISPUTE_FEE


async def test_no_answer_by_respond_by_loses_and_evidence_comes_too_late(
    payments: Any, desk: Desk
) -> None:
    payment = await captured(payments, card(PLAIN_CARD, 30_000))
    before = await desk.payable()

    await desk.raise_dispute(payment["provider"], payment["payment_id"], respond_within_seconds=2)
    dispute = await desk.opened(payment["payment_id"])
    lost = await desk.wait_for(dispute["dispute_id"], "LOST", within=20)

    assert lost["resolved_at"]
    late = await desk.evidence(dispute["dispute_id"], summary="winning_evidence")
    assert (late.status_code, reason(late)) == (400, "DISPUTE_NOT_OPEN")
    assert await desk.payable() == before - 30_000 - DISPUTE_FEE


async def test_evidence_is_checked_field_by_field_and_nothing_changes(
    payments: Any, desk: Desk
) -> None:
    payment = await captured(payments, card(PLAIN_CARD, 30_000))
    await desk.raise_dispute(payment["provider"], payment["payment_id"])
    dispute = await desk.opened(payment["payment_id"])

    reply = await desk.evidence(dispute["dispute_id"], billing_proof="x" * 2_001)

    assert reply.status_code == 400
    fields = {
        v["field"]: v["description"]
        for d in reply.json()["details"]
        for v in d.get("field_violations", [])
    }
    assert set(fields) == {"evidence.summary", "evidence.billing_proof"}
    assert "2000 characters" in fields["evidence.billing_proof"]
    assert (await desk.get(dispute["dispute_id"]))["status"] == "NEEDS_RESPONSE"


async def test_a_upi_dispute_carries_its_udir_code_and_refunds_cannot_overdraw_it(
    payments: Any, desk: Desk
) -> None:
    payment = await captured(payments, upi(20_000))
    refunded = await payments.act(payment["payment_id"], "refund", {"amount_paisa": 5_000})
    assert refunded.status_code == 200, refunded.text

    case = await desk.raise_dispute("upi_core", payment["payment_id"], reason_code="U021")
    dispute = await desk.opened(payment["payment_id"])

    assert case["amount_paisa"] == 15_000  # captured less refunded
    assert (dispute["reason_code"], int(dispute["amount_paisa"])) == ("U021", 15_000)
    assert dispute["reason"] == "goods or services not provided"
    more = await payments.act(payment["payment_id"], "refund", {"amount_paisa": 1})
    assert (more.status_code, payments.reason(more)) == (400, "REFUND_EXCEEDS_CAPTURED")


async def test_another_merchants_dispute_is_not_found_and_admin_routes_need_admins(
    payments: Any, desk: Desk, api: httpx.AsyncClient, mint_token: Any
) -> None:
    payment = await captured(payments, card(PLAIN_CARD, 30_000))
    await desk.raise_dispute(payment["provider"], payment["payment_id"])
    dispute = await desk.opened(payment["payment_id"])
    stranger = {"Authorization": f"Bearer {mint_token('MER_' + uuid.uuid4().hex[:12])}"}
    dispute_id = dispute["dispute_id"]

    for reply in (
        await api.get(f"/api/v1/disputes/{dispute_id}", headers=stranger),
        await api.post(
            f"/api/v1/disputes/{dispute_id}/evidence",
            json={"evidence": {"summary": "winning_evidence"}},
            headers=stranger,
        ),
        await api.post(f"/api/v1/disputes/{dispute_id}/accept", json={}, headers=stranger),
    ):
        assert (reply.status_code, reason(reply)) == (404, "DISPUTE_NOT_FOUND"), reply.text
    listed = await api.get("/api/v1/disputes", headers=stranger)
    assert dispute_id not in {d["dispute_id"] for d in listed.json()["disputes"]}
    assert (await desk.get(dispute_id))["status"] == "NEEDS_RESPONSE"

    admin = desk.merchant["admin"]
    seen = await api.get(f"/api/v1/admin/disputes/{dispute_id}", headers=admin)
    assert seen.status_code == 200
    assert seen.json()["merchant_id"] == desk.merchant["merchant_id"]
    mine = await api.get(
        "/api/v1/admin/disputes",
        params={"merchant_id": desk.merchant["merchant_id"], "status": "NEEDS_RESPONSE"},
        headers=admin,
    )
    assert [d["dispute_id"] for d in mine.json()["disputes"]] == [dispute_id]
    refused = await api.get(f"/api/v1/admin/disputes/{dispute_id}", headers=desk.merchant["auth"])
    assert refused.status_code == 403


async def test_a_forged_or_replayed_chargeback_changes_nothing(
    payments: Any, desk: Desk, api: httpx.AsyncClient, stack: Stack
) -> None:
    payment = await captured(payments, card(PLAIN_CARD, 40_000))
    provider = payment["provider"]
    before = await desk.payable()
    # The provider opens the case but its callback is the test's to deliver.
    case = await desk.raise_dispute(provider, payment["payment_id"], notify=False)
    document = {
        "event_id": f"EVT_{uuid.uuid4().hex}",
        "type": "dispute.opened",
        "provider": provider,
        "transaction_ref": payment["payment_id"],
        "case_reference": case["case_reference"],
        "amount_paisa": 40_000,
        "reason_code": "4837",
        "phase": "CHARGEBACK",
        "respond_by": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    }
    body = json.dumps(document).encode()

    async def post(signature: str, content: bytes = body) -> httpx.Response:
        return await api.post(
            f"/api/v1/provider-callbacks/{provider}",
            content=content,
            headers={"content-type": "application/json", "x-provider-signature": signature},
        )

    forged = await post(sign_callback(stack.env["PROVIDER_CALLBACK_SECRET_UPI_CORE"], body))
    stale = await post(
        sign_callback(
            stack.env[f"PROVIDER_CALLBACK_SECRET_{provider.upper()}"],
            body,
            timestamp=int(time.time()) - 3600,
        )
    )
    assert (forged.status_code, stale.status_code) == (401, 401)
    assert await desk.disputes_of(payment["payment_id"]) == []

    signature = sign_callback(stack.env[f"PROVIDER_CALLBACK_SECRET_{provider.upper()}"], body)
    # Delivered twice at once (a provider's retry racing the first attempt), then once more.
    both = await asyncio.gather(post(signature), post(signature))
    replay = await post(signature)

    assert [r.status_code for r in (*both, replay)] == [200, 200, 200], replay.text
    assert sorted(r.json()["applied"] for r in both) == [False, True]
    assert replay.json()["applied"] is False
    assert len(await desk.disputes_of(payment["payment_id"])) == 1
    assert await desk.payable() == before - 40_000 - DISPUTE_FEE
    tampered = body.replace(b"40000", b"90000")
    assert (await post(signature, tampered)).status_code == 401


async def test_a_dispute_can_never_take_more_than_was_captured(payments: Any, desk: Desk) -> None:
    payment = await captured(payments, card(PLAIN_CARD, 30_000))
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(
            f"{desk.sandbox}/disputes",
            json={
                "provider": payment["provider"],
                "payment_id": payment["payment_id"],
                "amount_paisa": 30_001,
            },
        )
    assert reply.status_code == 409, reply.text
    await desk.raise_dispute(payment["provider"], payment["payment_id"], amount_paisa=20_000)
    await desk.opened(payment["payment_id"])
    refund = await payments.act(payment["payment_id"], "refund", {"amount_paisa": 10_001})
    assert (refund.status_code, payments.reason(refund)) == (400, "REFUND_EXCEEDS_CAPTURED")


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver()
    await running.start()
    yield running
    await running.stop()


async def test_dispute_events_reach_a_subscribed_webhook_endpoint(
    payments: Any, desk: Desk, api: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    name = uuid.uuid4().hex[:12]
    created = await api.post(
        "/api/v1/webhooks",
        json={
            "url": receiver.endpoint(name),
            "events": ["dispute.created", "dispute.accepted"],
        },
        headers=desk.merchant["auth"],
    )
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    payment = await captured(payments, card())
    dispute = await desk.opened(payment["payment_id"])
    assert (await desk.accept(dispute["dispute_id"])).status_code == 200

    deliveries = await receiver.wait_for(name, 2)

    documents = [d.verify(secret) for d in deliveries]
    assert [d["type"] for d in documents] == ["dispute.created", "dispute.accepted"]
    assert {d["data"]["dispute_id"] for d in documents} == {dispute["dispute_id"]}
    assert documents[1]["data"]["status"] == "ACCEPTED"


async def test_the_chargeback_line_of_the_settlement_file_reconciles_matched(
    payments: Any, desk: Desk, api: httpx.AsyncClient, stack: Stack
) -> None:
    payment = await captured(payments, card(PLAIN_CARD, 35_000))
    case = await desk.raise_dispute(payment["provider"], payment["payment_id"])
    dispute = await desk.opened(payment["payment_id"])
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "reconciliation"})
    try:
        deadline = time.monotonic() + 30
        while not await conn.fetchval(
            "SELECT 1 FROM book_disputes WHERE dispute_id = $1", dispute["dispute_id"]
        ):
            assert time.monotonic() < deadline, "reconciliation never learned the dispute"
            await asyncio.sleep(0.2)
        day = datetime.now(IST).date()
        reply = await api.post(
            "/api/v1/admin/reconciliation/runs",
            json={"provider": payment["provider"], "date": day.isoformat()},
            headers=desk.merchant["admin"],
        )
        assert reply.status_code == 200, reply.text
        [run] = reply.json()["runs"]
        report = await api.get(
            "/api/v1/admin/settlements",
            params={"date": day.isoformat(), "provider": payment["provider"]},
            headers=desk.merchant["admin"],
        )
        line = await conn.fetchrow(
            "SELECT * FROM settlement_lines WHERE settlement_file_id = $1 AND type = 'chargeback'"
            " AND provider_reference = $2",
            run["settlement_file_id"],
            case["case_reference"],
        )
    finally:
        await conn.close()
    assert line is not None
    assert (line["outcome"], line["amount_paisa"]) == ("MATCHED", 35_000)
    assert line["payment_id"] == payment["payment_id"]
    # Our books expect what the provider took back: every dispute of the day is in the file.
    assert report.status_code == 200, report.text
    [entry] = report.json()["providers"]
    assert int(entry["chargebacks_paisa"]) >= 35_000
    assert entry["expected_chargebacks_paisa"] == entry["chargebacks_paisa"]
