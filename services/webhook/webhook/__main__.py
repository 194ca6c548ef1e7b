"""`python -m webhook`: merchants' endpoints and signed, retried event deliveries."""

from __future__ import annotations

import asyncio

from gateway_core.db import check_pool, create_pool
from gateway_core.grpc_client import insecure_channel
from gateway_core.kafka import EventConsumer
from gateway_core.server import ServiceApp, run_service
from paygate.webhooks.v1 import webhooks_pb2_grpc
from webhook.consumer import EventFanOut, consumer_group
from webhook.dead_letters import DeadLetterPublisher
from webhook.delivery import DeliveryWorker, Sender
from webhook.mail import MailSender, SmtpServer
from webhook.metrics import OLDEST_PENDING_SECONDS, QUEUE_DEPTH
from webhook.notify import DisabledEndpointNotifier
from webhook.receipts import MerchantNames, ReceiptIssuer
from webhook.repository import Repository
from webhook.servicer import WebhookServicer
from webhook.settings import Settings, get_settings
from webhook.stream import StatusFeed, StatusHub, StreamServer

SCHEMA = "webhook"
QUEUE_STATS_SECONDS = 5.0
# A delivery waits for its event: fetch new events within this many ms of their publication.
FETCH_MAX_WAIT_MS = 50
# The receipts' own consumer group: each event is handled by one replica.
RECEIPTS_GROUP_SUFFIX = ".webhook-receipts"


async def build_app(settings: Settings) -> ServiceApp:
    """The webhook service, ready to run: its API, deliveries, status stream and email."""
    app = ServiceApp("webhook", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    # Health follows PostgreSQL only: with the broker down the API and the retries of
    # deliveries already recorded keep working.
    app.add_dependency_check("postgres", lambda: check_pool(pool))
    orchestrator = insecure_channel(settings.orchestrator_addr)
    app.on_shutdown(lambda: orchestrator.close(None))

    # Email (receipts, disabled endpoints), persisted and sent by every replica's sender.
    mail = MailSender(pool, SmtpServer.from_settings(settings))

    # Webhook deliveries: the endpoints' API, the fan-out of events into deliveries, the worker.
    repo = Repository(pool)
    allowed = settings.webhook_allowed_networks
    http = Sender(allowed, settings.webhook_timeout)
    app.on_shutdown(http.close)
    worker = DeliveryWorker(
        repo,
        http,
        schedule=settings.webhook_retry_delays,
        disable_after=settings.webhook_disable_after,
        on_disabled=DisabledEndpointNotifier(pool, orchestrator, queued=mail.wake),
    )
    deliveries = EventConsumer(
        settings.kafka_bootstrap_servers,
        [settings.kafka_topic_payments],
        consumer_group(settings),
        EventFanOut(repo, worker.wake),
        client_id="webhook",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    dead_letters = DeadLetterPublisher(
        pool, settings.kafka_bootstrap_servers, settings.kafka_topic_webhooks
    )

    async def watch_queue() -> None:
        while True:
            depth, oldest = await repo.queue_stats()
            QUEUE_DEPTH.set(depth)
            OLDEST_PENDING_SECONDS.set(oldest)
            await asyncio.sleep(QUEUE_STATS_SECONDS)

    app.add_background_task("deliveries", worker.run)
    app.add_background_task("events", deliveries.run)
    app.add_background_task("dead-letters", dead_letters.run)
    app.add_background_task("queue-metrics", watch_queue)
    app.add_service(
        "paygate.webhooks.v1.WebhookService",
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server,
        WebhookServicer(repo, allowed=allowed, wake_worker=worker.wake),
    )

    # The WebSocket status stream: every replica reads every event for its own sockets.
    hub = StatusHub()
    feed = StatusFeed(settings.kafka_bootstrap_servers, settings.kafka_topic_payments, hub)
    app.add_background_task("status-feed", feed.run)
    stream = StreamServer(
        hub, orchestrator, host=settings.server_host, port=settings.webhook_stream_port
    )
    app.add_background_task("status-stream", stream.run)

    # Email receipts, queued from the events.
    receipts = ReceiptIssuer(pool, MerchantNames(orchestrator), queued=mail.wake)
    receipt_events = EventConsumer(
        settings.kafka_bootstrap_servers,
        [settings.kafka_topic_payments],
        settings.kafka_group_id + RECEIPTS_GROUP_SUFFIX,
        receipts.handle,
        client_id="paygate-webhook-receipts",
    )
    app.add_background_task("receipt-events", receipt_events.run)
    app.add_background_task("mail-sender", mail.run)
    return app


async def main() -> None:
    app = await build_app(get_settings())
    await app.run()


if __name__ == "__main__":
    run_service(main)
