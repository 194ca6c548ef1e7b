"""`python -m orchestrator`: the payment orchestrator service."""

from __future__ import annotations

import functools
from datetime import timedelta

import grpc

from gateway_core.admission import Admission
from gateway_core.db import check_pool, create_pool
from gateway_core.grpc_client import insecure_channel
from gateway_core.kafka import EventProducer
from gateway_core.server import ServiceApp, run_service
from gateway_core.service_auth import ServiceIdentity, service_channel
from orchestrator import ledger_store
from orchestrator.connectors.base import provider_callback_url
from orchestrator.connectors.registry import DETAILS_TYPES, build_connectors
from orchestrator.connectors.upi.client import PROVIDER_NAME as UPI_PROVIDER
from orchestrator.disputes import Disputes
from orchestrator.idempotency import IdempotencyStore
from orchestrator.jobs import Jobs
from orchestrator.outbox import OutboxPurge, OutboxRelay
from orchestrator.processing import PaymentProcessor, RepositoryBooks
from orchestrator.providers.disputes import DisputeDeskClient
from orchestrator.providers.fraud import FraudClient
from orchestrator.providers.vault import VaultClient
from orchestrator.repository import Repository
from orchestrator.servicers.callbacks import ProviderCallbackServicer
from orchestrator.servicers.disputes import DisputeServicer
from orchestrator.servicers.merchants import MerchantServicer
from orchestrator.servicers.payment_methods import PaymentMethodServicer
from orchestrator.servicers.payments import PaymentServicer
from orchestrator.servicers.settlement_ledger import SettlementLedgerServicer, service_keys
from orchestrator.servicers.wire import encode_event
from orchestrator.settings import Settings, get_settings
from paygate.callbacks.v1 import callbacks_pb2_grpc
from paygate.disputes.v1 import disputes_pb2_grpc
from paygate.ledger.v1 import settlement_pb2_grpc
from paygate.merchants.v1 import merchants_pb2_grpc
from paygate.payments.v1 import payment_methods_pb2_grpc, payments_pb2_grpc

SCHEMA = "orchestrator"


async def build_app(settings: Settings) -> ServiceApp:
    """The orchestrator, ready to run: its API, provider clients and background jobs."""
    app = ServiceApp("orchestrator", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    # Health follows PostgreSQL only: with Kafka down payments must keep working (the outbox
    # holds their events), so the broker is not a readiness dependency.
    app.add_dependency_check("postgres", lambda: check_pool(pool))

    channels = _ProviderChannels(app)
    repo = Repository(pool, settings.kafka_topic_payments, encode_event, DETAILS_TYPES)
    vault_identity = ServiceIdentity(
        "orchestrator", settings.secret("orchestrator_service_key"), audience="tokenization-vault"
    )
    vault_channel = service_channel(settings.vault_addr, vault_identity)
    app.on_shutdown(lambda: vault_channel.close(None))
    vault = VaultClient(vault_channel)
    admission = Admission(
        "payments",
        app.loop_lag,
        max_in_flight=settings.max_payments_in_flight,
        max_lag_ms=settings.max_loop_lag_ms,
    )
    processor = PaymentProcessor(
        repo,
        settings,
        connectors=build_connectors(
            settings, channels.get, vault=vault, books=RepositoryBooks(repo)
        ),
        pricing=await ledger_store.load_pricing(pool),
        fraud=FraudClient(
            channels.get(settings.fraud_addr),
            timeout_ms=settings.fraud_timeout_ms,
            fail_policy=settings.fraud_fail_policy,
            max_in_flight=settings.fraud_max_in_flight,
        ),
        admission=admission,
    )
    # Before the vault's channel closes (hooks run last-registered first).
    app.on_shutdown(lambda: processor.drain(settings.shutdown_grace_seconds))
    idempotency = IdempotencyStore(pool, settings.secret("idempotency_fingerprint_key").encode())
    # Runs before the pool closes (hooks run last-registered first): handlers whose callers
    # went away finish their work and record it.
    app.on_shutdown(lambda: idempotency.drain(settings.shutdown_grace_seconds))

    relay = OutboxRelay(pool, EventProducer(settings.kafka_bootstrap_servers))
    app.add_background_task("outbox-relay", relay.run)
    purge = OutboxPurge(pool, timedelta(seconds=settings.outbox_retention))
    app.add_background_task("outbox-purge", purge.run)
    disputes = Disputes(
        repo,
        processor.pricing,
        desk=lambda provider: DisputeDeskClient(
            channels.get(
                settings.upi_core_endpoint
                if provider == UPI_PROVIDER
                else settings.card_acquirer_endpoint
            )
        ),
        callback_url=functools.partial(provider_callback_url, settings.gateway_public_url),
    )
    jobs = Jobs(repo, processor, idempotency)
    app.add_background_task("status-inquiries", jobs.run_inquiries)
    app.add_background_task("expiry", jobs.run_expiry)
    app.add_background_task("refund-retries", jobs.run_refund_retries)
    app.add_background_task("idempotency-cleanup", jobs.run_key_cleanup)
    app.add_background_task("disputes", lambda: jobs.run_disputes(disputes))

    app.add_service(
        "paygate.payments.v1.PaymentService",
        payments_pb2_grpc.add_PaymentServiceServicer_to_server,
        PaymentServicer(repo, processor, idempotency, settings, admission=admission),
    )
    app.add_service(
        "paygate.payments.v1.PaymentMethodService",
        payment_methods_pb2_grpc.add_PaymentMethodServiceServicer_to_server,
        PaymentMethodServicer(pool, vault),
    )
    app.add_service(
        "paygate.merchants.v1.MerchantService",
        merchants_pb2_grpc.add_MerchantServiceServicer_to_server,
        MerchantServicer(repo, settings),
    )
    app.add_service(
        "paygate.callbacks.v1.ProviderCallbackService",
        callbacks_pb2_grpc.add_ProviderCallbackServiceServicer_to_server,
        ProviderCallbackServicer(processor, disputes),
    )
    app.add_service(
        "paygate.disputes.v1.DisputeService",
        disputes_pb2_grpc.add_DisputeServiceServicer_to_server,
        DisputeServicer(disputes, idempotency),
    )
    # Internal (never routed by Envoy): reconciliation's matched settlement lines.
    app.add_service(
        "paygate.ledger.v1.SettlementLedgerService",
        settlement_pb2_grpc.add_SettlementLedgerServiceServicer_to_server,
        SettlementLedgerServicer(pool, service_keys(settings)),
    )
    return app


async def main() -> None:
    app = await build_app(get_settings())
    await app.run()


class _ProviderChannels:
    """One channel per provider address, closed when the service stops."""

    def __init__(self, app: ServiceApp) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        app.on_shutdown(self._close)

    def get(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = insecure_channel(address)
        return self._channels[address]

    async def _close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)


if __name__ == "__main__":
    run_service(main)
