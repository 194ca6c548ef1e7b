"""Reconciliation's own settings, over the mesh's common ones (gateway_core.config.Settings)."""

from __future__ import annotations

from functools import cache

from croniter import croniter
from pydantic import Field, field_validator

from gateway_core import config
from gateway_core.config import load_settings


class Settings(config.Settings):
    # When the daily run of every provider for the previous IST day starts (a 5-field cron
    # expression read in IST), how many days a provider has to settle a capture or refund before
    # it is MISSING_IN_FILE, and where the providers' settlement reports are.
    recon_schedule: str = "0 6 * * *"
    recon_settlement_sla_days: int = Field(default=3, ge=0, le=60)
    settlement_reports_url: str = "http://127.0.0.1:18090"

    @field_validator("recon_schedule")
    @classmethod
    def _cron_expression(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                "must be a 5-field cron expression (minute hour day month weekday), "
                "e.g. '0 6 * * *' for 06:00 IST every day"
            )
        return value


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings(Settings)
