"""The test stacks' fraud scoring: the shipped rules and model, minus their hour-of-day parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import yaml

from devstack.fraud_scoring import (
    model_without_hours,
    rules_without_hours,
    write_clock_free_scoring,
)
from fraud.model import Features, Scorer, default_model_path, load_scorer
from fraud.rules import REPO_DEFAULT_RULES, load_rules


def test_only_rules_with_an_hour_condition_are_dropped() -> None:
    shipped = yaml.safe_load(REPO_DEFAULT_RULES.read_text())

    kept = rules_without_hours(shipped)

    names = [r["name"] for r in shipped["rules"]]
    assert "night_high_amount" in names
    assert [r["name"] for r in kept["rules"]] == [n for n in names if n != "night_high_amount"]
    assert {k: v for k, v in kept.items() if k != "rules"} == {
        k: v for k, v in shipped.items() if k != "rules"
    }


def test_only_the_hour_features_weight_is_zeroed() -> None:
    shipped = json.loads(default_model_path().read_text())

    kept = model_without_hours(shipped)

    assert shipped["weights"]["odd_hour"] != 0
    assert kept["weights"] == {**shipped["weights"], "odd_hour": 0.0}


def test_the_written_files_score_a_payment_alike_by_day_and_by_night(tmp_path: Path) -> None:
    settings = write_clock_free_scoring(tmp_path)

    rules = load_rules(Path(settings["FRAUD_RULES_CONFIG_PATH"]))
    scorer = load_scorer(Path(settings["FRAUD_MODEL_PATH"]))

    assert "night_high_amount" not in {rule.name for rule in rules.rules}
    assert "high_amount" in {rule.name for rule in rules.rules}
    night = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)  # 02:30 IST
    day = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)  # 13:30 IST
    assert isinstance(scorer, Scorer)
    assert scorer.score(_payment(night)) == scorer.score(_payment(day))
    shipped = load_scorer()
    assert isinstance(shipped, Scorer)
    assert shipped.score(_payment(night)) != shipped.score(_payment(day))


def _payment(at: datetime) -> Features:
    return Features(amount_paisa=10_000_000, payment_method="UPI", occurred_at=at)
