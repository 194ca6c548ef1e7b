"""The sandbox's own settings, over the mesh's common ones (gateway_core.config.Settings)."""

from __future__ import annotations

from functools import cache

from pydantic import Field

from gateway_core import config
from gateway_core.config import load_settings


class Settings(config.Settings):
    # The URL customers' browsers reach the sandbox's pages at (its port: SANDBOX_HTTP_PORT).
    sandbox_public_url: str = "http://127.0.0.1:18090"
    sandbox_upi_approval_delay_ms: int = Field(default=1000, ge=0)
    # Days between a capture (or refund) and the settlement file that pays it out (T+N, IST
    # dates): 0 settles on the capture date.
    sandbox_settlement_cycle_days: int = Field(default=0, ge=0, le=30)
    # Disputes: a card acquirer raises a chargeback this long after capturing a payment of the
    # magic card 4000 0000 0000 0259; a provider gives the merchant this long to answer (the
    # dispute's respond_by); and decides this long after the evidence arrives.
    sandbox_chargeback_delay_ms: int = Field(default=3000, ge=0, le=3_600_000)
    sandbox_dispute_respond_within_seconds: int = Field(default=7 * 86400, ge=1, le=90 * 86400)
    sandbox_dispute_decision_delay_ms: int = Field(default=3000, ge=0, le=3_600_000)


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings(Settings)
