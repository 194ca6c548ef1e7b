"""Prometheus metrics of deliveries (served on METRICS_PORT with the service's RPC metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "webhook_delivery_attempts_total",
    "Delivery attempts by outcome: success, http_error, timeout, connection_error, refused.",
    ["outcome"],
)
DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Deliveries that reached an end: succeeded, dead_lettered (schedule spent), gone (410).",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "webhook_delivery_attempt_seconds",
    "Time from sending an attempt to the endpoint's answer (or the failure).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
EVENT_TO_DELIVERY_SECONDS = Histogram(
    "webhook_event_to_delivery_seconds",
    "Time from the payment event to the endpoint's 2xx, retries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400),
)
EVENTS = Counter(
    "webhook_events_consumed_total",
    "Events read from payments.events, by whether they added deliveries.",
    ["result"],
)
QUEUE_DEPTH = Gauge("webhook_queue_depth", "Deliveries PENDING (due now or later).")
OLDEST_PENDING_SECONDS = Gauge(
    "webhook_oldest_pending_age_seconds", "Age of the oldest PENDING delivery (0: none)."
)
ENDPOINTS_DISABLED = Counter(
    "webhook_endpoints_disabled_total",
    "Endpoints the service disabled: gone (410) or failing (WEBHOOK_DISABLE_AFTER).",
    ["reason"],
)
