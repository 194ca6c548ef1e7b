"""The decision: signals (and the model's points) become a score, the score a decision.

Pure: no I/O. The servicer gathers signals from rules, velocity and device risk, asks the model
when there is one, and calls `decide`.

Semantics:
- score = min(MAX_FRAUD_SCORE, sum of every signal's points + the model's points);
- a block-list hit is BLOCK whatever the score (its signal carries MAX_FRAUD_SCORE points, so the
  score says so too);
- otherwise an allow-list hit is ALLOW whatever the score (the score is still reported);
- otherwise BLOCK at score >= BLOCK_THRESHOLD, REVIEW at score >= REVIEW_THRESHOLD, else ALLOW.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

# The model may add at most this many points (the model's own contract, DESIGN.md §5).
MAX_MODEL_POINTS = 40
MODEL_SIGNAL = "ml_model"
BLOCKLIST_PREFIX = "blocklist:"
ALLOWLIST_PREFIX = "allowlist:"


class Decision(enum.Enum):
    ALLOW = "ALLOW"
    REVIEW = "REVIEW"
    BLOCK = "BLOCK"


@dataclass(frozen=True)
class Transaction:
    """One payment as the scorer sees it: identifiers, never card data."""

    payment_id: str
    merchant_id: str
    amount_paisa: int
    currency: str
    payment_method: str
    occurred_at: datetime
    user_id: str = ""
    vpa: str = ""
    card_fingerprint: str = ""
    card_bin: str = ""
    email: str = ""
    merchant_category: str = ""
    device_fingerprint: str = ""
    user_agent: str = ""
    ip_address: str = ""
    attempt_key: str = ""  # the merchant's Idempotency-Key, when it sent one


@dataclass(frozen=True)
class Signal:
    """One reason for the score. `detail` is for humans and never holds card data."""

    name: str
    points: int
    detail: str = ""


class ModelScore(Protocol):
    """What `fraud.model` answers for one payment."""

    @property
    def points(self) -> int: ...
    @property
    def probability_bps(self) -> int: ...
    @property
    def version(self) -> str: ...


class Scorer(Protocol):
    """`fraud.model.load_scorer()` (in-process) or `fraud.model.HttpScorer` (FRAUD_ML_API_URL,
    asynchronous); `features` is a `fraud.model.Features`."""

    def score(self, features: Any) -> ModelScore | Awaitable[ModelScore]: ...


@dataclass(frozen=True)
class Thresholds:
    max_score: int
    block: int
    review: int


@dataclass(frozen=True)
class Verdict:
    score: int
    decision: Decision
    # Largest first; ties by name so the answer is stable.
    signals: tuple[Signal, ...]
    # Empty when the model did not contribute (then rules_only is True).
    model_version: str
    rules_only: bool
    # Why, in one stable word for metrics: the overriding list signal, else the top signal.
    reason: str


def decide(
    signals: Iterable[Signal], thresholds: Thresholds, model: ModelScore | None = None
) -> Verdict:
    collected = list(signals)
    if model is not None:
        points = max(0, min(MAX_MODEL_POINTS, model.points))
        collected.append(
            Signal(
                MODEL_SIGNAL,
                points,
                f"model {model.version}: fraud probability {model.probability_bps / 100:.2f}%",
            )
        )
    ordered = tuple(sorted(collected, key=lambda s: (-s.points, s.name)))
    score = max(0, min(thresholds.max_score, sum(s.points for s in ordered)))
    blocked = [s for s in ordered if s.name.startswith(BLOCKLIST_PREFIX)]
    allowed = [s for s in ordered if s.name.startswith(ALLOWLIST_PREFIX)]
    if blocked:
        decision, reason = Decision.BLOCK, blocked[0].name
    elif allowed:
        decision, reason = Decision.ALLOW, allowed[0].name
    else:
        if score >= thresholds.block:
            decision = Decision.BLOCK
        elif score >= thresholds.review:
            decision = Decision.REVIEW
        else:
            decision = Decision.ALLOW
        top = next((s for s in ordered if s.points > 0), None)
        reason = top.name if top is not None else "none"
    return Verdict(
        score=score,
        decision=decision,
        signals=ordered,
        model_version=model.version if model is not None else "",
        rules_only=model is None,
        reason=reason,
    )
