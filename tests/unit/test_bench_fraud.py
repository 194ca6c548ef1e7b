"""The fraud benchmark's pure parts: synthetic requests, options, the report and its table."""

from __future__ import annotations

import io
from typing import Any

import pytest
from bench.fraud import (
    GRPC,
    IN_PROCESS,
    MODEL_ONLY,
    RULES_ONLY,
    build_report,
    parse_args,
    render_report,
    synthetic_requests,
    to_proto,
)
from bench.stats import OperationStats, Outcome
from rich.console import Console


def test_synthetic_requests_are_deterministic_and_varied() -> None:
    first = synthetic_requests(500, seed=7, run_id="r1")
    assert first == synthetic_requests(500, seed=7, run_id="r1")
    assert len({r.payment_id for r in first}) == 500
    for field in ("user_id", "device_fingerprint", "ip_address", "amount_paisa"):
        assert len({getattr(r, field) for r in first}) > 50, field
    assert {r.payment_method for r in first} >= {"UPI", "CARD"}
    assert all(r.vpa for r in first if r.payment_method == "UPI")
    assert all(r.card_fingerprint for r in first if r.payment_method == "CARD")
    assert all(r.amount_paisa > 0 for r in first)
    assert all("r1" in r.user_id for r in first)


def test_requests_become_valid_protos() -> None:
    request = to_proto(synthetic_requests(1, seed=1, run_id="x")[0])
    assert request.payment_id
    assert request.merchant_id
    assert request.amount_paisa > 0
    assert request.device.ip_address


def test_options_have_the_issue_defaults_and_refuse_nonsense() -> None:
    args = parse_args([])
    assert (args.checks, args.rate, args.duration, args.target_p99_ms) == (5000, 1000, 10, 5)
    with pytest.raises(SystemExit):
        parse_args(["--rate", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--warmup", "-1"])


def _op(*seconds: float, errors: int = 0) -> dict[str, Any]:
    outcomes = [Outcome(s) for s in seconds] + [Outcome(None, "DEADLINE_EXCEEDED")] * errors
    return OperationStats.of(outcomes).to_json()


def _report(p99_seconds: float) -> dict[str, Any]:
    in_process = {
        "checks": 3,
        "warmup_checks": 0,
        "model_version": "v",
        "operations": {
            IN_PROCESS: _op(0.001, 0.001, p99_seconds),
            MODEL_ONLY: _op(0.00001),
            RULES_ONLY: _op(0.00002),
        },
        "decisions": {"ALLOW": 3},
        "degraded": {},
    }
    grpc_result = {
        "rate": 1000.0,
        "duration": 10.0,
        "warmup": 1.0,
        "arrivals": 3,
        "operation": _op(0.002, 0.003, errors=1),
        "achieved_per_s": 0.2,
        "generator": {"start_lag_ms": None, "cpu_s": 1.0, "cpu_percent_of_one_core": 10.0},
    }
    return build_report(
        config={"target_p99_ms": 5.0},
        in_process=in_process,
        grpc_result=grpc_result,
        machine={"cpu_count": 2},
        git={"commit": None},
        started_at="2026-11-22T00:00:00+00:00",
    )


def test_the_target_is_the_in_process_p99() -> None:
    assert _report(0.002)["target"]["passed"] is True
    failed = _report(0.5)["target"]
    assert failed["passed"] is False
    assert failed["measured_p99_ms"] > 5.0


def test_the_table_shows_every_measurement_and_the_verdict() -> None:
    out = io.StringIO()
    render_report(_report(0.5), Console(file=out, width=200))
    text = out.getvalue()
    assert "FAIL" in text
    assert "DEADLINE_EXCEEDED" in text
    assert all(label in text for label in ("in-process", "model only", "rules only", "gRPC"))
    assert GRPC == "grpc"
