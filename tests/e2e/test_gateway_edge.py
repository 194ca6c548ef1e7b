"""The front door of the running stack: authentication, authorization and Envoy's own replies.

Every reply Envoy makes itself has the JSON shape of a transcoded gRPC error:
{"code": <google.rpc.Code>, "message": "...", "details": [...]}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import jwt
import pytest

from devstack.stack import Stack
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc

pytestmark = pytest.mark.e2e

Token = Callable[..., str]


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mint_token: Token) -> dict[str, str]:
    return bearer(mint_token("edge-admin", role="admin"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged_token(stack: Stack, **changes: Any) -> str:
    """A token like the real ones, with some claims or the key changed."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "MER_forged",
        "role": "merchant",
        "iss": stack.env.get("JWT_ISSUER", "payment-gateway"),
        "aud": stack.env.get("JWT_AUDIENCE", "payments-api"),
        "iat": now,
        "exp": now + 600,
    }
    secret = changes.pop("secret", stack.env["JWT_SECRET"])
    claims.update(changes)
    return jwt.encode(claims, secret, algorithm="HS256")


def assert_json_error(reply: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    return dict(body)


def create_merchant(http: httpx.Client, admin: dict[str, str], name: str) -> str:
    reply = http.post("/api/v1/admin/merchants", json={"name": name}, headers=admin)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["merchant_id"])


def upi_payment() -> dict[str, Any]:
    return {
        "user_id": "cust-edge",
        "amount_paisa": 2500,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
        "description": "edge test",
    }


def test_health_is_200_json_without_a_token(http: httpx.Client) -> None:
    reply = http.get("/health")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"status": "ok"}


def test_ready_is_200_json_when_every_service_is_up(http: httpx.Client) -> None:
    # Envoy health-checks every 2 s: give a just-started stack a moment.
    reply = http.get("/ready")
    for _ in range(20):
        if reply.status_code == 200:
            break
        time.sleep(0.5)
        reply = http.get("/ready")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "ready"}


def test_no_token_is_401_with_code_16(http: httpx.Client) -> None:
    reply = http.get("/api/v1/payments")
    body = assert_json_error(reply, 401, 16)
    assert body["details"] == []
    assert reply.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"secret": "not-the-gateway-secret-0123456789abcdef"}, id="bad-signature"),
        pytest.param({"aud": "another-api"}, id="wrong-audience"),
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"exp": int(time.time()) - 600, "iat": int(time.time()) - 1200}, id="expired"),
    ],
)
def test_an_invalid_token_is_401_with_code_16(
    http: httpx.Client, stack: Stack, changes: dict[str, Any]
) -> None:
    reply = http.get("/api/v1/payments", headers=bearer(forged_token(stack, **changes)))
    assert_json_error(reply, 401, 16)


def test_a_token_living_longer_than_jwt_max_lifetime_is_401(
    http: httpx.Client, mint_token: Token
) -> None:
    plans = "/api/v1/emi/plans?amount_paisa=600000"
    # JWT_MAX_LIFETIME is 24h: Envoy refuses a token whose exp lies further ahead.
    too_long = http.get(plans, headers=bearer(mint_token("MER_ttl", ttl_seconds=25 * 3600)))
    assert_json_error(too_long, 401, 16)

    for hours in (1, 23):
        fine = http.get(plans, headers=bearer(mint_token("MER_ttl", ttl_seconds=hours * 3600)))
        assert fine.status_code == 200, fine.text


def test_a_token_minted_to_live_longer_than_jwt_max_lifetime_is_401_even_near_its_end(
    http: httpx.Client, stack: Stack
) -> None:
    """Lifetime is exp - iat: a 30-day token is refused in its last hour too, not only while
    its exp is more than JWT_MAX_LIFETIME away."""
    now = int(time.time())
    month_old = forged_token(stack, iat=now - 30 * 86400 + 3600, exp=now + 3600)
    assert_json_error(http.get("/api/v1/payments", headers=bearer(month_old)), 401, 16)

    claims = jwt.decode(forged_token(stack), options={"verify_signature": False})
    del claims["iat"]
    undated = jwt.encode(claims, stack.env["JWT_SECRET"], algorithm="HS256")
    assert_json_error(http.get("/api/v1/payments", headers=bearer(undated)), 401, 16)

    day_old = forged_token(stack, iat=now - 23 * 3600, exp=now + 600)
    assert http.get("/api/v1/payments", headers=bearer(day_old)).status_code != 401


def test_a_token_without_an_expiry_is_401(http: httpx.Client, stack: Stack) -> None:
    claims = jwt.decode(forged_token(stack), options={"verify_signature": False})
    del claims["exp"]
    endless = jwt.encode(claims, stack.env["JWT_SECRET"], algorithm="HS256")

    assert_json_error(http.get("/api/v1/payments", headers=bearer(endless)), 401, 16)


def test_a_token_without_a_role_is_403(http: httpx.Client, stack: Stack) -> None:
    token = forged_token(stack)
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["role"]
    roleless = jwt.encode(claims, stack.env["JWT_SECRET"], algorithm="HS256")
    assert_json_error(http.get("/api/v1/payments", headers=bearer(roleless)), 403, 7)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/admin/merchants", "/api/v1/admin/settlements", "/api/v1/admin/analytics/payments"],
)
def test_a_merchant_token_on_an_admin_api_is_403_with_code_7(
    http: httpx.Client, mint_token: Token, path: str
) -> None:
    reply = http.get(path, headers=bearer(mint_token("MER_edge_merchant")))
    assert_json_error(reply, 403, 7)


def test_an_unknown_api_path_is_404_with_code_5(http: httpx.Client, mint_token: Token) -> None:
    reply = http.get("/api/v1/nope", headers=bearer(mint_token("MER_edge_merchant")))
    assert_json_error(reply, 404, 5)


def test_malformed_json_is_400_with_code_3(http: httpx.Client, mint_token: Token) -> None:
    reply = http.post(
        "/api/v1/payments",
        content=b'{"amount_paisa": 100, "currency": ',
        headers={
            **bearer(mint_token("MER_edge_merchant")),
            "content-type": "application/json",
        },
    )
    assert_json_error(reply, 400, 3)


def test_client_identity_headers_cannot_override_the_token(
    http: httpx.Client, admin: dict[str, str], mint_token: Token
) -> None:
    owner = create_merchant(http, admin, "Edge Owner")
    victim = create_merchant(http, admin, "Edge Victim")
    forging = {"x-merchant-id": victim, "x-caller-role": "admin"}

    created = http.post(
        "/api/v1/payments",
        json=upi_payment(),
        headers={**bearer(mint_token(owner)), **forging},
    )
    assert created.status_code == 200, created.text
    assert created.json()["merchant_id"] == owner

    # The victim's payment stays invisible to the owner even when it claims to be the victim.
    theirs = http.post("/api/v1/payments", json=upi_payment(), headers=bearer(mint_token(victim)))
    assert theirs.status_code == 200, theirs.text
    peek = http.get(
        f"/api/v1/payments/{theirs.json()['payment_id']}",
        headers={**bearer(mint_token(owner)), **forging},
    )
    assert_json_error(peek, 404, 5)

    # A forged role does not open admin APIs either.
    assert_json_error(
        http.get("/api/v1/admin/merchants", headers={**bearer(mint_token(owner)), **forging}),
        403,
        7,
    )


def test_native_grpc_needs_a_token_and_uses_its_identity(
    stack: Stack, http: httpx.Client, admin: dict[str, str], mint_token: Token
) -> None:
    owner = create_merchant(http, admin, "Edge gRPC")
    created = http.post("/api/v1/payments", json=upi_payment(), headers=bearer(mint_token(owner)))
    assert created.status_code == 200, created.text
    payment_id = created.json()["payment_id"]
    target = stack.gateway_url.removeprefix("http://").rstrip("/")

    with grpc.insecure_channel(target) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        request = payments_pb2.GetPaymentRequest(payment_id=payment_id)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPayment(request, metadata=(("x-merchant-id", owner),), timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED

        payment = stub.GetPayment(
            request,
            metadata=(
                ("authorization", f"Bearer {mint_token(owner)}"),
                ("x-merchant-id", "MER_forged"),
            ),
            timeout=10,
        )
        assert payment.payment_id == payment_id
        assert payment.merchant_id == owner


# Found by contract fuzzing (tests/e2e/test_api_contract.py): both were HTTP 500s.


async def test_a_header_name_grpc_cannot_carry_is_a_400_that_names_it(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    reply = await api.get("/api/v1/payments", headers={**merchant["auth"], "W^8H.": "~O"})
    assert reply.status_code == 400, reply.text
    assert '"w^8h."' in reply.json()["message"]


async def test_a_body_envoy_cannot_encode_as_the_message_is_a_400_and_creates_nothing(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    body = {**upi_payment(), "metadata": {"order": {}}}  # a map of text given an object
    reply = await api.post("/api/v1/payments", json=body, headers=merchant["auth"])
    assert reply.status_code == 400, reply.text
    reasons = [d.get("reason") for d in reply.json()["details"]]
    assert "MALFORMED_REQUEST" in reasons
    listed = await api.get("/api/v1/payments", headers=merchant["auth"])
    assert listed.json()["payments"] == []


async def test_text_with_a_nul_character_is_a_400_naming_the_field(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    """Found by the fuzzer: PostgreSQL cannot store NUL, and a filter holding one was a 500."""
    reply = await api.get(
        "/api/v1/admin/reconciliation/runs", params={"provider": "upi\x00core"},
        headers=merchant["admin"],
    )  # fmt: skip
    assert reply.status_code == 400, reply.text
    assert "provider" in reply.json()["message"]
    body = {**upi_payment(), "description": "tea\x00"}
    created = await api.post("/api/v1/payments", json=body, headers=merchant["auth"])
    assert created.status_code == 400, created.text
    assert "description" in created.json()["message"]
