"""`python -m webhook`: the webhook delivery service."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.server import ServiceApp, run_service
from paygate.webhooks.v1 import webhooks_pb2_grpc
from webhook.servicer import WebhookServicer

SCHEMA = "webhook"


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("webhook", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))

    app.add_service(
        "paygate.webhooks.v1.WebhookService",
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server,
        WebhookServicer(),
    )
    await app.run()


if __name__ == "__main__":
    run_service(main)
