"""The OpenAPI 3.1 description of the public REST API, generated from the protos.

Envoy transcodes REST to gRPC with the descriptor set `make gen` builds (gen/descriptors.pb);
this reads the same set, so the description cannot drift from what Envoy serves: every method
with a `google.api.http` rule of a service Envoy routes (gateway_core.services) becomes an
operation; messages and enums become schemas, with the field names the gateway prints
(`preserve_proto_field_names`), enums as strings, the comments as descriptions, field behaviours
as `required`/`readOnly`, and the error body every failure carries. Written to gen/openapi.json
by tools/gen_protos.py (never committed); Envoy serves it at /api/v1/openapi.json.

    python tools/openapi_spec.py gen/descriptors.pb gen/openapi.json [version]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from gateway_core.services import SERVICES

FD = descriptor_pb2.FieldDescriptorProto
TITLE = "Payment gateway API"
OPENAPI_PATH = "/api/v1/openapi.json"
ADMIN_PREFIX = "/api/v1/admin/"
SIGNED_CALLBACK_PREFIX = "/api/v1/provider-callbacks/"
# Proto3 JSON: 64-bit integers travel as strings (JavaScript numbers cannot hold them).
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types have their own JSON forms.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}
HTTP_BODY = "google.api.HttpBody"
# Example values for string fields whose name contains the hint (first hint that matches).
_EXAMPLE_STRINGS = (
    ("currency", "INR"),
    ("url", "https://merchant.example/payments/hook"),
    ("email", "customer@example.com"),
    ("vpa", "success@upi"),
    ("phone", "9876543210"),
    ("event", "payment.success"),
)
# What every failure carries: google.rpc.Status as Envoy's transcoder renders it.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "A failed request: the gRPC status code, a message naming each field at fault and the "
        "rule it broke, and details: always a google.rpc.ErrorInfo (a stable `reason`, domain "
        "`paygate`), and a google.rpc.BadRequest listing field violations when input is at fault."
    ),
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "gRPC status code"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["@type"],
                "properties": {
                    "@type": {
                        "type": "string",
                        "examples": ["type.googleapis.com/google.rpc.ErrorInfo"],
                    },
                    "reason": {"type": "string", "examples": ["INVALID_FIELD"]},
                    "domain": {"type": "string", "examples": ["paygate"]},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "field_violations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "description": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
    "examples": [
        {
            "code": 3,
            "message": "amount_paisa: must be a positive whole number of paisa",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "field_violations": [
                        {
                            "field": "amount_paisa",
                            "description": "must be a positive whole number of paisa",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "INVALID_FIELD",
                    "domain": "paygate",
                },
            ],
        }
    ],
}
ERROR_STATUSES = {
    "400": "Invalid input: the body names each field and the rule it broke; nothing changed.",
    "401": "Missing, invalid or expired bearer token.",
    "403": "The token's role may not call this operation.",
    "404": "No such resource for this caller.",
    "409": "Conflicts with the resource's current state, or the same Idempotency-Key is in use.",
    "429": "Rate limited: retry after the `Retry-After` header's seconds.",
    "503": "A dependency is unavailable: safe to retry with the same Idempotency-Key.",
}


@dataclass
class _Types:
    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = field(default_factory=dict)
    # Leading comments, by the element's fully qualified name (fields: message.field).
    comments: dict[str, str] = field(default_factory=dict)


def _index(files: descriptor_pb2.FileDescriptorSet) -> _Types:
    types = _Types()
    for proto in files.file:
        located = {tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location}

        def note(
            name: str, path: tuple[int, ...], located: dict[tuple[int, ...], str] = located
        ) -> None:
            if text := located.get(path, "").strip():
                types.comments[name] = "\n".join(line.strip() for line in text.splitlines())

        def walk_message(
            message: descriptor_pb2.DescriptorProto, scope: str, path: tuple[int, ...]
        ) -> None:
            name = f"{scope}.{message.name}"
            types.messages[name] = message
            note(name, path)
            for i, fld in enumerate(message.field):
                note(f"{name}.{fld.name}", (*path, 2, i))
            for i, nested in enumerate(message.nested_type):
                walk_message(nested, name, (*path, 3, i))
            for i, enum in enumerate(message.enum_type):
                walk_enum(enum, name, (*path, 4, i))

        def walk_enum(
            enum: descriptor_pb2.EnumDescriptorProto, scope: str, path: tuple[int, ...]
        ) -> None:
            name = f"{scope}.{enum.name}"
            types.enums[name] = enum
            note(name, path)

        package = f".{proto.package}" if proto.package else ""
        for i, message in enumerate(proto.message_type):
            walk_message(message, package, (4, i))
        for i, enum in enumerate(proto.enum_type):
            walk_enum(enum, package, (5, i))
        for i, service in enumerate(proto.service):
            name = f"{package}.{service.name}"
            types.services[name] = service
            note(name, (6, i))
            for j, method in enumerate(service.method):
                note(f"{name}.{method.name}", (6, i, 2, j))
    return types


def _schema_name(full_name: str) -> str:
    """`.paygate.payments.v1.Payment` → `payments.v1.Payment` (unique, readable)."""
    return full_name.lstrip(".").removeprefix("paygate.")


def _ref(full_name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{_schema_name(full_name)}"}


class _Builder:
    def __init__(self, types: _Types) -> None:
        self.types = types
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    # -- schemas ----------------------------------------------------------------------------

    def field_schema(self, fld: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if fld.type == FD.TYPE_MESSAGE:
            entry = self.types.messages[fld.type_name]
            if entry.options.map_entry:
                value = next(f for f in entry.field if f.name == "value")
                return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(fld)
        if fld.label == FD.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def single(self, fld: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if fld.type == FD.TYPE_ENUM:
            self.enum(fld.type_name)
            return _ref(fld.type_name)
        if fld.type == FD.TYPE_MESSAGE:
            if fld.type_name.lstrip(".") in _WELL_KNOWN:
                return dict(_WELL_KNOWN[fld.type_name.lstrip(".")])
            self.message(fld.type_name)
            return _ref(fld.type_name)
        return dict(_SCALARS[fld.type])

    def enum(self, full_name: str) -> None:
        name = _schema_name(full_name)
        if name in self.schemas:
            return
        enum = self.types.enums[full_name]
        schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.value]}
        if text := self.types.comments.get(full_name):
            schema["description"] = text
        self.schemas[name] = schema

    def message(self, full_name: str, *, without: frozenset[str] = frozenset()) -> str:
        """Adds the message's schema (less the `without` fields: path parameters) and returns
        its component name."""
        name = _schema_name(full_name) + ("Body" if without else "")
        if name in self.schemas:
            return name
        self.schemas[name] = {}  # recursion guard
        message = self.types.messages[full_name]
        properties: dict[str, Any] = {}
        required: list[str] = []
        for fld in message.field:
            if fld.name in without:
                continue
            schema = self.field_schema(fld)
            behaviors = set(fld.options.Extensions[field_behavior_pb2.field_behavior])
            if text := self.types.comments.get(f"{full_name}.{fld.name}"):
                schema = (
                    {"description": text, **schema}
                    if "$ref" not in schema
                    else {"description": text, "allOf": [schema]}
                )
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.INPUT_ONLY in behaviors:
                schema["writeOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(fld.name)
            properties[fld.name] = schema
        schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if text := self.types.comments.get(full_name):
            schema["description"] = text
        self.schemas[name] = schema
        return name

    # -- operations --------------------------------------------------------------------------

    def operations(self, service_name: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        service = self.types.services[f".{service_name}"]
        tag = service_name.split(".")[-1]
        for method in service.method:
            if not method.options.HasExtension(annotations_pb2.http):
                continue
            rule = method.options.Extensions[annotations_pb2.http]
            for binding in (rule, *rule.additional_bindings):
                verb, template = _verb_and_path(binding)
                yield template, verb, self.operation(service_name, tag, method, binding, template)

    def operation(
        self,
        service_name: str,
        tag: str,
        method: descriptor_pb2.MethodDescriptorProto,
        binding: http_pb2.HttpRule,
        path: str,
    ) -> dict[str, Any]:
        request = self.types.messages[method.input_type]
        path_params = re.findall(r"{([^}=]+)}", path)
        summary, _, description = self.types.comments.get(
            f".{service_name}.{method.name}", method.name
        ).partition("\n")
        op: dict[str, Any] = {
            "operationId": method.name,
            "tags": [tag],
            "summary": summary.rstrip("."),
            "x-grpc-method": f"/{service_name}/{method.name}",
        }
        if description.strip():
            op["description"] = description.strip()
        parameters = [
            self.parameter(method.input_type, name, "path", required=True) for name in path_params
        ]
        top = {name.split(".")[0] for name in path_params}
        if binding.body == "*":
            body = self.message(method.input_type, without=frozenset(top))
            op["requestBody"] = self.request_body(body)
        elif binding.body:
            body_field = next(f for f in request.field if f.name == binding.body)
            op["requestBody"] = {"required": True, "content": self.content(body_field)}
            top.add(binding.body)
        if binding.body != "*":
            parameters += [
                self.parameter(method.input_type, fld.name, "query")
                for fld in request.field
                if fld.name not in top and not self._is_message(fld)
            ]
        if parameters:
            op["parameters"] = parameters
        op["responses"] = {
            "200": {"description": "OK", "content": self.response_content(method.output_type)},
            **{
                status: {"$ref": f"#/components/responses/{status}"}
                for status in ERROR_STATUSES
                if status != "404" or path_params
            },
        }
        if path.startswith(SIGNED_CALLBACK_PREFIX):
            op["security"] = []
            op["description"] = (
                op.get("description", "") + "\n\nNo bearer token: the provider signs the raw "
                "body with HMAC-SHA256 under its callback secret; the signature is checked."
            ).strip()
        elif path.startswith(ADMIN_PREFIX):
            op["x-required-role"] = "admin"
            op["description"] = (op.get("description", "") + "\n\nNeeds an admin token.").strip()
        if method.name.startswith("Create") or binding.body == "*":
            op.setdefault("parameters", []).append(
                {"$ref": "#/components/parameters/IdempotencyKey"}
            )
        return op

    def _is_message(self, fld: descriptor_pb2.FieldDescriptorProto) -> bool:
        return fld.type == FD.TYPE_MESSAGE and fld.type_name.lstrip(".") not in _WELL_KNOWN

    def parameter(
        self, message_name: str, dotted: str, where: str, *, required: bool = False
    ) -> dict[str, Any]:
        message = self.types.messages[message_name]
        *parents, last = dotted.split(".")
        for part in parents:
            parent = next(f for f in message.field if f.name == part)
            message_name = parent.type_name
            message = self.types.messages[message_name]
        fld = next(f for f in message.field if f.name == last)
        schema = self.field_schema(fld)
        parameter: dict[str, Any] = {"name": dotted, "in": where, "schema": schema}
        if required:
            parameter["required"] = True
        if text := self.types.comments.get(f"{message_name}.{last}"):
            parameter["description"] = text
        if schema.get("type") == "array":
            parameter["explode"] = True
        return parameter

    def request_body(self, component: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{component}"}
        body: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": ref}}}
        if example := self.example(component):
            body["content"]["application/json"]["example"] = example
        return body

    def content(self, fld: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if fld.type_name.lstrip(".") == HTTP_BODY:
            return {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        return {"application/json": {"schema": self.field_schema(fld)}}

    def response_content(self, output_type: str) -> dict[str, Any]:
        if output_type.lstrip(".") == HTTP_BODY:
            return {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        if output_type.lstrip(".") in _WELL_KNOWN:
            return {"application/json": {"schema": dict(_WELL_KNOWN[output_type.lstrip(".")])}}
        return {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/" + self.message(output_type)}
            }
        }

    def example(self, component: str, depth: int = 0) -> Any:
        """A request example: each required field (all fields at the top level) with a value of
        its type, enums at their first real value."""
        schema = self.schemas.get(component, {})
        if depth > 3 or schema.get("type") != "object":
            return None
        wanted = schema.get("required") or list(schema.get("properties", {}))
        example: dict[str, Any] = {}
        for name in wanted:
            prop = schema["properties"][name]
            if prop.get("readOnly"):
                continue
            value = self._example_value(name, prop, depth)
            if value is not None:
                example[name] = value
        return example or None

    def _example_value(self, name: str, prop: dict[str, Any], depth: int) -> Any:
        target = prop.get("$ref") or (prop.get("allOf") or [{}])[0].get("$ref")
        if target:
            referenced = target.rsplit("/", 1)[1]
            enum = self.schemas.get(referenced, {}).get("enum")
            if enum:
                return next((v for v in enum if not v.endswith("UNSPECIFIED")), enum[0])
            return self.example(referenced, depth + 1)
        kind = prop.get("type")
        if kind == "array":
            item = self._example_value(name, prop.get("items", {}), depth)
            return None if item is None else [item]
        if kind == "integer":
            return 10000 if name.endswith("paisa") else 1
        if kind == "boolean":
            return False
        if kind == "string" and prop.get("format") == "date-time":
            return "2026-01-01T00:00:00Z"
        if kind == "string":
            return next(
                (value for hint, value in _EXAMPLE_STRINGS if hint in name), f"{name}-example"
            )
        return None


def _verb_and_path(binding: http_pb2.HttpRule) -> tuple[str, str]:
    verb = binding.WhichOneof("pattern")
    if verb == "custom":
        return binding.custom.kind.lower(), binding.custom.path
    assert verb is not None
    path = getattr(binding, verb)
    # `{name=pattern}` segments are plain `{name}` parameters in OpenAPI.
    return verb, re.sub(r"{([^}=]+)=[^}]*}", r"{\1}", path)


def build(files: descriptor_pb2.FileDescriptorSet, version: str) -> dict[str, Any]:
    types = _index(files)
    builder = _Builder(types)
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for service in SERVICES:
        if not service.public:
            continue
        for grpc_service in service.grpc_services:
            if f".{grpc_service}" not in types.services:
                continue
            described = False
            for path, verb, operation in builder.operations(grpc_service):
                paths.setdefault(path, {})[verb] = operation
                described = True
            if described:
                tag: dict[str, Any] = {"name": grpc_service.split(".")[-1]}
                if text := types.comments.get(f".{grpc_service}"):
                    tag["description"] = text
                tags.append(tag)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": version,
            "description": (
                "The public REST API, transcoded by Envoy to the gateway's gRPC services "
                "(each operation's `x-grpc-method`). Amounts are integer paisa. Every request "
                "needs a bearer JWT (HS256) unless the operation says otherwise. Generated from "
                "the protos; never edited by hand."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "this gateway"}],
        "security": [{"bearerAuth": []}],
        "tags": sorted(tags, key=lambda t: t["name"]),
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`sub`: the merchant id (or `admin`), `role`: merchant or "
                    "admin; issuer and audience as configured (JWT_ISSUER, JWT_AUDIENCE).",
                }
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Retry-safe key: a retry with the same key and body gets the "
                    "first result; while the first is running, 409 IDEMPOTENCY_IN_PROGRESS.",
                    "schema": {"type": "string", "maxLength": 255},
                }
            },
            "responses": {
                status: {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for status, text in ERROR_STATUSES.items()
            },
            "schemas": dict(sorted(builder.schemas.items())),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    files = descriptor_pb2.FileDescriptorSet.FromString(Path(args[0]).read_bytes())
    version = args[2] if len(args) == 3 else "0.0.0"
    Path(args[1]).write_text(json.dumps(build(files, version), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
