"""`python -m webhook`: the webhook delivery service."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.grpc_client import insecure_channel
from gateway_core.kafka import EventConsumer
from gateway_core.server import ServiceApp, run_service
from paygate.webhooks.v1 import webhooks_pb2_grpc
from webhook.mail import MailSender, SmtpServer
from webhook.receipts import MerchantNames, ReceiptIssuer
from webhook.servicer import WebhookServicer
from webhook.stream import StatusFeed, StatusHub, StreamServer

SCHEMA = "webhook"
# The receipts' own consumer group: each event is handled by one replica.
RECEIPTS_GROUP_SUFFIX = ".webhook-receipts"


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("webhook", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))
    orchestrator = insecure_channel(settings.orchestrator_addr)
    app.on_shutdown(lambda: orchestrator.close(None))

    app.add_service(
        "paygate.webhooks.v1.WebhookService",
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server,
        WebhookServicer(),
    )

    # The WebSocket status stream: every replica reads every event for its own sockets.
    hub = StatusHub()
    feed = StatusFeed(settings.kafka_bootstrap_servers, settings.kafka_topic_payments, hub)
    app.add_background_task("status-feed", feed.run)
    stream = StreamServer(
        hub, orchestrator, host=settings.server_host, port=settings.webhook_stream_port
    )
    app.add_background_task("status-stream", stream.run)

    # Email receipts, queued from the events and sent by every replica's sender.
    sender = MailSender(pool, SmtpServer.from_settings(settings))
    receipts = ReceiptIssuer(pool, MerchantNames(orchestrator), queued=sender.wake)
    consumer = EventConsumer(
        settings.kafka_bootstrap_servers,
        [settings.kafka_topic_payments],
        settings.kafka_group_id + RECEIPTS_GROUP_SUFFIX,
        receipts.handle,
        client_id="paygate-webhook-receipts",
    )
    app.add_background_task("receipt-events", consumer.run)
    app.add_background_task("mail-sender", sender.run)
    await app.run()


if __name__ == "__main__":
    run_service(main)
