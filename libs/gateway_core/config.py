"""Configuration from the environment, with the seed's variable names.

Real environment variables win over a `.env` file in the working directory, which wins over the
defaults below. The defaults are the local stack's (loopback, non-standard ports, sandbox keys),
so a fresh checkout runs without any configuration and production overrides every one of them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cache
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from gateway_core.limits import MAX_AMOUNT_PAISA

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(value: object) -> object:
    """Go-style durations as the seed writes them ("30s", "120h", "1h30m"), or seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    if not _DURATION.fullmatch(text):
        raise ValueError('must be a duration such as "90s", "15m", "24h", "5d" or "1h30m"')
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


# A length of time from the environment: "24h", "5d", "1h30m", or a number of seconds.
Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


class ConfigError(ValueError):
    """The environment does not describe a valid configuration; says which variables are wrong."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: object) -> object:
    """Seconds from a Go-style duration ("250ms", "10s", "72h", "1h30m", like the seed's
    SERVER_READ_TIMEOUT=30s) or a plain number of seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text):
        raise ValueError("must be a duration such as 500ms, 10s, 5m or 72h, or a number of seconds")
    return sum(float(amount) * _DURATION_UNITS[unit] for amount, unit in parts)


# A duration setting, held in seconds.
Seconds = Annotated[float, BeforeValidator(duration_seconds)]


# Secrets with a development default that only the local stack may use.
DEV_SECRETS = (
    "jwt_secret",
    "encryption_key",
    "card_gateway_api_key",
    "provider_callback_secret",
    "orchestrator_service_key",
    "idempotency_fingerprint_key",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
    )

    # "local" (the developer stack) allows the built-in development secrets below; any other
    # value (Helm sets "production") refuses to start with them.
    app_env: str = "local"

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

    # Card vault
    # How long a CVV is held (encrypted) for the authorization that needs it, at most.
    vault_cvv_ttl_seconds: int = Field(default=900, ge=1, le=3600)

    # Payment providers (the sandbox serves all of them locally)
    upi_core_endpoint: str = "127.0.0.1:50066"
    card_gateway_api_key: SecretStr = SecretStr("sandbox-card-key")
    wallet_api_endpoints: dict[str, str] = Field(
        default_factory=lambda: {
            "paytm": "127.0.0.1:50066",
            "phonepe": "127.0.0.1:50066",
            "googlepay": "127.0.0.1:50066",
            "amazonpay": "127.0.0.1:50066",
        }
    )
    netbanking_endpoint: str = "127.0.0.1:50066"
    card_acquirer_endpoint: str = "127.0.0.1:50066"
    # Deadline of the fraud check on each payment, and what to do when it is missed.
    fraud_timeout_ms: int = Field(default=50, ge=1, le=5000)
    fraud_fail_policy: Literal["open", "closed"] = "open"
    card_routing_config_path: str = "./services/orchestrator/config/card-routing.yaml"
    # HMAC key of provider callbacks (x-provider-signature): the sandbox signs, the
    # orchestrator verifies.
    provider_callback_secret: SecretStr = SecretStr("local-dev-provider-callback-secret")

    # Sandbox (the simulated providers): its HTTP server serves the bank pages a customer's
    # browser is sent to, and UPI controls for tests and demos.
    sandbox_http_port: int = Field(default=18090, ge=0, le=65535)
    sandbox_public_url: str = "http://127.0.0.1:18090"
    sandbox_upi_approval_delay_ms: int = Field(default=1000, ge=0)

    # Fraud detection
    fraud_ml_api_url: str = ""
    fraud_rules_config_path: str = "./services/fraud/config/fraud-rules.yaml"
    max_fraud_score: int = Field(default=100, ge=1)
    block_threshold: int = Field(default=80, ge=0)
    # Score at or above which a payment is challenged (3-D Secure) instead of simply allowed.
    review_threshold: int = Field(default=50, ge=0)
    # How often the fraud service checks the rules file for changes.
    fraud_rules_reload_seconds: float = Field(default=1.0, gt=0)

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
    ratelimit_addr: str = "127.0.0.1:50067"

    # Gateway (Envoy)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    envoy_admin_port: int = Field(default=19901, ge=1, le=65535)
    # The gateway's public base URL, as providers reach it (their callbacks go through Envoy).
    gateway_public_url: str = "http://127.0.0.1:8080"

    # Outbox: published events are kept this long (for audit and debugging), then purged.
    outbox_retention: Seconds = Field(default=72 * 3600.0, gt=0, allow_inf_nan=False)

    # Payments
    payment_expiry_seconds: int = Field(default=900, ge=1)
    # How long a held (manual-capture) authorization waits for its capture; after it the
    # gateway voids it at the provider and the payment EXPIRES.
    authorization_ttl: Duration = Field(default=timedelta(days=5), gt=timedelta(0))
    max_payment_amount_paisa: int = Field(default=100_000_000, ge=1, le=MAX_AMOUNT_PAISA)
    merchant_vpa_domain: str = "paygate"
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

    @model_validator(mode="after")
    def _threshold_within_score(self) -> Settings:
        if self.block_threshold > self.max_fraud_score:
            raise ValueError(
                f"BLOCK_THRESHOLD ({self.block_threshold}) exceeds MAX_FRAUD_SCORE "
                f"({self.max_fraud_score})"
            )
        if self.review_threshold > self.block_threshold:
            raise ValueError(
                f"REVIEW_THRESHOLD ({self.review_threshold}) exceeds BLOCK_THRESHOLD "
                f"({self.block_threshold})"
            )
        return self

    @model_validator(mode="after")
    def _no_dev_secrets_outside_local(self) -> Settings:
        # Outside the local stack a development default counts as "not configured": each pod
        # gets only the secrets it uses, and `secret()` refuses the ones it lacks.
        if self.app_env != "local":
            defaults = type(self).model_fields
            for name in DEV_SECRETS:
                if getattr(self, name) == defaults[name].default:
                    object.__setattr__(self, name, SecretStr(""))
        return self

    def secret(self, name: str) -> str:
        """The value of a secret setting this process needs; ConfigError when it is unset."""
        value: SecretStr = getattr(self, name)
        if not value.get_secret_value():
            raise ConfigError(
                f"{name.upper()} is required (APP_ENV={self.app_env} has no development default)"
            )
        return value.get_secret_value()

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


def load_settings() -> Settings:
    """Read the settings now; a bad value raises ConfigError naming the environment variable."""
    try:
        return Settings()
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


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings()
