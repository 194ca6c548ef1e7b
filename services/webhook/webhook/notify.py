"""Telling a merchant that one of its endpoints was disabled.

The disable itself (status, reason, time) is already recorded and shown by the API when this
runs. The email goes through the service's persisted mail queue once that exists
(`webhook.mail.queue_email`, issue 9 item 5), to the merchant's address from the
orchestrator's merchants service; until it is wired this logs the disable, which is where the
lead connects it.
"""

from __future__ import annotations

from gateway_core.logging import get_logger
from webhook.repository import DisabledEndpoint

log = get_logger(__name__)


async def notify_endpoint_disabled(endpoint: DisabledEndpoint) -> None:
    """Tell the merchant that `endpoint` no longer receives deliveries, and why."""
    log.warning(
        "webhook endpoint disabled",
        webhook_id=endpoint.webhook_id,
        merchant_id=endpoint.merchant_id,
        reason=endpoint.reason,
    )
