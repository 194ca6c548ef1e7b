"""The orchestrator's own settings, over the mesh's common ones (gateway_core.config.Settings)."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Literal

from pydantic import Field

from gateway_core import config
from gateway_core.config import Duration, Seconds, load_settings


class Settings(config.Settings):
    # Payment providers (the sandbox serves all of them locally)
    upi_core_endpoint: str = "127.0.0.1:50066"
    wallet_api_endpoints: dict[str, str] = Field(
        default_factory=lambda: {
            "paytm": "127.0.0.1:50066",
            "phonepe": "127.0.0.1:50066",
            "googlepay": "127.0.0.1:50066",
            "amazonpay": "127.0.0.1:50066",
        }
    )
    netbanking_endpoint: str = "127.0.0.1:50066"
    card_acquirer_endpoint: str = "127.0.0.1:50066"
    # Deadline of the fraud check on each payment, and what to do when it is missed.
    fraud_timeout_ms: int = Field(default=50, ge=1, le=5000)
    fraud_fail_policy: Literal["open", "closed"] = "open"
    # Fraud checks waiting for the scorer at once; more payments are shed (503, Retry-After)
    # rather than queued into missing their deadline (providers/fraud.py).
    fraud_max_in_flight: int = Field(default=64, ge=1, le=10_000)
    # Admission of new payments (gateway_core.admission): past this many payments being
    # screened and stored at once in this process (provider calls are not counted), or with
    # its event loop behind by more than this, a new payment is refused with 503 and
    # Retry-After before anything is stored, instead of queueing into a timeout.
    max_payments_in_flight: int = Field(default=32, ge=1, le=10_000)
    max_loop_lag_ms: int = Field(default=100, ge=1, le=60_000)
    card_routing_config_path: str = "./services/orchestrator/config/card-routing.yaml"

    # Outbox: published events are kept this long (for audit and debugging), then purged.
    outbox_retention: Seconds = Field(default=72 * 3600.0, gt=0, allow_inf_nan=False)

    # Payments
    payment_expiry_seconds: int = Field(default=900, ge=1)
    # How long a held (manual-capture) authorization waits for its capture; after it the
    # gateway voids it at the provider and the payment EXPIRES.
    authorization_ttl: Duration = Field(default=timedelta(days=5), gt=timedelta(0))
    merchant_vpa_domain: str = "paygate"


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings(Settings)
