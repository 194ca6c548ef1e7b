"""paygate.webhooks.v1.WebhookService (DESIGN.md §7).

Not implemented yet: every method answers UNIMPLEMENTED (the generated base class's behaviour),
which Envoy returns as HTTP 501. The webhooks issue fills it in: endpoint management with SSRF
checks, the delivery log and replay; the Kafka consumer and the delivery worker come with it.
"""

from __future__ import annotations

from paygate.webhooks.v1 import webhooks_pb2_grpc


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    """Manages a merchant's webhook endpoints and shows their deliveries."""
