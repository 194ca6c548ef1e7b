"""The rate limit service's pure logic: which limit a descriptor gets, its window, the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ratelimit.limits import (
    ConfigError,
    LimitConfig,
    RateLimit,
    Unit,
    decide,
    load_config,
    parse_config,
    window_for,
)

REPO_LIMITS = (
    Path(__file__).resolve().parents[2] / "services" / "ratelimit" / "config" / "limits.yaml"
)


def config(descriptors: list[dict[str, Any]], domain: str = "paygate") -> LimitConfig:
    return parse_config({"domain": domain, "descriptors": descriptors})


MERCHANTS = config(
    [
        {
            "key": "generic_key",
            "value": "global",
            "rate_limit": {"unit": "second", "requests_per_unit": 2000},
        },
        {"key": "merchant_id", "rate_limit": {"unit": "second", "requests_per_unit": 100}},
        {
            "key": "merchant_id",
            "value": "m_bulk",
            "rate_limit": {"unit": "minute", "requests_per_unit": 500},
        },
        {"key": "merchant_id", "value": "m_internal", "unlimited": True},
    ]
)


def test_a_merchant_without_an_entry_gets_the_default_merchant_limit() -> None:
    limit = MERCHANTS.limit_for([("merchant_id", "m_123")])
    assert limit == RateLimit(requests_per_unit=100, unit=Unit.SECOND, name="merchant_id")


def test_a_merchant_with_its_own_entry_gets_its_override() -> None:
    limit = MERCHANTS.limit_for([("merchant_id", "m_bulk")])
    assert limit == RateLimit(requests_per_unit=500, unit=Unit.MINUTE, name="merchant_id=m_bulk")


def test_an_unlimited_merchant_is_not_limited() -> None:
    assert MERCHANTS.limit_for([("merchant_id", "m_internal")]) is None


def test_the_global_key_matches_only_its_value() -> None:
    assert MERCHANTS.limit_for([("generic_key", "global")]) is not None
    assert MERCHANTS.limit_for([("generic_key", "other")]) is None


def test_an_unknown_key_or_an_empty_descriptor_is_not_limited() -> None:
    assert MERCHANTS.limit_for([("client_ip", "10.0.0.1")]) is None
    assert MERCHANTS.limit_for([]) is None


def test_nested_descriptors_limit_only_the_full_path() -> None:
    nested = config(
        [
            {
                "key": "merchant_id",
                "descriptors": [
                    {
                        "key": "path",
                        "value": "/api/v1/payments",
                        "rate_limit": {"unit": "second", "requests_per_unit": 5},
                    }
                ],
            }
        ]
    )
    limit = nested.limit_for([("merchant_id", "m_1"), ("path", "/api/v1/payments")])
    assert limit is not None
    assert limit.requests_per_unit == 5
    assert limit.name == "merchant_id.path=/api/v1/payments"
    assert nested.limit_for([("merchant_id", "m_1")]) is None  # the parent has no limit itself
    assert nested.limit_for([("merchant_id", "m_1"), ("path", "/other")]) is None


def test_a_window_is_aligned_to_its_unit_and_named_by_descriptor_and_start() -> None:
    limit = RateLimit(requests_per_unit=10, unit=Unit.MINUTE, name="merchant_id")
    window = window_for("paygate", [("merchant_id", "m_1")], limit, now=1_700_000_042.7)
    assert window.key == "ratelimit:paygate:merchant_id=m_1:minute:1700000040"
    assert window.seconds_until_reset == 58
    assert window.ttl_seconds == 61


def test_the_same_descriptor_in_the_next_window_counts_in_a_new_key() -> None:
    limit = RateLimit(requests_per_unit=10, unit=Unit.SECOND, name="generic_key=global")
    first = window_for("paygate", [("generic_key", "global")], limit, now=100.9)
    second = window_for("paygate", [("generic_key", "global")], limit, now=101.0)
    assert first.key != second.key
    assert first.seconds_until_reset == 1


def test_the_request_that_reaches_the_limit_passes_and_the_next_one_is_over() -> None:
    limit = RateLimit(requests_per_unit=3, unit=Unit.SECOND, name="merchant_id")
    window = window_for("paygate", [("merchant_id", "m")], limit, now=0)
    at_limit = decide(limit, 3, window)
    assert (at_limit.over_limit, at_limit.remaining) == (False, 0)
    over = decide(limit, 4, window)
    assert (over.over_limit, over.remaining) == (True, 0)
    assert decide(limit, 1, window).remaining == 2


def test_a_zero_limit_blocks_everything() -> None:
    limit = RateLimit(requests_per_unit=0, unit=Unit.DAY, name="merchant_id=m_blocked")
    window = window_for("paygate", [("merchant_id", "m_blocked")], limit, now=0)
    assert decide(limit, 1, window).over_limit


def test_the_shipped_limits_file_sets_a_global_and_a_per_merchant_limit() -> None:
    shipped = load_config(REPO_LIMITS)
    assert shipped.domain == "paygate"
    assert shipped.limit_for([("generic_key", "global")]) is not None
    merchant = shipped.limit_for([("merchant_id", "any-merchant")])
    assert merchant is not None
    assert (merchant.requests_per_unit, merchant.unit) == (100, Unit.SECOND)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({"descriptors": []}, "domain"),
        ({"domain": "d", "descriptors": {"key": "x"}}, "must be a list"),
        ({"domain": "d", "descriptors": [{"value": "x"}]}, "needs a non-empty key"),
        (
            {
                "domain": "d",
                "descriptors": [
                    {"key": "k", "rate_limit": {"unit": "fortnight", "requests_per_unit": 1}}
                ],
            },
            "unit must be one of",
        ),
        (
            {
                "domain": "d",
                "descriptors": [
                    {"key": "k", "rate_limit": {"unit": "second", "requests_per_unit": -1}}
                ],
            },
            "non-negative integer",
        ),
        (
            {
                "domain": "d",
                "descriptors": [
                    {"key": "k", "rate_limit": {"unit": "second", "requests_per_unit": "10"}}
                ],
            },
            "non-negative integer",
        ),
        ({"domain": "d", "descriptors": [{"key": "k"}, {"key": "k"}]}, "defined twice"),
        (
            {
                "domain": "d",
                "descriptors": [
                    {
                        "key": "k",
                        "unlimited": True,
                        "rate_limit": {"unit": "second", "requests_per_unit": 1},
                    }
                ],
            },
            "exclude each other",
        ),
    ],
)
def test_an_invalid_config_is_refused_with_a_reason(raw: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_config(raw)


def test_an_unreadable_or_malformed_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("domain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_numeric_descriptor_values_in_yaml_match_their_string_form(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "domain": "paygate",
                "descriptors": [
                    {
                        "key": "merchant_id",
                        "value": 42,
                        "rate_limit": {"unit": "hour", "requests_per_unit": 7},
                    }
                ],
            }
        )
    )
    limit = load_config(path).limit_for([("merchant_id", "42")])
    assert limit is not None
    assert limit.unit is Unit.HOUR
