"""Percentiles and per-operation summaries, with the standard library only."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating linearly between the closest ranks.

    The same definition as numpy's default (`method="linear"`) and
    `statistics.quantiles(method="inclusive")`: the 0th is the minimum, the 100th the maximum.
    `values` need not be sorted.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile must be within 0 and 100, got {q}")
    ordered = sorted(values)
    return _sorted_percentile(ordered, q)


def _sorted_percentile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


@dataclass(frozen=True)
class Latency:
    """Latency distribution in milliseconds."""

    p50: float
    p90: float
    p99: float
    max: float
    min: float
    mean: float

    @classmethod
    def of_seconds(cls, seconds: Iterable[float]) -> Latency | None:
        ordered = sorted(s * 1000.0 for s in seconds)
        if not ordered:
            return None
        p50, p90, p99 = (_sorted_percentile(ordered, q) for q in PERCENTILES)
        return cls(
            p50=p50,
            p90=p90,
            p99=p99,
            max=ordered[-1],
            min=ordered[0],
            mean=math.fsum(ordered) / len(ordered),
        )

    def to_json(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in vars(self).items()}


@dataclass(frozen=True)
class Outcome:
    """One measured thing: a request or a journey. `error` is None when it succeeded."""

    seconds: float | None  # latency; None when there is none (e.g. a timeout)
    error: str | None = None


@dataclass(frozen=True)
class OperationStats:
    """Counts, error rate and latency (over successes only) of one operation."""

    count: int
    ok: int
    errors: int
    errors_by_kind: dict[str, int]
    latency: Latency | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> OperationStats:
        kinds: Counter[str] = Counter()
        ok_seconds: list[float] = []
        count = 0
        for outcome in outcomes:
            count += 1
            if outcome.error is not None:
                kinds[outcome.error] += 1
            elif outcome.seconds is not None:
                ok_seconds.append(outcome.seconds)
        errors = sum(kinds.values())
        return cls(
            count=count,
            ok=count - errors,
            errors=errors,
            errors_by_kind=dict(kinds.most_common()),
            latency=Latency.of_seconds(ok_seconds),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "ok": self.ok,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "errors_by_kind": self.errors_by_kind,
            "latency_ms": self.latency.to_json() if self.latency else None,
        }
