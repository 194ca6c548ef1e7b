"""Configuration from the environment, with the seed's variable names.

`Settings` here is what every service shares; each service with settings of its own subclasses
it in `<service>.settings` (orchestrator, fraud, vault, webhook, reconciliation, sandbox) and
reads that class. Variable names, defaults and .env.example are the same either way.

Real environment variables win over a `.env` file in the working directory, which wins over the
defaults below. The defaults are the local stack's (loopback, non-standard ports, sandbox keys),
so a fresh checkout runs without any configuration and production overrides every one of them.

Secrets fail closed: their defaults are published (here and in .env.example), so only an
explicit APP_ENV=local accepts them. Anywhere else `Settings.secret` refuses a secret that is
not set, shorter than 32 bytes, or equal to any published value (SECRET_RULES), and every
service checks the secrets it holds before it starts (gateway_core.server.ServiceApp).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Annotated, Literal, TypeVar, overload
from urllib.parse import quote

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from gateway_core.limits import MAX_AMOUNT_PAISA

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class ConfigError(ValueError):
    """The environment does not describe a valid configuration; says which variables are wrong."""


# The one APP_ENV that accepts the published development secrets: the local stack and the tests
# set it; anything else, or no APP_ENV at all, is treated as production.
LOCAL = "local"
PRODUCTION = "production"

# Providers that call the gateway back (POST /api/v1/provider-callbacks/{provider}). Each signs
# with a secret of its own, PROVIDER_CALLBACK_SECRET_<PROVIDER>, so a secret that leaks lets
# nobody forge another provider's callbacks. The card acquirers call back with chargebacks
# (disputes) and their outcomes.
CALLBACK_PROVIDERS = ("upi_core", "netbanking", "acs", "razorpay", "payu", "ccavenue")

# RFC 7518 §3.2: an HMAC-SHA256 key at least as long as the hash; AES-256 wants as much.
SECRET_MIN_BYTES = 32


@dataclass(frozen=True)
class SecretRule:
    """What a secret setting must be. Outside APP_ENV=local: set, at least `min_bytes` long, and
    not a published value. Locally: not empty (when `required`), and the length too where
    `min_bytes_in_local` (JWT_SECRET: Envoy's HS256 key is never weak)."""

    min_bytes: int = SECRET_MIN_BYTES
    required: bool = True
    min_bytes_in_local: bool = False


SECRET_RULES: Mapping[str, SecretRule] = {
    # Keys the gateway's operators generate: their strength is ours to demand.
    "jwt_secret": SecretRule(min_bytes_in_local=True),
    "encryption_key": SecretRule(),
    "orchestrator_service_key": SecretRule(),
    "idempotency_fingerprint_key": SecretRule(),
    "reconciliation_service_key": SecretRule(),
    # A JSON object of keys: Settings.report_keys() checks each key by the rules above. Empty:
    # no provider's reports can be read (the sandbox answers 401 to every request).
    "provider_report_keys": SecretRule(min_bytes=0, required=False),
    **{f"provider_callback_secret_{provider}": SecretRule() for provider in CALLBACK_PROVIDERS},
    # Credentials someone else issues (the acquirer; the database's owner, who may use
    # certificate or IAM authentication and no password): their length is not ours to set,
    # but a published one is refused all the same.
    "card_gateway_api_key": SecretRule(min_bytes=0),
    "db_password": SecretRule(min_bytes=0, required=False),
}

# Placeholders the seed's README published and values earlier versions of .env.example shipped:
# as well known as the defaults themselves.
PUBLISHED_PLACEHOLDERS = frozenset(
    {
        "your-jwt-secret",
        "your-32-byte-encryption-key",
        "your-card-gateway-key",
        "your_password",
        "local-dev-provider-callback-secret",
    }
)

# The simulated providers' settlement-report API keys (PROVIDER_REPORT_KEYS), one per provider,
# as the sandbox's settlement files name the providers.
LOCAL_PROVIDER_REPORT_KEYS: Mapping[str, str] = {
    provider: f"local-dev-report-key-{provider.replace('_', '-')}-0123456789"
    for provider in (
        "upi_core",
        "razorpay",
        "payu",
        "ccavenue",
        "paytm",
        "phonepe",
        "google_pay",
        "amazon_pay",
        "netbanking",
    )
}

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """A positive Go-style duration as the seed writes them ("250ms", "30s", "90m", "24h",
    "5d", "1h30m"), or a plain number of seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.fullmatch(value):
            raise ValueError(
                f"{text!r} is not a duration: write e.g. 500ms, 30s, 90m, 24h, 5d or 1h30m"
            ) from None
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _duration_seconds(value: object) -> object:
    return parse_duration(value).total_seconds() if isinstance(value, str) else value


# A length of time from the environment ("24h", "5d", "1h30m" or seconds), as a timedelta or,
# for settings handed to libraries that count in seconds, as a float.
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Seconds = Annotated[float, BeforeValidator(_duration_seconds)]


class Settings(BaseSettings):
    """What every service shares: how it serves and is observed, how it reaches PostgreSQL,
    Redis, Kafka and the other services, and every secret (their rules and published defaults
    are one list). A service's own behaviour is in its `<service>.settings.Settings` subclass."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
    )

    # "local" (the developer stack and the tests set it) accepts the published development
    # secrets below; any other value, and an unset APP_ENV, refuses them (fail closed).
    app_env: str = PRODUCTION

    # Server: where this process serves gRPC (each process gets its own port from its launcher).
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=50061, ge=0, le=65535)
    server_read_timeout: str = "30s"
    server_write_timeout: str = "30s"

    # Database
    db_host: str = "127.0.0.1"
    db_port: int = Field(default=15432, ge=1, le=65535)
    db_username: str = "postgres"
    # Plain strings for drivers that take them as is; repr=False keeps them out of reprs.
    db_password: str = Field(default="postgres", repr=False)
    db_database: str = "payments"
    db_ssl_mode: SslMode = "disable"
    db_max_open_conns: int = Field(default=25, ge=1)
    db_max_idle_conns: int = Field(default=5, ge=0)
    # Longest one statement may run before it is cancelled, and longest a caller waits for a
    # free pooled connection; either answers UNAVAILABLE (HTTP 503, reason DATABASE_TIMEOUT).
    db_command_timeout: Seconds = Field(default=10.0, gt=0, allow_inf_nan=False)
    db_acquire_timeout: Seconds = Field(default=5.0, gt=0, allow_inf_nan=False)

    # Redis
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=16379, ge=1, le=65535)
    redis_password: str = Field(default="", repr=False)
    redis_db: int = Field(default=0, ge=0)

    # Kafka
    kafka_brokers: str = "127.0.0.1:19092"
    kafka_group_id: str = "payments-service"
    kafka_topic_payments: str = "payments.events"
    kafka_topic_webhooks: str = "webhooks.delivery"

    # Security
    jwt_secret: SecretStr = SecretStr("local-dev-jwt-secret-change-me-0123456789")
    jwt_issuer: str = "payment-gateway"
    jwt_audience: str = "payments-api"
    # Longest bearer token Envoy accepts (its exp at most this far ahead) and `make token` mints.
    jwt_max_lifetime: Duration = Field(default=timedelta(hours=24), ge=timedelta(seconds=1))
    encryption_key: SecretStr = SecretStr("local-dev-encryption-key-32bytes")
    pci_compliance_mode: bool = True
    # The orchestrator's own HS256 key for its service identity (gateway_core.service_auth):
    # the orchestrator signs its x-service-token with it, the vault verifies with it. No other
    # service holds it, so no other service can call the vault as the orchestrator.
    orchestrator_service_key: SecretStr = SecretStr("local-dev-orchestrator-service-key-0123456789")
    # HMAC key of the orchestrator's idempotency-request fingerprints (at least 32 bytes): with
    # it, a stored fingerprint cannot be brute-forced back to the request's card data.
    idempotency_fingerprint_key: SecretStr = SecretStr(
        "local-dev-idempotency-fingerprint-key-0123456789"
    )

    # The reconciliation service's HS256 key for its service identity: it signs its
    # x-service-token with it, and the orchestrator's internal settlement ledger
    # (paygate.ledger.v1.SettlementLedgerService) trusts that identity and no other.
    reconciliation_service_key: SecretStr = SecretStr(
        "local-dev-reconciliation-service-key-0123456789"
    )
    # Each provider's API key for its settlement reports (a JSON object {provider: key}): the
    # sandbox checks it on GET /settlements/..., reconciliation presents it. Settings.report_keys.
    provider_report_keys: SecretStr = SecretStr(
        json.dumps(LOCAL_PROVIDER_REPORT_KEYS, separators=(",", ":"))
    )

    # The card acquirer's API key.
    card_gateway_api_key: SecretStr = SecretStr("sandbox-card-key")
    # HMAC keys of provider callbacks (x-provider-signature), one per provider
    # (CALLBACK_PROVIDERS): the provider (the sandbox) signs, the orchestrator verifies with the
    # key of the provider named in the callback's path.
    provider_callback_secret_upi_core: SecretStr = SecretStr(
        "local-dev-callback-secret-upi-core-0123456789"
    )
    provider_callback_secret_netbanking: SecretStr = SecretStr(
        "local-dev-callback-secret-netbanking-0123456789"
    )
    provider_callback_secret_acs: SecretStr = SecretStr("local-dev-callback-secret-acs-0123456789")
    provider_callback_secret_razorpay: SecretStr = SecretStr(
        "local-dev-callback-secret-razorpay-0123456789"
    )
    provider_callback_secret_payu: SecretStr = SecretStr(
        "local-dev-callback-secret-payu-0123456789"
    )
    provider_callback_secret_ccavenue: SecretStr = SecretStr(
        "local-dev-callback-secret-ccavenue-0123456789"
    )

    # Plain HTTP listeners, which Envoy (and the local stack) must know too. The sandbox's serves
    # the bank pages a customer's browser is sent to, and UPI controls for tests and demos.
    sandbox_http_port: int = Field(default=18090, ge=0, le=65535)
    # The webhook service's WebSocket listener (GET /api/v1/payments/{id}/stream, through
    # Envoy, which reaches it at WEBHOOK_ADDR's host on this port).
    webhook_stream_port: int = Field(default=18091, ge=0, le=65535)
    # The web service's HTTP listener: the hosted checkout page and the dashboard (Envoy routes
    # /checkout/, /dashboard and /static/ to WEB_ADDR's host on this port).
    web_http_port: int = Field(default=18092, ge=0, le=65535)

    # Monitoring
    enable_metrics: bool = True
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    jaeger_endpoint: str = ""
    log_level: LogLevel = "INFO"

    # Services: how clients reach each other (host:port; a leading http:// is ignored)
    orchestrator_addr: str = "127.0.0.1:50061"
    fraud_addr: str = "127.0.0.1:50062"
    vault_addr: str = "127.0.0.1:50063"
    webhook_addr: str = "127.0.0.1:50064"
    reconciliation_addr: str = "127.0.0.1:50065"
    web_addr: str = "127.0.0.1:50068"
    ratelimit_addr: str = "127.0.0.1:50067"

    # Gateway (Envoy)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    envoy_admin_port: int = Field(default=19901, ge=1, le=65535)
    # The gateway's public base URL, as providers reach it (their callbacks go through Envoy).
    gateway_public_url: str = "http://127.0.0.1:8080"

    # The largest payment: the orchestrator refuses more, the checkout page offers no more.
    max_payment_amount_paisa: int = Field(default=100_000_000, ge=1, le=MAX_AMOUNT_PAISA)
    shutdown_grace_seconds: float = Field(default=10, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("kafka_brokers")
    @classmethod
    def _brokers_not_empty(cls, value: str) -> str:
        if not [b for b in value.split(",") if b.strip()]:
            raise ValueError("needs at least one host:port")
        return value

    @property
    def is_local(self) -> bool:
        return self.app_env == LOCAL

    def secret(self, name: str) -> str:
        """The value of secret setting `name` (SECRET_RULES); ConfigError if it breaks a rule."""
        return self.secrets(name)[name]

    def secrets(self, *names: str) -> dict[str, str]:
        """Several secrets by setting name; the ConfigError names every one that breaks a rule."""
        problems = [problem for name in names if (problem := self._secret_problem(name))]
        if problems:
            where = "" if self.is_local else f" (APP_ENV={self.app_env or '(empty)'})"
            raise ConfigError(
                f"refusing these secrets{where}: {'; '.join(problems)}. A secret must be set and "
                f"at least {SECRET_MIN_BYTES} bytes (JWT_SECRET even under APP_ENV=local; "
                "credentials others issue, such as DB_PASSWORD, excepted), and outside "
                "APP_ENV=local never a value published in .env.example or the code. Generate "
                "one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return {name: _plain(getattr(self, name)) for name in names}

    def callback_secrets(self) -> dict[str, str]:
        """Each provider's callback HMAC key, by provider name (CALLBACK_PROVIDERS); two
        providers sharing one key is refused, since either could then forge the other's."""
        names = {
            provider: f"provider_callback_secret_{provider}" for provider in CALLBACK_PROVIDERS
        }
        values = self.secrets(*names.values())
        uses = Counter(values.values())
        shared = sorted(name.upper() for name, value in values.items() if uses[value] > 1)
        if shared:
            raise ConfigError(
                f"{' and '.join(shared)} are equal: each provider needs a callback secret of its "
                "own, or one provider's key forges the other's callbacks"
            )
        return {provider: values[name] for provider, name in names.items()}

    def report_keys(self) -> dict[str, str]:
        """Each provider's settlement-report API key (PROVIDER_REPORT_KEYS), by provider. Each
        key is held to the secret rules on its own, and two providers sharing one is refused,
        since either could then read the other's reports."""
        raw = self.secret("provider_report_keys")
        if not raw.strip():
            return {}
        try:
            keys = json.loads(raw)
        except ValueError:
            keys = None
        if not isinstance(keys, dict) or not all(
            isinstance(provider, str) and isinstance(key, str) for provider, key in keys.items()
        ):
            raise ConfigError(
                "PROVIDER_REPORT_KEYS must be a JSON object of provider names to keys, e.g. "
                '{"upi_core": "<key>", "razorpay": "<key>"}'
            )
        problems = []
        for provider, key in sorted(keys.items()):
            size = len(key.encode())
            if not key:
                problems.append(f"the key of {provider} is empty")
            elif not self.is_local and size < SECRET_MIN_BYTES:
                problems.append(f"the key of {provider} is {size} bytes, shorter than 32")
            elif not self.is_local and key in published_secret_values():
                problems.append(f"the key of {provider} is a value published in .env.example")
        uses = Counter(keys.values())
        shared = sorted(provider for provider, key in keys.items() if key and uses[key] > 1)
        if shared:
            problems.append(f"{', '.join(shared)} share one key")
        if problems:
            raise ConfigError(
                f"refusing PROVIDER_REPORT_KEYS: {'; '.join(problems)}. Each provider needs a "
                f"key of its own, at least {SECRET_MIN_BYTES} bytes outside APP_ENV=local"
            )
        return dict(keys)

    def _secret_problem(self, name: str) -> str | None:
        rule = SECRET_RULES[name]
        variable = name.upper()
        value = _plain(getattr(self, name))
        if not self.is_local and name not in self.model_fields_set:
            return f"{variable} is not set (its built-in value is the local stack's, published)"
        if not value:
            return f"{variable} is empty" if rule.required else None
        size = len(value.encode())
        if size < rule.min_bytes and (rule.min_bytes_in_local or not self.is_local):
            return f"{variable} is {size} bytes, shorter than {rule.min_bytes}"
        if not self.is_local and value in published_secret_values():
            return f"{variable} is a value published in .env.example or the code"
        return None

    @property
    def dsn(self) -> str:
        """PostgreSQL URL for tools that want one (psql, asyncpg.connect(dsn))."""
        user = quote(self.db_username, safe="")
        password = quote(self.db_password, safe="")
        database = quote(self.db_database, safe="")
        query = f"sslmode={self.db_ssl_mode}"
        if self.db_host.startswith("/"):
            # A Unix socket directory cannot be written in the authority part of a URL.
            return f"postgresql://{user}:{password}@/{database}?host={quote(self.db_host)}&{query}"
        return f"postgresql://{user}:{password}@{self.db_host}:{self.db_port}/{database}?{query}"

    @property
    def kafka_bootstrap_servers(self) -> list[str]:
        return [b.strip() for b in self.kafka_brokers.split(",") if b.strip()]


S = TypeVar("S", bound=Settings)


def published_secret_values() -> frozenset[str]:
    """Every secret value anyone can read: the defaults of every secret setting (they are in
    .env.example too) and the placeholders of the seed's README."""
    defaults = {_plain(Settings.model_fields[name].default) for name in SECRET_RULES}
    report_keys = set(LOCAL_PROVIDER_REPORT_KEYS.values())
    return frozenset((defaults | report_keys | PUBLISHED_PLACEHOLDERS) - {""})


def _plain(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


@overload
def load_settings(*, local_unless_set: bool = False) -> Settings: ...


@overload
def load_settings(cls: type[S], *, local_unless_set: bool = False) -> S: ...


def load_settings(cls: type[Settings] = Settings, *, local_unless_set: bool = False) -> Settings:
    """Read the settings now (a service passes its own `cls`, a subclass of Settings); a bad
    value raises ConfigError naming the environment variable.

    `local_unless_set`: for the developer tools (`make token`, `make db-migrate`, `make db-seed`),
    which serve the local stack: APP_ENV=local unless the environment or .env says otherwise.
    Services never use it: for them an unset APP_ENV means production.
    """
    try:
        settings = cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except SettingsError as exc:
        # Raised for unparsable JSON values before validation; only its text names the field.
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1).upper() if found else "settings"
        raise ConfigError(f"invalid configuration: {field}: not valid JSON") from None
    if local_unless_set and "app_env" not in settings.model_fields_set:
        return settings.model_copy(update={"app_env": LOCAL})
    return settings


@cache
def get_settings() -> Settings:
    """The common settings, read once (tests call `get_settings.cache_clear()`): for services
    with no settings of their own (web, ratelimit) and the tools; every other service reads its
    own subclass (`<service>.settings.get_settings`)."""
    return load_settings()
