"""The WebSocket status stream through Envoy: GET /api/v1/payments/{payment_id}/stream.

A real WebSocket client (`websockets`) against the stack: the current status at once, one
message per change, a normal close on the outcome; the caller's own payments only, and a token
in the query string (for browsers) that no log keeps.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from devstack.stack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

MESSAGE_FIELDS = {"payment_id", "status", "event_type", "sequence", "at"}


def ws_url(stack: Stack, payment_id: str, query: str = "") -> str:
    base = stack.gateway_url.replace("http://", "ws://", 1)
    return f"{base}/api/v1/payments/{payment_id}/stream{query}"


def upi(vpa: str, amount: int = 10000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
    }


def wallet(amount: int = 10000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": "9999999999"},
    }


async def receive(socket: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 20))
    return message


async def rest_of(socket: ClientConnection) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    messages = []
    async with asyncio.timeout(30):
        async for text in socket:
            messages.append(json.loads(text))
    return messages


async def test_a_upi_payment_streams_from_pending_to_success_then_closes_normally(
    stack: Stack, payments: Any
) -> None:
    payment = await payments.create(upi("manual@upi"))
    auth = payments.merchant["auth"]

    async with connect(ws_url(stack, payment["payment_id"]), additional_headers=auth) as socket:
        first = await receive(socket)
        async with httpx.AsyncClient(timeout=10) as client:
            approved = await client.post(
                f"{stack.env['SANDBOX_PUBLIC_URL']}/upi/transactions/{payment['payment_id']}/approve"
            )
        assert approved.status_code == 200, approved.text
        later = await rest_of(socket)

    assert set(first) == MESSAGE_FIELDS
    assert first["payment_id"] == payment["payment_id"]
    assert (first["status"], first["event_type"]) == ("PENDING", "payment.pending")
    assert later, "no message after the current status"
    assert (later[-1]["status"], later[-1]["event_type"]) == ("SUCCESS", "payment.success")
    assert socket.close_code == 1000
    # One message per change, in order, none twice: what the payment's history says.
    history = (await payments.get(payment["payment_id"]))["status_history"]
    streamed = [first, *later]
    assert [m["status"] for m in streamed] == [h["to_status"] for h in history][1:]
    assert [m["sequence"] for m in streamed] == list(range(2, len(history) + 1))
    assert all(m["at"].endswith("Z") for m in streamed)


async def test_a_payment_with_an_outcome_sends_it_and_closes(stack: Stack, payments: Any) -> None:
    payment = await payments.create(wallet())
    assert payment["status"] == "SUCCESS"

    async with connect(
        ws_url(stack, payment["payment_id"]), additional_headers=payments.merchant["auth"]
    ) as socket:
        messages = await rest_of(socket)

    assert [(m["status"], m["event_type"]) for m in messages] == [("SUCCESS", "payment.success")]
    assert socket.close_code == 1000


async def test_a_browser_token_in_the_query_string_is_accepted_and_logged_nowhere(
    stack: Stack, payments: Any, mint_token: Any
) -> None:
    payment = await payments.create(wallet())
    token = mint_token(payments.merchant["merchant_id"])

    async with connect(ws_url(stack, payment["payment_id"], f"?access_token={token}")) as socket:
        messages = await rest_of(socket)

    assert [m["status"] for m in messages] == ["SUCCESS"]
    await asyncio.sleep(1.5)  # Envoy flushes its access log every second
    for component in ("envoy", "webhook"):
        log = stack.log_text(component)
        assert f"{payment['payment_id']}/stream" in log or component == "webhook", component
        assert token.split(".")[2] not in log, component


async def test_a_token_in_the_query_string_is_refused_everywhere_but_the_stream(
    api: httpx.AsyncClient, payments: Any, mint_token: Any
) -> None:
    payment = await payments.create(wallet())
    token = mint_token(payments.merchant["merchant_id"])

    reply = await api.get(f"/api/v1/payments/{payment['payment_id']}?access_token={token}")

    assert reply.status_code == 401
    assert reply.json()["code"] == 16


async def test_another_merchants_payment_is_refused_before_any_message(
    stack: Stack, payments: Any, mint_token: Any
) -> None:
    payment = await payments.create(upi("manual@upi"))
    stranger = {"Authorization": f"Bearer {mint_token('MER_SOMEONE_ELSE')}"}

    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(stack, payment["payment_id"]), additional_headers=stranger):
            pytest.fail("the upgrade was accepted")

    response = refused.value.response
    assert response.status_code == 404
    body = json.loads(response.body or b"{}")
    assert body["code"] == 5
    reasons = [d.get("reason") for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons == ["PAYMENT_NOT_FOUND"]


async def test_no_token_is_refused_before_any_message(stack: Stack, payments: Any) -> None:
    payment = await payments.create(upi("manual@upi"))

    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(stack, payment["payment_id"]), additional_headers=headers):
                pytest.fail("the upgrade was accepted")
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"{}")["code"] == 16


async def test_a_plain_get_on_the_stream_path_is_told_to_upgrade(
    api: httpx.AsyncClient, payments: Any
) -> None:
    payment = await payments.create(wallet())

    reply = await api.get(
        f"/api/v1/payments/{payment['payment_id']}/stream", headers=payments.merchant["auth"]
    )

    assert reply.status_code == 400
    assert payments.reason(reply) == "WEBSOCKET_UPGRADE_REQUIRED"
