"""The API's contract, from the OpenAPI description the gateway serves, through Envoy.

Fuzzing (schemathesis): every operation, called with generated input under a merchant's and an
admin's token, answers without a server error, within the timeout, and as the description says.

Authorization sweep: every operation that takes an id refuses another merchant with 404 and
changes nothing, and every admin operation refuses a merchant's token, over REST and over native
gRPC. A new operation is swept automatically; one whose path takes an id the sweep cannot make
fails until `make_resources` learns it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest
import schemathesis
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from hypothesis import HealthCheck, settings
from schemathesis import checks

from devstack.stack import Stack
from gateway_core.services import REPO_ROOT

EXAMPLES = 15
TIMEOUT_S = 10
# What the gateway promises: no 5xx, answers that match the description (schema, status code,
# content type), in time. (schemathesis's REST-style extras, such as 405 for a method the
# description does not list, are not promises of a gRPC-transcoding gateway.)
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.status_code_conformance,
    checks.content_type_conformance,
]


# Operations whose issue has not landed answer 501 UNIMPLEMENTED, which is honest; they are
# fuzzed like the rest once built. The list cannot go stale: test_what_is_not_built_says_so
# fails for an operation on it that answers anything else.
NOT_BUILT: set[str] = set()

# The description `make gen` generated (the one Envoy serves, tests/e2e/test_api_docs.py).
schema = schemathesis.openapi.from_path(REPO_ROOT / "gen" / "openapi.json")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)
def test_as_a_merchant(case: Any, gateway_url: str, merchant: dict[str, Any]) -> None:
    _call(case, gateway_url, merchant["auth"])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_as_an_admin(case: Any, gateway_url: str, mint_token: Any) -> None:
    _call(case, gateway_url, {"Authorization": f"Bearer {mint_token('admin', role='admin')}"})


def _call(case: Any, gateway_url: str, auth: dict[str, str]) -> None:
    if case.operation.label in NOT_BUILT:
        response = case.call(base_url=gateway_url, headers=auth, timeout=TIMEOUT_S)
        assert response.status_code < 500 or response.status_code == 501, response.text
        return
    case.call_and_validate(base_url=gateway_url, headers=auth, timeout=TIMEOUT_S, checks=CHECKS)


def test_what_is_not_built_says_so(gateway_url: str, mint_token: Any) -> None:
    auth = {"Authorization": f"Bearer {mint_token('admin', role='admin')}"}
    for label in sorted(NOT_BUILT):
        verb, path = label.split(" ", 1)
        url = gateway_url + path.replace("{", "").replace("}", "")
        reply = httpx.request(verb, url, headers=auth, json={} if verb == "POST" else None)
        assert reply.status_code == 501, f"{label} answers {reply.status_code}: fuzz it now"


# -- authorization sweep ------------------------------------------------------------------

SPEC = json.loads((REPO_ROOT / "gen" / "openapi.json").read_text())
VERBS = ("get", "post", "put", "patch", "delete")
OPERATIONS = [
    (f"{verb.upper()} {path}", op)
    for path, item in SPEC["paths"].items()
    for verb, op in item.items()
    if verb in VERBS
]
FUTURE_YEAR = str(time.gmtime().tm_year + 3)


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (REPO_ROOT / "gen" / "descriptors.pb").read_bytes()
    )
    for proto in files.file:
        pool.Add(proto)
    return pool


POOL = _pool()


def _grpc_call(
    channel: grpc.Channel, method: str, fields: dict[str, Any], token: str
) -> grpc.StatusCode:
    service_name, method_name = method.strip("/").split("/")
    descriptor = POOL.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    request = json_format.ParseDict(fields, request_class(), ignore_unknown_fields=True)
    call = channel.unary_unary(
        method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Any:
    with grpc.insecure_channel(stack.gateway_grpc_target) as opened:
        yield opened


async def make_resources(
    api: httpx.AsyncClient, owner: dict[str, Any], stack: Stack
) -> dict[str, str]:
    """One of each resource an id in a path names, owned by `owner`: parameter → id."""
    payment = await api.post(
        "/api/v1/payments",
        headers=owner["auth"],
        json={
            "amount_paisa": 5000,
            "currency": "INR",
            "payment_method": "CARD",
            "capture_method": "MANUAL",
            "payment_details": {
                "card": {
                    "card_number": "5555555555554444",
                    "expiry_month": "12",
                    "expiry_year": FUTURE_YEAR,
                    "cvv": "123",
                    "holder_name": "Asha Rao",
                }
            },
        },
    )
    assert payment.status_code == 200, payment.text
    user = f"cust-{uuid.uuid4().hex[:8]}"
    saved = await api.post(
        "/api/v1/payment-methods/tokenize",
        headers=owner["auth"],
        json={
            "user_id": user,
            "type": "CARD",
            "details": {
                "card_number": "4111111111111111",
                "expiry_month": "07",
                "expiry_year": FUTURE_YEAR,
                "cvv": "321",
                "holder_name": "Asha Rao",
            },
        },
    )
    assert saved.status_code == 200, saved.text
    # 127.0.0.2 is the test stack's allowed webhook address (WEBHOOK_ALLOWED_CIDRS); nothing
    # listens on port 9, so the test event's delivery stays there to be replayed.
    webhook = await api.post(
        "/api/v1/webhooks",
        headers=owner["auth"],
        json={"url": "http://127.0.0.2:9/hook", "events": ["payment.success"]},
    )
    assert webhook.status_code == 200, webhook.text
    webhook_id = webhook.json()["webhook_id"]
    tested = await api.post(f"/api/v1/webhooks/{webhook_id}/test", headers=owner["auth"], json={})
    assert tested.status_code == 200, tested.text
    deliveries: list[dict[str, Any]] = []
    for _ in range(50):
        listed = await api.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=owner["auth"])
        deliveries = listed.json().get("deliveries", [])
        if deliveries:
            break
        await asyncio.sleep(0.2)
    assert deliveries, "the test event made no delivery"
    dispute_id = await _make_dispute(api, owner, stack)
    return {
        "dispute_id": dispute_id,
        "webhook_id": webhook_id,
        "delivery_id": deliveries[0]["delivery_id"],
        "payment_id": payment.json()["payment_id"],
        "user_id": user,
        "payment_method_id": saved.json()["payment_method_id"],
        "merchant_id": owner["merchant_id"],
    }


async def _make_dispute(api: httpx.AsyncClient, owner: dict[str, Any], stack: Stack) -> str:
    """A captured card payment of `owner`'s and a dispute its acquirer raised on it."""
    paid = await api.post(
        "/api/v1/payments",
        headers=owner["auth"],
        json={
            "amount_paisa": 7000,
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
        },
    )
    assert paid.status_code == 200, paid.text
    payment = paid.json()
    assert payment["status"] == "SUCCESS", payment
    async with httpx.AsyncClient(timeout=10) as client:
        raised = await client.post(
            f"{stack.env['SANDBOX_PUBLIC_URL']}/disputes",
            json={"provider": payment["provider"], "payment_id": payment["payment_id"]},
        )
    assert raised.status_code == 200, raised.text
    for _ in range(100):
        listed = await api.get(
            "/api/v1/disputes", params={"payment_id": payment["payment_id"]}, headers=owner["auth"]
        )
        if disputes := listed.json().get("disputes", []):
            return str(disputes[0]["dispute_id"])
        await asyncio.sleep(0.2)
    raise AssertionError("the sandbox's dispute never reached the gateway")


async def _owner_state(api: httpx.AsyncClient, owner: dict[str, Any], ids: dict[str, str]) -> Any:
    payment = await api.get(f"/api/v1/payments/{ids['payment_id']}", headers=owner["auth"])
    methods = await api.get(
        f"/api/v1/users/{ids['user_id']}/payment-methods", headers=owner["auth"]
    )
    dispute = await api.get(f"/api/v1/disputes/{ids['dispute_id']}", headers=owner["auth"])
    return payment.json(), methods.json(), dispute.json()


def _merchant_operations() -> list[tuple[str, dict[str, Any]]]:
    return [
        (label, op)
        for label, op in OPERATIONS
        if "{" in label
        and "x-required-role" not in op
        and op.get("security") != []  # provider callbacks: signed, not a merchant's
        and label not in NOT_BUILT
    ]


async def test_another_merchants_ids_are_not_found_and_nothing_changes(
    api: httpx.AsyncClient,
    merchant: dict[str, Any],
    mint_token: Any,
    channel: Any,
    stack: Stack,
) -> None:
    owner = merchant
    ids = await make_resources(api, owner, stack)
    before = await _owner_state(api, owner, ids)
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    other = (
        await api.post("/api/v1/admin/merchants", json={"name": "Other shop"}, headers=admin)
    ).json()
    other_token = mint_token(other["merchant_id"])
    swept = []
    for label, op in _merchant_operations():
        verb, path = label.split(" ", 1)
        params = [p["name"] for p in op.get("parameters", []) if p.get("in") == "path"]
        unknown = [name for name in params if name not in ids]
        assert not unknown, f"{label}: the sweep cannot make a {unknown}: teach make_resources"
        url = path.format(**ids)
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        # An empty body: valid for every operation here, so only ownership decides the answer.
        example: dict[str, Any] | None = {} if body else None
        reply = await api.request(
            verb, url, json=example, headers={"Authorization": f"Bearer {other_token}"}
        )
        if params == ["user_id"]:
            # A user id is the merchant's own label: the other merchant's user of that name
            # has nothing, and nothing of the owner's shows.
            assert reply.status_code == 200, (label, reply.text)
            assert ids["payment_method_id"] not in reply.text, label
        else:
            assert reply.status_code == 404, (label, reply.status_code, reply.text)
        fields = {name: ids[name] for name in params} | (example or {})
        code = _grpc_call(channel, op["x-grpc-method"], fields, other_token)
        expected = grpc.StatusCode.OK if params == ["user_id"] else grpc.StatusCode.NOT_FOUND
        assert code == expected, (label, "gRPC", code)
        swept.append(label)
    assert "GET /api/v1/payments/{payment_id}" in swept, swept
    assert "POST /api/v1/disputes/{dispute_id}/evidence" in swept, swept
    assert "POST /api/v1/disputes/{dispute_id}/accept" in swept, swept
    assert await _owner_state(api, owner, ids) == before


async def test_every_admin_operation_refuses_a_merchant(
    api: httpx.AsyncClient, merchant: dict[str, Any], channel: Any
) -> None:
    token = merchant["auth"]["Authorization"].removeprefix("Bearer ")
    admin_ops = [(label, op) for label, op in OPERATIONS if op.get("x-required-role") == "admin"]
    assert admin_ops
    for label, op in admin_ops:
        verb, path = label.split(" ", 1)
        url = path.replace("{", "").replace("}", "")
        reply = await api.request(verb, url, json={} if verb != "GET" else None,
                                  headers=merchant["auth"])  # fmt: skip
        assert reply.status_code == 403, (label, reply.status_code, reply.text)
        code = _grpc_call(channel, op["x-grpc-method"], {}, token)
        assert code == grpc.StatusCode.PERMISSION_DENIED, (label, "gRPC", code)
