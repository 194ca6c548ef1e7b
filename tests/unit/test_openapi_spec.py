"""The OpenAPI description generated from the protos (tools/openapi_spec.py) is valid OpenAPI
3.1 and says what Envoy actually serves: every transcoded method, the printed field names,
enums as strings, 64-bit integers as strings, the error body, who may call what."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from gateway_core.services import SERVICES
from openapi_spec import build

ROOT = Path(__file__).resolve().parents[2]
VERBS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def files() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "gen" / "descriptors.pb").read_bytes()
    )


@pytest.fixture(scope="module")
def spec(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    return build(files, "1.2.3")


def _operations(spec: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (verb, path, op)
        for path, item in spec["paths"].items()
        for verb, op in item.items()
        if verb in VERBS
    }


def test_it_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["version"] == "1.2.3"


def test_every_http_rule_of_a_routed_service_is_an_operation(
    files: descriptor_pb2.FileDescriptorSet, spec: dict[str, Any]
) -> None:
    public = {g for s in SERVICES if s.public for g in s.grpc_services}
    expected = {}
    for proto in files.file:
        for service in proto.service:
            full = f"{proto.package}.{service.name}"
            for method in service.method:
                if full in public and method.options.HasExtension(annotations_pb2.http):
                    expected[method.name] = f"/{full}/{method.name}"
    operations = _operations(spec)
    assert expected
    assert {name: op["x-grpc-method"] for name, (_, _, op) in operations.items()} == expected
    # The vault and fraud services are not routed by Envoy: none of theirs is described.
    assert not any("/paygate.vault." in m or "/paygate.fraud." in m for m in expected.values())


def test_create_payment_reads_as_a_merchant_would_send_it(spec: dict[str, Any]) -> None:
    verb, path, op = _operations(spec)["CreatePayment"]
    assert (verb, path) == ("post", "/api/v1/payments")
    schemas = spec["components"]["schemas"]
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    request = schemas[body]
    assert "amount_paisa" in request["properties"]  # the printed (proto) names
    assert "amount_paisa" in request["required"]
    assert request["properties"]["amount_paisa"]["type"] == "integer"
    example = op["requestBody"]["content"]["application/json"]["example"]
    assert example["amount_paisa"] == 10000
    assert example["currency"] == "INR"
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in op["parameters"]
    method = schemas["payments.v1.PaymentMethod"]
    assert method["type"] == "string"
    assert "UPI" in method["enum"]
    payment = schemas["payments.v1.Payment"]
    assert payment["properties"]["fees_paisa"]["readOnly"] is True
    assert payment["properties"]["created_at"]["format"] == "date-time"


def test_path_parameters_are_required_and_left_out_of_the_body(spec: dict[str, Any]) -> None:
    _, path, op = _operations(spec)["RefundPayment"]
    assert path == "/api/v1/payments/{payment_id}/refund"
    (param,) = [p for p in op["parameters"] if p.get("in") == "path"]
    assert param == {**param, "name": "payment_id", "required": True}
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "payment_id" not in spec["components"]["schemas"][body]["properties"]


def test_list_filters_are_query_parameters(spec: dict[str, Any]) -> None:
    _, _, op = _operations(spec)["ListPayments"]
    assert "requestBody" not in op
    names = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
    assert names
    assert all(re.fullmatch(r"[a-z_.0-9]+", n) for n in names)


def test_every_operation_documents_the_error_body(spec: dict[str, Any]) -> None:
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message"}
    for _, _, op in _operations(spec).values():
        assert op["responses"]["400"] == {"$ref": "#/components/responses/400"}
        assert op["responses"]["401"] == {"$ref": "#/components/responses/401"}


def test_who_may_call_what(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    for _, path, op in _operations(spec).values():
        if path.startswith("/api/v1/admin/"):
            assert op["x-required-role"] == "admin"
        if path.startswith("/api/v1/provider-callbacks/"):
            assert op["security"] == []  # signed by the provider instead
