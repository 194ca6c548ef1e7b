"""Fraud rules: every condition kind, block and allow lists, parse errors, hot reload."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraud.rules import REPO_DEFAULT_RULES, RulesError, RulesFile, load_rules, parse_rules
from fraud.scoring import Transaction

# 10:00 IST
MORNING = datetime(2026, 11, 22, 4, 30, tzinfo=UTC)
# 02:00 IST
NIGHT = datetime(2026, 11, 21, 20, 30, tzinfo=UTC)


def txn(**fields: Any) -> Transaction:
    base: dict[str, Any] = {
        "payment_id": "pay_1",
        "merchant_id": "m_1",
        "amount_paisa": 10_000,
        "currency": "INR",
        "payment_method": "UPI",
        "occurred_at": MORNING,
    }
    return Transaction(**(base | fields))


def fired(when: dict[str, Any], payment: Transaction) -> bool:
    rules = parse_rules({"rules": [{"name": "r", "points": 10, "when": when}]})
    return [s.name for s in rules.rule_signals(payment)] == ["rule:r"]


def test_amount_bounds_are_inclusive() -> None:
    when = {"amount_min_paisa": 1000, "amount_max_paisa": 2000}

    assert fired(when, txn(amount_paisa=1000))
    assert fired(when, txn(amount_paisa=2000))
    assert not fired(when, txn(amount_paisa=999))
    assert not fired(when, txn(amount_paisa=2001))


def test_payment_method_condition_matches_any_listed_method() -> None:
    when = {"payment_methods": ["card", "WALLET"]}

    assert fired(when, txn(payment_method="CARD"))
    assert fired(when, txn(payment_method="WALLET"))
    assert not fired(when, txn(payment_method="UPI"))


def test_ip_condition_matches_cidr_blocks_of_either_family() -> None:
    when = {"ip_cidrs": ["10.0.0.0/8", "2001:db8::/32"]}

    assert fired(when, txn(ip_address="10.1.2.3"))
    assert fired(when, txn(ip_address="2001:db8::1"))
    assert not fired(when, txn(ip_address="11.0.0.1"))
    assert not fired(when, txn(ip_address=""))
    assert not fired(when, txn(ip_address="not-an-ip"))


def test_merchant_category_condition() -> None:
    when = {"merchant_categories": ["7995", 6051]}

    assert fired(when, txn(merchant_category="7995"))
    assert fired(when, txn(merchant_category="6051"))
    assert not fired(when, txn(merchant_category="5411"))


def test_hour_condition_is_in_ist_and_may_wrap_midnight() -> None:
    night = {"hour_ist_from": 23, "hour_ist_to": 5}
    office = {"hour_ist_from": 9, "hour_ist_to": 18}

    assert fired(night, txn(occurred_at=NIGHT))
    assert not fired(night, txn(occurred_at=MORNING))
    assert fired(office, txn(occurred_at=MORNING))
    assert not fired(office, txn(occurred_at=NIGHT))


def test_all_conditions_of_a_rule_must_hold() -> None:
    when = {"amount_min_paisa": 5000, "payment_methods": ["CARD"]}

    assert fired(when, txn(amount_paisa=5000, payment_method="CARD"))
    assert not fired(when, txn(amount_paisa=5000, payment_method="UPI"))
    assert not fired(when, txn(amount_paisa=4999, payment_method="CARD"))


def test_rule_signal_carries_the_rules_points() -> None:
    rules = parse_rules({"rules": [{"name": "big", "points": 35, "when": {"amount_min_paisa": 1}}]})

    [signal] = rules.rule_signals(txn())

    assert (signal.name, signal.points) == ("rule:big", 35)


@pytest.mark.parametrize(
    ("kind", "listed", "payment"),
    [
        ("vpa", "Fraud@OkBank", {"vpa": "fraud@okbank"}),
        ("card_fingerprint", "fp_abc", {"card_fingerprint": "fp_abc"}),
        ("device_fingerprint", "dev_1", {"device_fingerprint": "dev_1"}),
        ("ip", "203.0.113.0/24", {"ip_address": "203.0.113.9"}),
        ("ip", "198.51.100.7", {"ip_address": "198.51.100.7"}),
        ("email", "mule@example.com", {"email": "MULE@example.com"}),
    ],
)
def test_block_and_allow_lists_match_each_kind(
    kind: str, listed: str, payment: dict[str, Any]
) -> None:
    blocked = parse_rules({"lists": {"block": {kind: [listed]}}})
    allowed = parse_rules({"lists": {"allow": {kind: [listed]}}})

    assert [(s.name, s.points) for s in blocked.list_signals(txn(**payment), 100)] == [
        (f"blocklist:{kind}", 100)
    ]
    assert [(s.name, s.points) for s in allowed.list_signals(txn(**payment), 100)] == [
        (f"allowlist:{kind}", 0)
    ]
    assert blocked.list_signals(txn(), 100) == []


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"rules": [{"name": "r", "points": 1, "when": {"amount_min": 1}}]}, "unknown key"),
        ({"rules": [{"name": "r", "points": 1, "when": {"ip_cidrs": ["10.0.0/33"]}}]}, "CIDR"),
        ({"rules": [{"name": "r", "points": 1, "when": {"payment_methods": ["BTC"]}}]}, "BTC"),
        ({"rules": [{"name": "r", "points": -1, "when": {"amount_min_paisa": 1}}]}, "points"),
        ({"rules": [{"name": "r", "points": 1}]}, "at least one condition"),
        ({"rules": [{"name": "r", "points": 1, "when": {"hour_ist_from": 2}}]}, "go together"),
        (
            {"rules": [{"name": "r", "points": 1, "when": {"amount_min_paisa": 1}}] * 2},
            "used twice",
        ),
        ({"velocity": [{"entity": "merchant", "window": "1m", "max_count": 1}]}, "entity"),
        ({"velocity": [{"entity": "user", "window": "5m", "max_count": 1}]}, "window"),
        ({"velocity": [{"entity": "user", "window": "1m", "points": 1}]}, "exactly one"),
        ({"lists": {"block": {"phone": ["1"]}}}, "unknown key"),
        ({"device": {"many_users": {"max_24h": 0, "points": 1}}}, "max_24h"),
        (["not", "a", "mapping"], "expected a mapping"),
    ],
)
def test_invalid_rules_are_refused_with_the_place_and_problem(raw: Any, problem: str) -> None:
    with pytest.raises(RulesError, match=problem):
        parse_rules(raw, "fraud-rules.yaml")


def test_shipped_rules_file_is_valid() -> None:
    rules = load_rules(REPO_DEFAULT_RULES)

    assert {r.name for r in rules.rules} >= {"high_amount"}
    assert {v.name for v in rules.velocity} >= {"velocity_user_1m", "velocity_card_1m"}


# Hot reload -----------------------------------------------------------------------------------

V1 = {"rules": [{"name": "v1", "points": 10, "when": {"amount_min_paisa": 1}}]}
V2 = {"rules": [{"name": "v2", "points": 20, "when": {"amount_min_paisa": 1}}]}


def write(path: Path, content: Any, bump_seconds: int = 0) -> None:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    # Filesystems with coarse timestamps: make each write visibly newer.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_seconds * 1_000_000_000))


def rule_names(rules_file: RulesFile) -> list[str]:
    return [r.name for r in rules_file.current.rules]


def test_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, V1)
    rules_file = RulesFile(path)

    assert rules_file.poll() is False  # unchanged
    write(path, V2, bump_seconds=1)

    assert rules_file.poll() is True
    assert rule_names(rules_file) == ["v2"]
    assert rules_file.last_error is None


def test_bad_file_is_refused_and_old_rules_stay_in_force(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, V1)
    outcomes: list[bool] = []
    rules_file = RulesFile(path, on_reload=outcomes.append)

    write(path, "rules: [ {name: broken", bump_seconds=1)
    assert rules_file.poll() is False
    assert rule_names(rules_file) == ["v1"]
    assert rules_file.last_error is not None
    assert str(path) in rules_file.last_error
    assert "not valid YAML" in rules_file.last_error

    write(path, {"rules": [{"name": "x", "points": 1, "when": {"colour": "red"}}]}, 2)
    assert rules_file.poll() is False
    assert rule_names(rules_file) == ["v1"]
    assert "colour" in (rules_file.last_error or "")

    path.unlink()
    assert rules_file.poll() is False
    assert "cannot read" in (rules_file.last_error or "")

    write(path, V2, bump_seconds=3)
    assert rules_file.poll() is True
    assert rule_names(rules_file) == ["v2"]
    assert rules_file.last_error is None
    assert outcomes == [False, False, False, True]


def test_bad_file_at_start_up_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, "velocity: 3")

    with pytest.raises(RulesError, match="velocity"):
        RulesFile(path)


async def test_watch_task_applies_a_change_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, V1)
    rules_file = RulesFile(path)
    task = asyncio.create_task(rules_file.watch(0.05))
    try:
        write(path, V2, bump_seconds=1)
        for _ in range(100):
            if rule_names(rules_file) == ["v2"]:
                break
            await asyncio.sleep(0.01)
        assert rule_names(rules_file) == ["v2"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
