"""The fraud service's own settings, over the mesh's common ones (gateway_core.config.Settings)."""

from __future__ import annotations

from functools import cache

from pydantic import Field, model_validator

from gateway_core import config
from gateway_core.config import load_settings


class Settings(config.Settings):
    fraud_ml_api_url: str = ""
    # A model file to score with instead of the newest committed one (`make fraud-model` output).
    fraud_model_path: str = ""
    fraud_rules_config_path: str = "./services/fraud/config/fraud-rules.yaml"
    max_fraud_score: int = Field(default=100, ge=1)
    block_threshold: int = Field(default=80, ge=0)
    # Score at or above which a payment is challenged (3-D Secure) instead of simply allowed.
    review_threshold: int = Field(default=50, ge=0)
    # How often the fraud service checks the rules file for changes.
    fraud_rules_reload_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _threshold_within_score(self) -> Settings:
        if self.block_threshold > self.max_fraud_score:
            raise ValueError(
                f"BLOCK_THRESHOLD ({self.block_threshold}) exceeds MAX_FRAUD_SCORE "
                f"({self.max_fraud_score})"
            )
        if self.review_threshold > self.block_threshold:
            raise ValueError(
                f"REVIEW_THRESHOLD ({self.review_threshold}) exceeds BLOCK_THRESHOLD "
                f"({self.block_threshold})"
            )
        return self


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return load_settings(Settings)
