"""Fraud scoring that does not depend on the hour, for stacks whose outcomes must not depend on
when they run (the end-to-end tests, the chaos run).

The shipped rules add points to large payments between midnight and 05:00 IST
(`night_high_amount`), and the committed model weighs `odd_hour` (01:00-05:00 IST): that is
18:30-23:30 UTC, so a test payment allowed by day is challenged or blocked by night. Both are
tested without a stack (tests/unit/test_fraud_rules.py, test_fraud_model.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fraud.model import default_model_path
from fraud.rules import REPO_DEFAULT_RULES

HOUR_CONDITIONS = frozenset({"hour_ist_from", "hour_ist_to"})
HOUR_FEATURES = frozenset({"odd_hour"})


def rules_without_hours(rules: dict[str, Any]) -> dict[str, Any]:
    """A rules file's content minus every rule with an hour-of-day condition."""
    kept = [r for r in rules.get("rules", []) if not HOUR_CONDITIONS & set(r.get("when", {}))]
    return {**rules, "rules": kept}


def model_without_hours(model: dict[str, Any]) -> dict[str, Any]:
    """A model file's content with the hour features' weights at zero."""
    weights = {k: (0.0 if k in HOUR_FEATURES else w) for k, w in model["weights"].items()}
    return {**model, "weights": weights}


def write_clock_free_scoring(state_dir: Path) -> dict[str, str]:
    """Writes the shipped rules and the committed model, without their hour-of-day parts, into
    `state_dir`; returns the settings that point the fraud service at them."""
    rules = state_dir / "fraud-rules.yaml"
    rules.write_text(
        yaml.safe_dump(rules_without_hours(yaml.safe_load(REPO_DEFAULT_RULES.read_text())))
    )
    model = state_dir / "fraud-model.json"
    model.write_text(json.dumps(model_without_hours(json.loads(default_model_path().read_text()))))
    return {"FRAUD_RULES_CONFIG_PATH": str(rules), "FRAUD_MODEL_PATH": str(model)}
