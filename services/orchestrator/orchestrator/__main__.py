"""`python -m orchestrator`: the payment orchestrator service."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.grpc_client import insecure_channel
from gateway_core.kafka import EventProducer
from gateway_core.server import ServiceApp, run_service
from orchestrator.outbox import OutboxRelay
from orchestrator.providers.upi_core import UpiCoreClient
from orchestrator.repository import Repository
from orchestrator.servicers.merchants import MerchantServicer
from orchestrator.servicers.payment_methods import PaymentMethodServicer
from orchestrator.servicers.payments import PaymentServicer
from paygate.merchants.v1 import merchants_pb2_grpc
from paygate.payments.v1 import payment_methods_pb2_grpc, payments_pb2_grpc

SCHEMA = "orchestrator"


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("orchestrator", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    # Health follows PostgreSQL only: with Kafka down payments must keep working (the outbox
    # holds their events), so the broker is not a readiness dependency.
    app.add_dependency_check("postgres", lambda: check_pool(pool))

    upi_channel = insecure_channel(settings.upi_core_endpoint)
    app.on_shutdown(lambda: upi_channel.close(None))

    repo = Repository(pool, events_topic=settings.kafka_topic_payments)
    relay = OutboxRelay(pool, EventProducer(settings.kafka_bootstrap_servers))
    app.add_background_task("outbox-relay", relay.run)

    app.add_service(
        "paygate.payments.v1.PaymentService",
        payments_pb2_grpc.add_PaymentServiceServicer_to_server,
        PaymentServicer(repo, UpiCoreClient(upi_channel), settings),
    )
    app.add_service(
        "paygate.payments.v1.PaymentMethodService",
        payment_methods_pb2_grpc.add_PaymentMethodServiceServicer_to_server,
        PaymentMethodServicer(),
    )
    app.add_service(
        "paygate.merchants.v1.MerchantService",
        merchants_pb2_grpc.add_MerchantServiceServicer_to_server,
        MerchantServicer(repo, settings),
    )
    await app.run()


if __name__ == "__main__":
    run_service(main)
