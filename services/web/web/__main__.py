"""`python -m web`: checkout sessions (gRPC) and the pages (HTTP): checkout and dashboard."""

from __future__ import annotations

from gateway_core.config import Settings, get_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.grpc_client import insecure_channel
from gateway_core.kafka import EventConsumer, EventProducer
from gateway_core.server import ServiceApp, run_service
from gateway_core.services import grpc_target
from paygate.checkout.v1 import checkout_pb2_grpc
from web.checkout import CheckoutPages
from web.clients import Gateway
from web.dashboard import Dashboard
from web.jobs import OutboxRelay, PaymentWatcher, SessionExpiry
from web.repository import Repository
from web.servicer import CheckoutServicer, DashboardAccountServicer
from web.site import application, serve, templates

SCHEMA = "web"
# Its own consumer group: every payment event is seen by one replica of this service.
GROUP_SUFFIX = ".web"


async def build_app(settings: Settings) -> ServiceApp:
    """The web service, ready to run: checkout sessions (gRPC) and the pages (HTTP)."""
    app = ServiceApp("web", settings)
    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))

    public = settings.gateway_public_url.rstrip("/")

    def page_url(checkout_session_id: str) -> str:
        return f"{public}/checkout/{checkout_session_id}"

    repo = Repository(pool, page_url)
    orchestrator = insecure_channel(settings.orchestrator_addr)
    webhook = insecure_channel(settings.webhook_addr)
    reconciliation = insecure_channel(settings.reconciliation_addr)
    for channel in (orchestrator, webhook, reconciliation):
        app.on_shutdown(lambda channel=channel: channel.close(None))  # type: ignore[misc]
    gateway = Gateway(orchestrator, webhook, reconciliation)

    app.add_service(
        "paygate.checkout.v1.CheckoutService",
        checkout_pb2_grpc.add_CheckoutServiceServicer_to_server,
        CheckoutServicer(repo, page_url, settings.max_payment_amount_paisa),
    )
    app.add_service(
        "paygate.checkout.v1.DashboardAccountService",
        checkout_pb2_grpc.add_DashboardAccountServiceServicer_to_server,
        DashboardAccountServicer(repo),
    )

    producer = EventProducer(settings.kafka_bootstrap_servers, client_id="paygate-web")
    relay = OutboxRelay(pool, producer, settings.kafka_topic_payments)
    app.add_background_task("outbox-relay", relay.run)
    watcher = EventConsumer(
        settings.kafka_bootstrap_servers,
        [settings.kafka_topic_payments],
        settings.kafka_group_id + GROUP_SUFFIX,
        PaymentWatcher(repo),
        client_id="paygate-web",
    )
    app.add_background_task("payment-events", watcher.run)
    app.add_background_task("session-expiry", SessionExpiry(repo).run)

    webhook_host = grpc_target(settings.webhook_addr).rpartition(":")[0]
    environment = templates()
    checkout = CheckoutPages(
        repo,
        gateway,
        environment,
        page_url=page_url,
        stream_base=f"ws://{webhook_host}:{settings.webhook_stream_port}",
    )
    dashboard = Dashboard(repo, gateway, environment, secure_cookies=not settings.is_local)
    site = application(checkout.add_routes, dashboard.add_routes)

    async def serve_pages() -> None:
        await serve(site, settings.server_host, settings.web_http_port)

    app.add_background_task("pages", serve_pages)
    return app


async def main() -> None:
    app = await build_app(get_settings())
    await app.run()


if __name__ == "__main__":
    run_service(main)
