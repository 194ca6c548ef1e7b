"""The mesh's one registry of services (the topology manifest): where each lives, listens, keeps
its data, and who may call it.

The local stack supervisor, the Envoy config renderer, the migration runner and the Helm chart
all read this table, so a service's name, port and schema are written down exactly once. The
chart reads it as `files/topology.yaml`, which `make gen` writes from here (`chart_topology`);
that file is build output, never committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway_core.config import CALLBACK_PROVIDERS

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # directory under services/, also the Kubernetes name
    module: str  # `python -m <module>` starts it
    addr_env: str  # env variable other services use to reach it (host:port)
    default_port: int  # local gRPC port
    default_metrics_port: int  # local Prometheus port
    grpc_services: tuple[str, ...]  # fully qualified gRPC services it serves (Envoy routes these)
    schema: str | None = None  # its own PostgreSQL schema, if it has one
    public: bool = True  # reachable through Envoy
    # The secret settings it holds (gateway_core.config.SECRET_RULES, by variable name): checked
    # before it starts (ServiceApp) and handed to its pods by the Helm chart (secretEnv).
    secrets: tuple[str, ...] = ()
    # gRPC services it serves to other services only: Envoy never routes them, whatever
    # `public` says (each checks its caller's service identity itself).
    internal_grpc_services: tuple[str, ...] = ()
    # The only components allowed to open connections to it (the chart's NetworkPolicy ingress;
    # the callers' egress follows from the same list). "envoy": the public door.
    callers: tuple[str, ...] = ()
    # The plain HTTP listener it also serves, if any, by its name in the chart's `ports`: the
    # webhook service's status stream, the web service's pages.
    http_listener: str = ""

    @property
    def chart_key(self) -> str:
        """Its block in the chart's values.yaml: the name in lowerCamelCase."""
        first, *rest = self.name.split("-")
        return first + "".join(word.capitalize() for word in rest)

    @property
    def directory(self) -> Path:
        return REPO_ROOT / "services" / self.name

    @property
    def migrations_dir(self) -> Path:
        return self.directory / "migrations"


# One HMAC key per provider that calls back.
CALLBACK_SECRETS = tuple(f"PROVIDER_CALLBACK_SECRET_{p.upper()}" for p in CALLBACK_PROVIDERS)

SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo(
        name="orchestrator",
        module="orchestrator",
        addr_env="ORCHESTRATOR_ADDR",
        default_port=50061,
        default_metrics_port=19101,
        grpc_services=(
            "paygate.payments.v1.PaymentService",
            "paygate.payments.v1.PaymentMethodService",
            "paygate.merchants.v1.MerchantService",
            "paygate.callbacks.v1.ProviderCallbackService",
            "paygate.disputes.v1.DisputeService",
        ),
        internal_grpc_services=("paygate.ledger.v1.SettlementLedgerService",),
        schema="orchestrator",
        secrets=(
            "DB_PASSWORD",
            "ORCHESTRATOR_SERVICE_KEY",
            "IDEMPOTENCY_FINGERPRINT_KEY",
            "RECONCILIATION_SERVICE_KEY",
            *CALLBACK_SECRETS,
        ),
        # reconciliation: the internal SettlementLedgerService (never routed by Envoy; it checks
        # reconciliation's service identity itself). web: the checkout page and the dashboard
        # act for their merchant.
        callers=("envoy", "reconciliation", "web"),
    ),
    ServiceInfo(
        name="fraud",
        module="fraud",
        addr_env="FRAUD_ADDR",
        default_port=50062,
        default_metrics_port=19102,
        grpc_services=("paygate.fraud.v1.FraudService",),
        public=False,
        callers=("orchestrator",),
    ),
    ServiceInfo(
        name="tokenization-vault",
        module="vault",
        addr_env="VAULT_ADDR",
        default_port=50063,
        default_metrics_port=19103,
        grpc_services=("paygate.vault.v1.VaultService",),
        schema="vault",
        public=False,
        secrets=("DB_PASSWORD", "ENCRYPTION_KEY", "ORCHESTRATOR_SERVICE_KEY"),
        callers=("orchestrator",),
    ),
    ServiceInfo(
        name="webhook",
        module="webhook",
        addr_env="WEBHOOK_ADDR",
        default_port=50064,
        default_metrics_port=19104,
        grpc_services=("paygate.webhooks.v1.WebhookService",),
        schema="webhook",
        secrets=("DB_PASSWORD",),
        # web: the dashboard's delivery log, the checkout page's status relay.
        callers=("envoy", "web"),
        http_listener="stream",
    ),
    ServiceInfo(
        name="reconciliation",
        module="reconciliation",
        addr_env="RECONCILIATION_ADDR",
        default_port=50065,
        default_metrics_port=19105,
        grpc_services=(
            "paygate.reconciliation.v1.ReconciliationService",
            "paygate.reconciliation.v1.MerchantReportingService",
        ),
        schema="reconciliation",
        secrets=("DB_PASSWORD", "RECONCILIATION_SERVICE_KEY", "PROVIDER_REPORT_KEYS"),
        # web: the dashboard's charts (the merchant's analytics).
        callers=("envoy", "web"),
    ),
    ServiceInfo(
        name="sandbox",
        module="sandbox",
        addr_env="UPI_CORE_ENDPOINT",
        default_port=50066,
        default_metrics_port=19106,
        grpc_services=(
            "paygate.sandbox.v1.UpiCoreService",
            "paygate.sandbox.v1.CardAcquirerService",
            "paygate.sandbox.v1.WalletProviderService",
            "paygate.sandbox.v1.NetBankingService",
            "paygate.sandbox.v1.DisputeNetworkService",
        ),
        public=False,
        # It signs each provider's callbacks with that provider's key, and checks each
        # provider's settlement-report key.
        secrets=(*CALLBACK_SECRETS, "PROVIDER_REPORT_KEYS"),
        callers=("orchestrator",),
    ),
    ServiceInfo(
        name="web",
        module="web",
        addr_env="WEB_ADDR",
        default_port=50068,
        default_metrics_port=19108,
        grpc_services=(
            "paygate.checkout.v1.CheckoutService",
            "paygate.checkout.v1.DashboardAccountService",
        ),
        schema="web",
        secrets=("DB_PASSWORD",),
        callers=("envoy",),
        http_listener="pages",
    ),
    ServiceInfo(
        name="ratelimit",
        module="ratelimit",
        addr_env="RATELIMIT_ADDR",
        default_port=50067,
        default_metrics_port=19107,
        grpc_services=("envoy.service.ratelimit.v3.RateLimitService",),
        public=False,
        callers=("envoy",),
    ),
)

BY_NAME: dict[str, ServiceInfo] = {s.name: s for s in SERVICES}


def chart_topology() -> list[dict[str, object]]:
    """The registry as the Helm chart reads it (files/topology.yaml; `pg.registry`)."""
    entries: list[dict[str, object]] = []
    for service in SERVICES:
        entry: dict[str, object] = {
            "key": service.chart_key,
            "name": service.name,
            "module": service.module,
            "addrEnv": service.addr_env,
            "public": service.public,
            "grpcServices": list(service.grpc_services),
            "callers": list(service.callers),
        }
        if service.schema:
            entry["schema"] = service.schema
        if service.http_listener:
            entry["httpPort"] = service.http_listener
        entries.append(entry)
    return entries


def grpc_target(address: str) -> str:
    """`host:port` from an address that may carry a scheme (the seed writes `http://upi-core:50051`)."""
    for scheme in ("http://", "https://", "grpc://", "dns:///"):
        if address.startswith(scheme):
            return address[len(scheme) :].rstrip("/")
    return address
