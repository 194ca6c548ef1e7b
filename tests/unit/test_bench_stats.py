"""The benchmark's percentiles and per-operation summaries, against known data."""

from __future__ import annotations

import random
import statistics

import pytest
from bench.stats import Latency, OperationStats, Outcome, percentile


def test_percentiles_of_one_to_hundred() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(7).shuffle(values)  # order must not matter
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 100) == 100.0


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 25) == pytest.approx(17.5)
    assert percentile([5.0], 99) == 5.0


def test_percentile_matches_the_standard_librarys_inclusive_quantiles() -> None:
    data = [random.Random(1).expovariate(1 / 40) for _ in range(1001)]
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for q in (1, 10, 50, 90, 99):
        assert percentile(data, q) == pytest.approx(cuts[q - 1])


@pytest.mark.parametrize("q", [-1, 100.5, float("nan")])
def test_percentile_refuses_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_is_in_milliseconds() -> None:
    latency = Latency.of_seconds([0.010, 0.020, 0.030, 0.040, 0.100])
    assert latency is not None
    assert latency.p50 == pytest.approx(30.0)
    assert latency.max == pytest.approx(100.0)
    assert latency.min == pytest.approx(10.0)
    assert latency.mean == pytest.approx(40.0)
    assert Latency.of_seconds([]) is None


def test_operation_stats_count_errors_by_kind_and_time_successes_only() -> None:
    outcomes = [
        Outcome(0.010),
        Outcome(0.030),
        Outcome(0.001, "HTTP 429"),  # a fast refusal must not flatter the latency
        Outcome(0.002, "HTTP 429"),
        Outcome(None, "timeout"),
    ]
    stats = OperationStats.of(outcomes)
    assert (stats.count, stats.ok, stats.errors) == (5, 2, 3)
    assert stats.error_rate == pytest.approx(0.6)
    assert stats.errors_by_kind == {"HTTP 429": 2, "timeout": 1}
    assert list(stats.errors_by_kind) == ["HTTP 429", "timeout"]  # most common first
    assert stats.latency is not None
    assert stats.latency.p50 == pytest.approx(20.0)
    assert stats.latency.max == pytest.approx(30.0)


def test_operation_stats_of_nothing() -> None:
    stats = OperationStats.of([])
    assert stats.to_json() == {
        "count": 0,
        "ok": 0,
        "errors": 0,
        "error_rate": 0.0,
        "errors_by_kind": {},
        "latency_ms": None,
    }
