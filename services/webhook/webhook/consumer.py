"""From `payments.events` to deliveries: each event fans out to the endpoints that subscribed
to it and to the payment's own callback_url, as rows (gateway_core.kafka commits the offset
only after they are written, and a re-read event adds nothing)."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway_core.config import Settings
from gateway_core.kafka import ConsumedEvent
from gateway_core.logging import get_logger
from webhook import metrics
from webhook.events import MalformedEvent, parse_event
from webhook.repository import Repository
from webhook.signing import generate_secret

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

TRACEPARENT = "traceparent"


def consumer_group(settings: Settings) -> str:
    """The webhook service's own consumer group, so that it reads every event whoever else
    consumes them (KAFKA_GROUP_ID is the common prefix)."""
    return f"{settings.kafka_group_id}.webhook"


class EventFanOut:
    """The handler of `payments.events` records (gateway_core.kafka.EventConsumer)."""

    def __init__(self, repo: Repository, on_added: Callable[[], None]) -> None:
        self._repo = repo
        self._on_added = on_added

    async def __call__(self, record: ConsumedEvent) -> None:
        try:
            event = parse_event(record.value)
        except MalformedEvent as exc:
            metrics.EVENTS.labels("malformed").inc()
            log.error("skipping a malformed event", offset=record.offset, error=str(exc))
            return
        traceparent = record.headers.get(TRACEPARENT, "")
        parent = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
        with tracer.start_as_current_span(
            "webhook.fan_out",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={"webhook.event_id": event.event_id, "webhook.event_type": event.event_type},
        ):
            # A secret is generated for the first callback_url delivery of a merchant that
            # never asked for its callback secret; it is kept and readable through the API.
            added = await self._repo.fan_out(event, traceparent, generate_secret())
        metrics.EVENTS.labels("fanned_out" if added else "no_new_delivery").inc()
        if added:
            self._on_added()
