"""The walking skeleton, end to end through Envoy: an admin onboards a merchant, the merchant
takes a UPI payment, reads it back, and the payment.created event lands on Kafka."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import httpx
import pytest
import zxingcpp
from PIL import Image

from devstack import Stack
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc

Token = Callable[..., str]
EventReader = Callable[..., Awaitable[list[dict[str, Any]]]]


@pytest.fixture(scope="module")
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=15) as client:
        yield client


@pytest.fixture
async def ahttp(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mint_token: Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}


def create_merchant(http: httpx.Client, admin: dict[str, str], name: str) -> dict[str, Any]:
    reply = http.post("/api/v1/admin/merchants", json={"name": name}, headers=admin)
    assert reply.status_code == 200, reply.text
    merchant: dict[str, Any] = reply.json()
    return merchant


@pytest.fixture(scope="module")
def merchant(http: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    return create_merchant(http, admin, "Chai Point")


@pytest.fixture(scope="module")
def auth(merchant: dict[str, Any], mint_token: Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(merchant['merchant_id'])}"}


def upi_payment(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": "cust-42",
        "amount_paisa": 10000,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
        "description": "Payment for order #12345",
        "metadata": {"order_id": "12345"},
    }
    body.update(changes)
    return body


async def payment_count(stack: Stack, merchant_id: str) -> int:
    conn = await asyncpg.connect(stack.dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM orchestrator.payments WHERE merchant_id = $1", merchant_id
        )
        return int(count)
    finally:
        await conn.close()


def test_admin_creates_a_merchant_with_an_id_and_payee_vpa(merchant: dict[str, Any]) -> None:
    assert merchant["merchant_id"].startswith("MER_")
    assert merchant["name"] == "Chai Point"
    assert merchant["vpa"].endswith("@paygate")
    assert merchant["status"] == "ACTIVE"


def test_merchant_creation_names_the_missing_field(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    reply = http.post("/api/v1/admin/merchants", json={"email": "x@y.in"}, headers=admin)
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == 3
    fields = [v["field"] for d in body["details"] for v in d.get("field_violations", [])]
    assert fields == ["name"]


def test_upi_payment_is_pending_with_link_qr_and_expiry(
    http: httpx.Client, auth: dict[str, str], merchant: dict[str, Any]
) -> None:
    before = datetime.now(UTC)
    reply = http.post("/api/v1/payments", json=upi_payment(), headers=auth)
    assert reply.status_code == 200, reply.text
    payment = reply.json()

    assert payment["payment_id"].startswith("PAY_")
    assert payment["status"] == "PENDING"
    assert payment["payment_method"] == "UPI"
    assert payment["amount_paisa"] == 10000
    assert payment["fees_paisa"] == 0
    assert payment["currency"] == "INR"
    assert payment["merchant_id"] == merchant["merchant_id"]

    link = urlsplit(payment["payment_url"])
    assert (link.scheme, link.netloc) == ("upi", "pay")
    assert parse_qs(link.query) == {
        "pa": [merchant["vpa"]],
        "pn": ["Chai Point"],
        "am": ["100.00"],
        "cu": ["INR"],
        "tn": ["Payment for order #12345"],
        "tr": [payment["payment_id"]],
    }

    prefix = "data:image/png;base64,"
    assert payment["qr_code"].startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(payment["qr_code"][len(prefix) :])))
    assert [code.text for code in zxingcpp.read_barcodes(image)] == [payment["payment_url"]]

    expires_at = datetime.fromisoformat(payment["expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(minutes=14) < expires_at < before + timedelta(minutes=16)


def test_get_returns_the_payment_to_its_merchant_only(
    http: httpx.Client, auth: dict[str, str], admin: dict[str, str], mint_token: Token
) -> None:
    created = http.post("/api/v1/payments", json=upi_payment(), headers=auth).json()
    reply = http.get(f"/api/v1/payments/{created['payment_id']}", headers=auth)
    assert reply.status_code == 200
    fetched = reply.json()
    assert fetched["payment_id"] == created["payment_id"]
    assert fetched["status"] == "PENDING"
    assert fetched["payment_url"] == created["payment_url"]
    assert [(s["from_status"], s["to_status"]) for s in fetched["status_history"]] == [
        ("STATUS_UNSPECIFIED", "CREATED"),
        ("CREATED", "PENDING"),
    ]

    other = create_merchant(http, admin, "Other Shop")
    other_auth = {"Authorization": f"Bearer {mint_token(other['merchant_id'])}"}
    hidden = http.get(f"/api/v1/payments/{created['payment_id']}", headers=other_auth)
    assert hidden.status_code == 404
    assert hidden.json()["code"] == 5


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount_paisa": None}, "amount_paisa"),
        ({"amount_paisa": 0}, "amount_paisa"),
        ({"amount_paisa": -500}, "amount_paisa"),
        ({"currency": "USD"}, "currency"),
        ({"payment_details": {"vpa": "not a vpa"}}, "payment_details.vpa"),
        ({"payment_details": {"vpa": "nouser@upi"}}, "payment_details.vpa"),
    ],
)
async def test_bad_input_is_a_named_400_and_stores_nothing(
    ahttp: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    stack: Stack,
    changes: dict[str, Any],
    field: str,
) -> None:
    body = upi_payment(**changes)
    body = {k: v for k, v in body.items() if v is not None}
    before = await payment_count(stack, merchant["merchant_id"])
    reply = await ahttp.post("/api/v1/payments", json=body, headers=auth)
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert error["code"] == 3
    fields = [v["field"] for d in error["details"] for v in d.get("field_violations", [])]
    assert field in fields
    reasons = [d["reason"] for d in error["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons in (["INVALID_FIELD"], ["VPA_NOT_FOUND"])
    assert await payment_count(stack, merchant["merchant_id"]) == before


async def test_unknown_method_is_a_json_400_that_names_the_field(
    ahttp: httpx.AsyncClient, auth: dict[str, str], merchant: dict[str, Any], stack: Stack
) -> None:
    before = await payment_count(stack, merchant["merchant_id"])
    reply = await ahttp.post(
        "/api/v1/payments", json=upi_payment(payment_method="CRYPTO"), headers=auth
    )
    assert reply.status_code == 400
    assert reply.headers["content-type"].startswith("application/json")
    assert "payment_method" in reply.json()["message"]
    assert await payment_count(stack, merchant["merchant_id"]) == before


def test_body_merchant_id_cannot_act_for_another_merchant(
    http: httpx.Client, auth: dict[str, str]
) -> None:
    reply = http.post(
        "/api/v1/payments", json=upi_payment(merchant_id="MER_SOMEONE_ELSE"), headers=auth
    )
    assert reply.status_code == 403
    assert reply.json()["code"] == 7


def test_client_sent_identity_headers_are_ignored(
    http: httpx.Client, auth: dict[str, str], admin: dict[str, str]
) -> None:
    victim = create_merchant(http, admin, "Victim Store")
    spoofed = {**auth, "x-merchant-id": victim["merchant_id"], "x-caller-role": "admin"}
    payment = http.post("/api/v1/payments", json=upi_payment(), headers=spoofed).json()
    assert payment["merchant_id"] != victim["merchant_id"]
    assert http.get("/api/v1/admin/merchants", headers=spoofed).status_code == 403


def test_payments_over_native_grpc_through_envoy(
    http: httpx.Client, auth: dict[str, str], stack: Stack
) -> None:
    created = http.post("/api/v1/payments", json=upi_payment(), headers=auth).json()
    with grpc.insecure_channel(stack.gateway_grpc_target) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        metadata = (("authorization", auth["Authorization"]),)
        payment = stub.GetPayment(
            payments_pb2.GetPaymentRequest(payment_id=created["payment_id"]),
            metadata=metadata,
            timeout=10,
        )
        assert payment.status == payments_pb2.Payment.PENDING
        assert payment.amount_paisa == 10000
        with pytest.raises(grpc.RpcError) as info:
            stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=created["payment_id"]))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_database_refuses_an_illegal_transition(
    ahttp: httpx.AsyncClient, auth: dict[str, str], stack: Stack
) -> None:
    created = (await ahttp.post("/api/v1/payments", json=upi_payment(), headers=auth)).json()
    conn = await asyncpg.connect(stack.dsn)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE orchestrator.payments SET status = 'REFUNDED' WHERE payment_id = $1",
                created["payment_id"],
            )
    finally:
        await conn.close()


async def test_payment_created_event_lands_on_kafka_keyed_by_payment_id(
    ahttp: httpx.AsyncClient, auth: dict[str, str], kafka_events: EventReader
) -> None:
    created = (await ahttp.post("/api/v1/payments", json=upi_payment(), headers=auth)).json()
    payment_id = created["payment_id"]
    events = await kafka_events(payment_id, want=2)
    # The first two: payment.success may follow within the read when the topic is long.
    assert [e["type"] for e in events[:2]] == ["payment.created", "payment.pending"]
    first = events[0]
    assert first["payment_id"] == payment_id
    assert first["payment"]["amount_paisa"] == 10000
    assert first["payment"]["status"] == "CREATED"
    assert len({e["event_id"] for e in events}) == len(events)
