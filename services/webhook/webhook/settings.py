"""The webhook service's own settings, over the mesh's common ones (gateway_core.config)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from functools import cache

from pydantic import Field, field_validator

from gateway_core import config
from gateway_core.config import Duration, Seconds, load_settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_retry_schedule(text: str) -> tuple[float, ...]:
    """WEBHOOK_RETRY_SCHEDULE: comma-separated seconds ("5,300,1800"); empty means no retry."""
    delays: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            delay = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number of seconds") from None
        if not 0 < delay < float("inf"):
            raise ValueError(f"{part!r} is not a positive number of seconds")
        delays.append(delay)
    return tuple(delays)


def parse_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """WEBHOOK_ALLOWED_CIDRS: comma-separated networks ("127.0.0.0/8,::1/128")."""
    networks: list[IPNetwork] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not a CIDR such as 127.0.0.0/8") from None
    return tuple(networks)


class Settings(config.Settings):
    # Email receipts (the webhook service sends them through this SMTP server).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=10025, ge=1, le=65535)
    # Empty: no AUTH (a relay that trusts the network, or the local stack's server).
    smtp_username: str = ""
    # Issued by the mail provider: not held to the length rule; repr=False keeps it out of reprs.
    smtp_password: str = Field(default="", repr=False)
    smtp_from: str = "Paygate receipts <receipts@paygate.localhost>"
    # true: STARTTLS is required before AUTH and the message (refused if the server lacks it).
    smtp_starttls: bool = False

    # Seconds from a failed attempt to the next (the first attempt is at once; the Standard
    # Webhooks schedule); spent, the delivery is dead-lettered.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,50400,72000,86400"
    # Longest one delivery attempt may take, connection to answer.
    webhook_timeout: Seconds = Field(default=15.0, gt=0, le=300, allow_inf_nan=False)
    # An endpoint failing this long without one success is disabled.
    webhook_disable_after: Duration = Field(default=timedelta(days=5), gt=timedelta(0))
    # CIDRs (comma-separated) that webhook URLs may reach although they are loopback, private,
    # link-local, CGNAT or cloud metadata addresses; empty allows none of them.
    webhook_allowed_cidrs: str = ""

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_schedule_is_seconds(cls, value: str) -> str:
        parse_retry_schedule(value)
        return value

    @field_validator("webhook_allowed_cidrs")
    @classmethod
    def _allowed_cidrs_are_networks(cls, value: str) -> str:
        parse_cidrs(value)
        return value

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return parse_retry_schedule(self.webhook_retry_schedule)

    @property
    def webhook_allowed_networks(self) -> tuple[IPNetwork, ...]:
        return parse_cidrs(self.webhook_allowed_cidrs)


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings(Settings)
