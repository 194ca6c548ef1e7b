"""The vault's own settings, over the mesh's common ones (gateway_core.config.Settings)."""

from __future__ import annotations

from functools import cache

from pydantic import Field

from gateway_core import config
from gateway_core.config import load_settings


class Settings(config.Settings):
    # How long a CVV is held (encrypted) for the authorization that needs it, at most.
    vault_cvv_ttl_seconds: int = Field(default=900, ge=1, le=3600)


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings(Settings)
