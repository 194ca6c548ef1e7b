"""What the local stack runs with: its environment, its ports and which parts are external.

The stack's environment is the process environment over the repository's `.env` (the
environment wins), plus the addresses the stack assigns. Defaults come from
`gateway_core.config`, the one home of the local values, so the stack, the services and the
token tool agree on them without repeating them here.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal

from dotenv import dotenv_values

from fraud.settings import Settings as FraudSettings
from gateway_core.config import LOCAL, PRODUCTION, SECRET_RULES, ConfigError, Settings
from gateway_core.db import migratable_services
from gateway_core.db.roles import (
    ProvisionError,
    ServiceRole,
    default_role,
    role_variables,
    roles_from_environment,
)
from gateway_core.services import REPO_ROOT, SERVICES, ServiceInfo
from orchestrator.settings import Settings as OrchestratorSettings
from reconciliation.settings import Settings as ReconciliationSettings
from sandbox.settings import Settings as SandboxSettings
from vault.settings import Settings as VaultSettings
from webhook.settings import Settings as WebhookSettings

PortMode = Literal["fixed", "ephemeral"]

DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
LOOPBACK = "127.0.0.1"
# The infrastructure parts, by the names STACK_EXTERNAL takes.
INFRA = ("postgres", "redis", "kafka", "smtp")
# The local broker's S3 store (localbucket, broker_store.py): next to its 19092, clear of 9000.
BROKER_STORAGE_PORT = 19093
# Set in the process environment (not only in .env, which lists every variable), these point the
# stack at the user's own SMTP server (e.g. a mail catcher), as the issue asks.
SMTP_VARIABLES = ("SMTP_HOST", "SMTP_PORT")
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
# REPLICAS=orchestrator=2,webhook=2 runs that many copies of those services. The sandbox stays
# one: its simulated providers keep their books in memory, and two copies would be two banks.
REPLICAS_VARIABLE = "REPLICAS"
SINGLE_COPY = frozenset({"sandbox"})
MAX_REPLICAS = 8
# With fixed ports, copy k (from 0) of a service listens on its ports + k * this.
REPLICA_PORT_STEP = 100
# The variable that moves a service's plain HTTP listener, by its name in the registry.
HTTP_PORT_VARIABLES = {"stream": "WEBHOOK_STREAM_PORT", "pages": "WEB_HTTP_PORT"}


class StackConfigError(ValueError):
    """The environment asks for a stack that cannot run (bad STACK_EXTERNAL, taken ports)."""


@dataclass(frozen=True)
class Copy:
    """One process of a service: the first copy has the service's name, the next `name-2`..."""

    name: str
    service: ServiceInfo
    index: int  # 0 for the first copy
    grpc_port: int
    metrics_port: int
    http_port: int  # its plain HTTP listener (the stream, the pages); 0 if it has none


def copy_name(service: ServiceInfo, index: int) -> str:
    return service.name if index == 0 else f"{service.name}-{index + 1}"


def parse_replicas(env: Mapping[str, str]) -> dict[str, int]:
    """How many copies of each service the stack runs: REPLICAS (`orchestrator=2,webhook=2`),
    one of each service it does not name."""
    counts = {s.name: 1 for s in SERVICES}
    for part in env.get(REPLICAS_VARIABLE, "").split(","):
        if not part.strip():
            continue
        name, _, count = (p.strip() for p in part.partition("="))
        if name not in counts:
            raise StackConfigError(
                f"{REPLICAS_VARIABLE} names unknown service {name!r}: use name=count pairs of"
                f" {', '.join(counts)}"
            )
        if not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
            raise StackConfigError(
                f"{REPLICAS_VARIABLE}: {name} wants a count from 1 to {MAX_REPLICAS}, got {count!r}"
            )
        if name in SINGLE_COPY and int(count) > 1:
            raise StackConfigError(
                f"{REPLICAS_VARIABLE}: {name} runs as one copy (its simulated providers keep"
                " their books in memory)"
            )
        counts[name] = int(count)
    return counts


@dataclass(frozen=True)
class Ports:
    postgres: int
    redis: int
    kafka: int
    broker_storage: int  # localbucket, where the local broker keeps its data
    gateway: int
    envoy_admin: int
    services: Mapping[str, tuple[int, int]]  # service name -> (gRPC port, metrics port)
    sandbox_http: int  # the sandbox's bank and ACS pages
    webhook_stream: int  # the webhook service's WebSocket listener (behind Envoy)
    web_http: int  # the web service's pages: checkout and dashboard (behind Envoy)
    smtp: int  # the stack's own SMTP server (unused when SMTP is external)
    # The copies after the first of each service run with REPLICAS, with their own ports.
    extra_copies: tuple[Copy, ...] = ()

    def copies(self) -> list[Copy]:
        """Every service process the stack runs, the first copy of each service first."""
        http = {"stream": self.webhook_stream, "pages": self.web_http}
        first = [
            Copy(s.name, s, 0, *self.services[s.name], http.get(s.http_listener, 0))
            for s in SERVICES
        ]
        return first + list(self.extra_copies)

    def by_owner(self) -> dict[str, int]:
        """Every port with who listens on it, for messages about taken ports."""
        owners = {
            "postgres": self.postgres,
            "redis": self.redis,
            "kafka": self.kafka,
            "kafka (storage)": self.broker_storage,
            "envoy (gateway)": self.gateway,
            "envoy (admin)": self.envoy_admin,
            "sandbox (http)": self.sandbox_http,
            "webhook (stream)": self.webhook_stream,
            "web (pages)": self.web_http,
            "smtp": self.smtp,
        }
        for name, (grpc_port, metrics_port) in self.services.items():
            owners[name] = grpc_port
            owners[f"{name} (metrics)"] = metrics_port
        for copy in self.extra_copies:
            owners[copy.name] = copy.grpc_port
            owners[f"{copy.name} (metrics)"] = copy.metrics_port
            if copy.http_port:
                owners[f"{copy.name} ({copy.service.http_listener})"] = copy.http_port
        return owners


class StackSettings(
    OrchestratorSettings,
    FraudSettings,
    VaultSettings,
    WebhookSettings,
    ReconciliationSettings,
    SandboxSettings,
):
    """Every variable of every service (the common ones of gateway_core.config and each
    service's own): what the stack configures, and what .env.example lists."""


def local_defaults() -> StackSettings:
    """Every service's defaults in local mode, without reading any environment."""
    return StackSettings.model_construct(app_env=LOCAL)


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the repository's `.env` file (the environment wins)."""
    from_file = {k: v for k, v in dotenv_values(REPO_ROOT / ".env").items() if v is not None}
    return from_file | dict(os.environ if environ is None else environ)


def external_parts(
    env: Mapping[str, str], process_env: Mapping[str, str] | None = None
) -> frozenset[str]:
    """Infrastructure the user runs elsewhere: named in STACK_EXTERNAL or at a non-local host;
    SMTP also when SMTP_HOST or SMTP_PORT is set in the process environment (`process_env`)."""
    named = {part.strip() for part in env.get("STACK_EXTERNAL", "").split(",") if part.strip()}
    unknown = named - set(INFRA)
    if unknown:
        raise StackConfigError(
            f"STACK_EXTERNAL names unknown part(s) {', '.join(sorted(unknown))}: "
            f"use a comma-separated subset of {', '.join(INFRA)}"
        )
    if not _is_local(env.get("DB_HOST", "")):
        named.add("postgres")
    if not _is_local(env.get("REDIS_HOST", "")):
        named.add("redis")
    brokers = [b.strip() for b in env.get("KAFKA_BROKERS", "").split(",") if b.strip()]
    if any(not _is_local(broker.rpartition(":")[0]) for broker in brokers):
        named.add("kafka")
    if not _is_local(env.get("SMTP_HOST", "")) or any(
        (process_env or {}).get(name, "").strip() for name in SMTP_VARIABLES
    ):
        named.add("smtp")
    return frozenset(named)


def fixed_ports(env: Mapping[str, str], replicas: Mapping[str, int] | None = None) -> Ports:
    """The well-known local ports (chosen to miss the system's 5432, 6379, 9092); copy k of a
    service REPLICAS asks for more of listens REPLICA_PORT_STEP * k above the first."""
    defaults = local_defaults()
    gateway = env.get("GATEWAY_PORT", "").strip() or str(defaults.gateway_port)
    if not gateway.isdigit():
        raise StackConfigError(f"GATEWAY_PORT must be a port number, got {gateway!r}")
    http = {"stream": defaults.webhook_stream_port, "pages": defaults.web_http_port}
    extra = []
    for service in SERVICES:
        for index in range(1, (replicas or {}).get(service.name, 1)):
            step = REPLICA_PORT_STEP * index
            http_port = http.get(service.http_listener, 0)
            extra.append(
                Copy(
                    copy_name(service, index),
                    service,
                    index,
                    service.default_port + step,
                    service.default_metrics_port + step,
                    http_port + step if http_port else 0,
                )
            )
    return Ports(
        postgres=defaults.db_port,
        redis=defaults.redis_port,
        kafka=int(defaults.kafka_brokers.rpartition(":")[2]),
        broker_storage=BROKER_STORAGE_PORT,
        gateway=int(gateway),
        envoy_admin=defaults.envoy_admin_port,
        services={s.name: (s.default_port, s.default_metrics_port) for s in SERVICES},
        sandbox_http=defaults.sandbox_http_port,
        webhook_stream=defaults.webhook_stream_port,
        web_http=defaults.web_http_port,
        smtp=defaults.smtp_port,
        extra_copies=tuple(extra),
    )


def ephemeral_ports(replicas: Mapping[str, int] | None = None) -> Ports:
    """Free ports for everything, so a test stack never collides with anything else."""
    names = [
        "postgres",
        "redis",
        "kafka",
        "broker_storage",
        "gateway",
        "envoy_admin",
        "sandbox_http",
        "webhook_stream",
        "web_http",
        "smtp",
    ]
    extra = [
        (service, index)
        for service in SERVICES
        for index in range(1, (replicas or {}).get(service.name, 1))
    ]
    count = len(names) + 2 * len(SERVICES) + 3 * len(extra)
    with ExitStack() as held:
        # Every socket stays bound until all are chosen, so no port is handed out twice.
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        free = [sock.getsockname()[1] for sock in sockets]
    infra = dict(zip(names, free, strict=False))
    rest = iter(free[len(names) :])
    return Ports(
        postgres=infra["postgres"],
        redis=infra["redis"],
        kafka=infra["kafka"],
        broker_storage=infra["broker_storage"],
        gateway=infra["gateway"],
        envoy_admin=infra["envoy_admin"],
        services={s.name: (next(rest), next(rest)) for s in SERVICES},
        sandbox_http=infra["sandbox_http"],
        webhook_stream=infra["webhook_stream"],
        web_http=infra["web_http"],
        smtp=infra["smtp"],
        extra_copies=tuple(
            Copy(copy_name(service, index), service, index, grpc_port, metrics_port, http_port)
            for (service, index), (grpc_port, metrics_port, http_port) in zip(
                extra, _each_copy_ports(rest, [s.http_listener for s, _ in extra]), strict=True
            )
        ),
    )


def _each_copy_ports(free: Iterator[int], listeners: list[str]) -> list[tuple[int, int, int]]:
    """(gRPC, metrics, HTTP) ports for each extra copy; HTTP 0 for a service without one."""
    chosen = []
    for listener in listeners:
        grpc_port, metrics_port, http_port = next(free), next(free), next(free)
        chosen.append((grpc_port, metrics_port, http_port if listener else 0))
    return chosen


def check_free(ports: Mapping[str, int]) -> None:
    """Raise naming every port (and its owner-to-be) that something already listens on."""
    taken = [f"{port} ({owner})" for owner, port in ports.items() if not _can_bind(port)]
    if taken:
        raise StackConfigError(
            f"port(s) already in use on {LOOPBACK}: {', '.join(taken)}. Another stack may be "
            "running (`make status`, `make down`); otherwise stop what holds them."
        )


def stack_env(
    base: Mapping[str, str], ports: Ports, external: frozenset[str], *, production: bool = False
) -> dict[str, str]:
    """The environment of every process of the stack, with the addresses the stack assigns.

    `production` (`make run-prod`): APP_ENV=production and no development secret filled in, so
    every secret must come from the environment or `.env` and pass production's rules."""
    defaults = local_defaults()
    env = dict(base)
    # What the stack itself must know (it reaches the infrastructure, creates the database and
    # the topics, signs test tokens, renders Envoy's JWT settings): gateway_core.config's
    # value unless set.
    for name, value in {
        "DB_HOST": defaults.db_host,
        "DB_PORT": str(defaults.db_port),
        "DB_USERNAME": defaults.db_username,
        "DB_PASSWORD": defaults.db_password,
        "DB_DATABASE": defaults.db_database,
        "DB_SSL_MODE": defaults.db_ssl_mode,
        "REDIS_HOST": defaults.redis_host,
        "REDIS_PORT": str(defaults.redis_port),
        "REDIS_PASSWORD": defaults.redis_password,
        "REDIS_DB": str(defaults.redis_db),
        "KAFKA_BROKERS": defaults.kafka_brokers,
        "KAFKA_TOPIC_PAYMENTS": defaults.kafka_topic_payments,
        "KAFKA_TOPIC_WEBHOOKS": defaults.kafka_topic_webhooks,
        "JWT_ISSUER": defaults.jwt_issuer,
        "JWT_AUDIENCE": defaults.jwt_audience,
    }.items():
        env.setdefault(name, value)
    if production:
        env["APP_ENV"] = PRODUCTION
    else:
        # The local stack is local mode, whatever the shell says: it runs on the development
        # secrets it published, which any other APP_ENV refuses.
        env["APP_ENV"] = LOCAL
        env.setdefault("JWT_SECRET", defaults.jwt_secret.get_secret_value())
        # Tests sign provider callbacks of their own with these.
        for provider, secret in defaults.callback_secrets().items():
            env.setdefault(f"PROVIDER_CALLBACK_SECRET_{provider.upper()}", secret)
        # Tests fetch settlement files with these and call the settlement ledger as
        # reconciliation.
        env.setdefault("PROVIDER_REPORT_KEYS", defaults.provider_report_keys.get_secret_value())
        env.setdefault(
            "RECONCILIATION_SERVICE_KEY", defaults.reconciliation_service_key.get_secret_value()
        )
    if "postgres" not in external:
        env |= {"DB_HOST": LOOPBACK, "DB_PORT": str(ports.postgres)}
    if "redis" not in external:
        env |= {"REDIS_HOST": LOOPBACK, "REDIS_PORT": str(ports.redis)}
    if "kafka" not in external:
        env["KAFKA_BROKERS"] = f"{LOOPBACK}:{ports.kafka}"
    if "smtp" not in external:
        env |= {"SMTP_HOST": LOOPBACK, "SMTP_PORT": str(ports.smtp)}
    env |= {"GATEWAY_PORT": str(ports.gateway), "ENVOY_ADMIN_PORT": str(ports.envoy_admin)}
    for service in SERVICES:
        env[service.addr_env] = f"{LOOPBACK}:{ports.services[service.name][0]}"
    # The sandbox serves every provider locally, wherever the stack put it, and calls back
    # through the gateway like a real provider would.
    sandbox = env["UPI_CORE_ENDPOINT"]
    env["WALLET_API_ENDPOINTS"] = json.dumps(dict.fromkeys(defaults.wallet_api_endpoints, sandbox))
    env["NETBANKING_ENDPOINT"] = sandbox
    env["CARD_ACQUIRER_ENDPOINT"] = sandbox
    env["SANDBOX_HTTP_PORT"] = str(ports.sandbox_http)
    env["WEBHOOK_STREAM_PORT"] = str(ports.webhook_stream)
    env["WEB_HTTP_PORT"] = str(ports.web_http)
    env["SANDBOX_PUBLIC_URL"] = f"http://{LOOPBACK}:{ports.sandbox_http}"
    env["GATEWAY_PUBLIC_URL"] = f"http://{LOOPBACK}:{ports.gateway}"
    # The providers' settlement reports are the sandbox's too.
    env["SETTLEMENT_REPORTS_URL"] = env["SANDBOX_PUBLIC_URL"]
    return env


def service_roles(env: Mapping[str, str], external: frozenset[str]) -> dict[str, ServiceRole]:
    """Each database service's own role, by schema (empty: every service uses DB_USERNAME).

    On the stack's own PostgreSQL the roles get the default names and fresh random passwords
    at every start (`python -m gateway_core.db provision` sets them). On an external server
    they come from DB_<SCHEMA>_USERNAME / DB_<SCHEMA>_PASSWORD when the passwords are set.
    """
    if "postgres" not in external:
        return {
            s.schema: ServiceRole(s.schema, default_role(s.schema), secrets.token_urlsafe(24))
            for s in migratable_services()
            if s.schema
        }
    schemas = [s.schema for s in migratable_services() if s.schema]
    if not any(env.get(role_variables(schema)[1]) for schema in schemas):
        return {}
    try:
        return {role.schema: role for role in roles_from_environment(env)}
    except ProvisionError as exc:
        raise StackConfigError(str(exc)) from None


def provision_env(env: Mapping[str, str], roles: Mapping[str, ServiceRole]) -> dict[str, str]:
    """The administrator's environment plus every service role, for the provision command."""
    provisioning = dict(env)
    for role in roles.values():
        user_var, password_var = role_variables(role.schema)
        provisioning |= {user_var: role.username, password_var: role.password}
    return provisioning


def service_env(
    env: Mapping[str, str], service: ServiceInfo, roles: Mapping[str, ServiceRole]
) -> dict[str, str]:
    """`env` with the database credentials `service` connects with: its own role, the shared
    DB_USERNAME when the stack has no roles, none when it keeps no data in PostgreSQL."""
    role = roles.get(service.schema or "")
    if role is not None:
        return dict(env) | {"DB_USERNAME": role.username, "DB_PASSWORD": role.password}
    if service.schema and not roles:
        return dict(env)
    return dict(env) | {"DB_USERNAME": "", "DB_PASSWORD": ""}


def dsn(env: Mapping[str, str]) -> str:
    """PostgreSQL URL of the stack's database, built the way the services build theirs."""
    names = ("DB_HOST", "DB_PORT", "DB_USERNAME", "DB_PASSWORD", "DB_DATABASE", "DB_SSL_MODE")
    fields: dict[str, Any] = {name.lower(): env[name] for name in names if name in env}
    return Settings.model_construct(**fields).dsn


def _is_local(host: str) -> bool:
    return host.strip().strip("[]").lower() in _LOCAL_HOSTS


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR: a port in TIME_WAIT from the last run is free; a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def production_secret_problems(env: Mapping[str, str]) -> str | None:
    """Why these settings' secrets would be refused under APP_ENV=production (every secret
    named at once), or None: `make run-prod` checks before it starts anything."""
    given = {name: env[name.upper()] for name in SECRET_RULES if name.upper() in env}
    try:
        settings = Settings.model_validate(given | {"app_env": PRODUCTION})
        settings.secrets(*SECRET_RULES)
        settings.callback_secrets()
        settings.report_keys()
    except (ConfigError, ValueError) as exc:
        return str(exc)
    return None
