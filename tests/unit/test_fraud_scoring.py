"""The fraud decision: score, thresholds, list overrides and the model's points."""

from __future__ import annotations

from dataclasses import dataclass

from fraud.scoring import Decision, Signal, Thresholds, decide

THRESHOLDS = Thresholds(max_score=100, block=80, review=50)


@dataclass(frozen=True)
class FakeModelScore:
    points: int
    probability_bps: int = 1234
    version: str = "fraud-model-test"


def test_score_is_the_sum_of_points_and_decides_by_thresholds() -> None:
    assert decide([Signal("rule:a", 20), Signal("rule:b", 29)], THRESHOLDS).decision is (
        Decision.ALLOW
    )
    review = decide([Signal("rule:a", 20), Signal("rule:b", 30)], THRESHOLDS)
    block = decide([Signal("rule:a", 40), Signal("rule:b", 40)], THRESHOLDS)

    assert (review.score, review.decision) == (50, Decision.REVIEW)
    assert (block.score, block.decision) == (80, Decision.BLOCK)


def test_score_is_capped_at_the_maximum() -> None:
    verdict = decide([Signal("rule:a", 70), Signal("rule:b", 70)], THRESHOLDS)

    assert verdict.score == 100


def test_signals_are_listed_largest_first_and_the_top_one_is_the_reason() -> None:
    verdict = decide(
        [Signal("rule:small", 5), Signal("velocity_user_1m", 30), Signal("rule:mid", 10)],
        THRESHOLDS,
    )

    assert [s.name for s in verdict.signals] == ["velocity_user_1m", "rule:mid", "rule:small"]
    assert verdict.reason == "velocity_user_1m"
    assert decide([], THRESHOLDS).reason == "none"


def test_block_list_blocks_whatever_the_score_even_when_allow_listed() -> None:
    verdict = decide(
        [Signal("allowlist:email", 0), Signal("blocklist:vpa", 100)],
        Thresholds(max_score=100, block=100, review=100),
    )

    assert verdict.decision is Decision.BLOCK
    assert verdict.reason == "blocklist:vpa"


def test_allow_list_allows_whatever_the_score() -> None:
    verdict = decide([Signal("rule:huge", 95), Signal("allowlist:card_fingerprint", 0)], THRESHOLDS)

    assert (verdict.score, verdict.decision) == (95, Decision.ALLOW)
    assert verdict.reason == "allowlist:card_fingerprint"


def test_without_a_model_the_verdict_is_rules_only() -> None:
    verdict = decide([Signal("rule:a", 10)], THRESHOLDS)

    assert verdict.rules_only is True
    assert verdict.model_version == ""


def test_model_points_are_added_as_a_signal_and_clamped_to_40() -> None:
    verdict = decide([Signal("rule:a", 30)], THRESHOLDS, FakeModelScore(points=55))

    assert verdict.rules_only is False
    assert verdict.model_version == "fraud-model-test"
    assert (verdict.score, verdict.decision) == (70, Decision.REVIEW)
    assert ("ml_model", 40) in [(s.name, s.points) for s in verdict.signals]
    assert decide([], THRESHOLDS, FakeModelScore(points=-3)).score == 0
