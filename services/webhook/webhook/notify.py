"""Telling a merchant that one of its endpoints was disabled (a 410 Gone, or failing for
WEBHOOK_DISABLE_AFTER): an email to the merchant's address, through the service's persisted
mail queue (webhook.mail), so it is retried like a receipt and sent once per disable.

The merchant's name and address come from the orchestrator's merchants service (never from its
tables), asked as the merchant itself, as the receipts do.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable

import asyncpg
import grpc

from gateway_core.auth import MERCHANT_ID_KEY, ROLE_KEY
from gateway_core.errors import GatewayError, NotFound
from gateway_core.logging import get_logger
from paygate.merchants.v1 import merchants_pb2, merchants_pb2_grpc
from webhook.events import rfc3339
from webhook.mail import queue_email
from webhook.repository import DisabledEndpoint

log = get_logger(__name__)

ORCHESTRATOR_TIMEOUT_SECONDS = 5.0
# The orchestrator may be restarting when an endpoint is disabled: ask again a few times.
LOOKUP_DELAYS = (1.0, 5.0, 30.0, 120.0)


class DisabledEndpointNotifier:
    """`await notifier(endpoint)` queues the merchant's email in the background and returns."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        orchestrator: grpc.aio.Channel,
        *,
        queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._merchants = merchants_pb2_grpc.MerchantServiceStub(orchestrator)
        self._queued = queued
        self._tasks: set[asyncio.Task[bool]] = set()

    async def __call__(self, endpoint: DisabledEndpoint) -> None:
        log.warning(
            "webhook endpoint disabled",
            webhook_id=endpoint.webhook_id,
            merchant_id=endpoint.merchant_id,
            reason=endpoint.reason,
        )
        # Not awaited: the delivery worker records outcomes while the orchestrator answers.
        task = asyncio.create_task(self.notify_endpoint_disabled(endpoint))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def notify_endpoint_disabled(self, endpoint: DisabledEndpoint) -> bool:
        """Queue the email; False when the merchant has no address (or could not be asked)."""
        merchant: merchants_pb2.Merchant | None = None
        for delay in (*LOOKUP_DELAYS, None):
            try:
                merchant = await self._merchants.GetMerchant(
                    merchants_pb2.GetMerchantRequest(merchant_id=endpoint.merchant_id),
                    metadata=((MERCHANT_ID_KEY, endpoint.merchant_id), (ROLE_KEY, "merchant")),
                    timeout=ORCHESTRATOR_TIMEOUT_SECONDS,
                )
                break
            except GatewayError as exc:
                if delay is None or isinstance(exc, NotFound):
                    log.error(
                        "cannot email the merchant about a disabled endpoint",
                        webhook_id=endpoint.webhook_id,
                        error=exc.grpc_code.name,
                    )
                    return False
                await asyncio.sleep(delay)
        if merchant is None or not merchant.email:
            log.info("merchant has no email address", merchant_id=endpoint.merchant_id)
            return False
        subject, text, body_html = disabled_email(merchant.name, endpoint)
        async with self._pool.acquire() as conn:
            await queue_email(
                conn,
                dedupe_key=f"webhook-disabled:{endpoint.webhook_id}:{rfc3339(endpoint.disabled_at)}",
                to=merchant.email,
                subject=subject,
                text=text,
                html=body_html,
            )
        self._queued()
        return True


def disabled_email(merchant_name: str, endpoint: DisabledEndpoint) -> tuple[str, str, str]:
    """Subject, plain text and HTML of the email."""
    subject = f"Webhook endpoint disabled: {endpoint.url}"
    lines = [
        f"Hello {merchant_name},",
        "",
        "We stopped sending webhooks to one of your endpoints:",
        "",
        f"  Endpoint: {endpoint.url} ({endpoint.webhook_id})",
        f"  Why: {endpoint.reason}",
        f"  When: {rfc3339(endpoint.disabled_at)}",
        "",
        "Events for it are kept as FAILED deliveries. Once the endpoint works again, re-enable it",
        'with PATCH /api/v1/webhooks/{webhook_id} {"status": "ENABLED", "recover_since": ...}',
        "to have them sent.",
    ]
    text = "\n".join(lines) + "\n"
    body_html = "".join(f"<p>{html.escape(line)}</p>" if line else "" for line in lines).replace(
        "{webhook_id}", html.escape(endpoint.webhook_id)
    )
    return subject, text.replace("{webhook_id}", endpoint.webhook_id), body_html
