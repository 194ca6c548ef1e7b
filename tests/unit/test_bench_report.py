"""The benchmark report: its structure, what counts in the measured window, the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from bench.cli import LIFTED_PER_SECOND, door_limits_lifted, parse_args
from bench.journey import CREATE, GET, UNFINISHED, JourneyRecord, RequestRecord
from bench.procstats import Sample, Usage
from bench.report import (
    DROPPED,
    FLOOR,
    GET_PHASE,
    GetPhaseFacts,
    PhaseFacts,
    RunFacts,
    build_report,
    render_report,
)
from rich.console import Console

NEVER = "never succeeded (still PENDING after 10 s)"
CONFIG = {"rate": 2.0, "duration": 10.0, "warmup": 2.0, "merchants": 2, "gateway": "http://gw"}


def facts(**changes: Any) -> RunFacts:
    # Measured window: clock 102..112. Warm-up iteration 0 (due 100), measured 1 and 2.
    requests = [
        RequestRecord(CREATE, False, 100.0, 100.05, None),  # warm-up: not in latency stats
        RequestRecord(GET, False, 101.0, 102.5, None),  # ... but in the window's throughput
        RequestRecord(CREATE, True, 103.0, 103.010, None),
        RequestRecord(GET, True, 103.26, 103.280, None),
        RequestRecord(GET, True, 103.52, 103.530, "HTTP 429"),
        RequestRecord(CREATE, True, 111.5, 111.540, None),
        RequestRecord(GET, True, 111.8, 112.5, None),  # answered after the window
    ]
    journeys = [
        JourneyRecord(0, False, 100.0, 102.6, None, 1, "SUCCESS"),
        JourneyRecord(1, True, 103.0, 104.0, None, 3, "SUCCESS"),
        JourneyRecord(
            2, True, 111.5, 121.6, "never succeeded (still PENDING after 10 s)", 40, "PENDING"
        ),
    ]
    base: dict[str, Any] = {
        "config": CONFIG,
        "started_at": "2026-11-22T10:00:00+00:00",
        "window": (102.0, 112.0),
        "requests": requests,
        "journeys": journeys,
        "start_lags": [0.001, 0.003],
        "examples": {"get: HTTP 429": '{"code": 8}'},
        "machine": {"cpu_count": 2},
        "git": {"commit": "abc123", "dirty": False},
    }
    return RunFacts(**(base | changes))


def test_report_structure_is_json_with_every_section() -> None:
    report = build_report(facts())
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {
        "schema_version",
        "benchmark",
        "started_at",
        "config",
        "machine",
        "git",
        "duration_s",
        "offered",
        "throughput",
        "operations",
        "polls_per_journey",
        "generator",
        "error_examples",
        "fraud",
        "get_phase",
        "floor",
        "processes",
        "notes",
    }
    assert set(report["operations"]) == {"create", "get", "time_to_success"}
    for stats in report["operations"].values():
        assert set(stats) == {"count", "ok", "errors", "error_rate", "errors_by_kind", "latency_ms"}
    assert report["machine"] == {"cpu_count": 2}
    assert report["git"] == {"commit": "abc123", "dirty": False}
    assert report["duration_s"] == 10.0


def test_only_measured_iterations_count_in_the_operations() -> None:
    operations = build_report(facts())["operations"]
    create = operations["create"]
    assert (create["count"], create["ok"], create["errors"]) == (2, 2, 0)
    assert create["latency_ms"]["p50"] == pytest.approx(25.0)
    assert create["latency_ms"]["max"] == pytest.approx(40.0)
    get = operations["get"]
    assert (get["count"], get["ok"], get["errors"]) == (3, 2, 1)
    assert get["error_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert get["errors_by_kind"] == {"HTTP 429": 1}
    assert get["latency_ms"]["max"] == pytest.approx(700.0)  # 429's 10 ms not among them
    journeys = operations["time_to_success"]
    assert (journeys["count"], journeys["ok"]) == (2, 1)
    assert journeys["latency_ms"]["p50"] == pytest.approx(1000.0)
    assert journeys["errors_by_kind"] == {NEVER: 1}


def test_throughput_counts_what_completed_inside_the_measured_window() -> None:
    report = build_report(facts())
    # In [102, 112): the warm-up poll at 102.5, four measured answers; not the one at 112.5.
    assert report["throughput"]["requests_per_s"] == pytest.approx(0.5)
    assert report["throughput"]["ok_requests_per_s"] == pytest.approx(0.4)
    assert report["throughput"]["requests_per_s_per_merchant"] == pytest.approx(0.25)
    # Journeys reaching SUCCESS in the window: the warm-up one (102.6) and journey 1 (104.0).
    assert report["throughput"]["journeys_per_s"] == pytest.approx(0.2)
    assert report["offered"] == {"rate_per_s": 2.0, "arrivals": 2, "dropped": 0}
    assert report["polls_per_journey"] == {"mean": 21.5, "max": 40}
    assert report["generator"]["start_lag_ms"]["max"] == pytest.approx(3.0)


def test_dropped_and_unfinished_arrivals_are_journey_errors() -> None:
    report = build_report(facts(dropped=3, unfinished=1))
    journeys = report["operations"]["time_to_success"]
    assert journeys["count"] == 6
    assert journeys["errors_by_kind"][DROPPED] == 3
    assert journeys["errors_by_kind"][UNFINISHED] == 1
    assert report["offered"]["arrivals"] == 5
    assert any("dropped" in note for note in report["notes"])


def test_payments_let_through_unscored_are_counted_and_noted() -> None:
    report = build_report(facts(unscored=2))
    assert report["fraud"] == {"unscored_creates": 2}
    assert any(
        "2 measured payments were let through without a fraud score" in n for n in report["notes"]
    )
    assert build_report(facts())["fraud"] == {"unscored_creates": 0}


def test_notes_explain_a_run_where_nothing_succeeds() -> None:
    journeys = [JourneyRecord(i, True, 103.0, 114.0, NEVER, 40, "PENDING") for i in range(3)]
    report = build_report(facts(journeys=journeys))
    assert report["operations"]["time_to_success"]["latency_ms"] is None
    notes = " ".join(report["notes"])
    assert "No journey reached SUCCESS (3 of 3 never succeeded)" in notes
    assert "rate limited (HTTP 429)" in notes


def test_rendered_tables_show_the_numbers() -> None:
    console = Console(record=True, width=140)
    render_report(build_report(facts()), console)
    text = console.export_text()
    assert "offered 2/s for 10 s" in text
    assert "create (POST)" in text
    assert "time to SUCCESS" in text
    assert " 1000 " in text  # journey p50, ms (whole ms from 1 s up)
    assert "25.0" in text  # create p50, ms
    assert "HTTP 429" in text
    assert "commit abc123" in text


RATE_LIMITED = '{"code": 8, "message": "rate limited"}'


def get_phase(requests: list[RequestRecord], callers: dict[str, int]) -> GetPhaseFacts:
    return GetPhaseFacts(
        phase=PhaseFacts(
            window=(115.0, 125.0),
            requests=requests,
            examples={"get_phase: HTTP 429": RATE_LIMITED},
        ),
        payments=6,
        callers_per_merchant=callers,
    )


def with_phases_and_processes() -> RunFacts:
    # GET phase measured over clock 115..125: its warm-up request, 8 answers of 200 OK taking
    # 10, 20, ... 80 ms, two 429s, and one answered after the window (not counted).
    get_requests = [RequestRecord(GET_PHASE, False, 114.5, 114.6, None)]
    get_requests += [
        RequestRecord(GET_PHASE, True, 115.0 + i, 115.0 + i + 0.01 * (i + 1), None)
        for i in range(8)
    ]
    get_requests += [RequestRecord(GET_PHASE, True, 123.5, 123.505, "HTTP 429")] * 2
    get_requests += [RequestRecord(GET_PHASE, True, 124.99, 125.2, None)]
    # Floor phase measured over clock 130..140: 8 answers, 6 of them 200 OK.
    floor_requests = [RequestRecord(FLOOR, False, 129.5, 129.6, None)]  # its warm-up
    floor_requests += [RequestRecord(FLOOR, True, 130 + i, 130.5 + i, None) for i in range(6)]
    floor_requests += [RequestRecord(FLOOR, True, 137.0, 137.2, "HTTP 429")] * 2
    # The orchestrator uses 0.25 CPU s/s during the journeys' window, 0.3 during the GET phase
    # and 0.1 during the floor; 0.5 and 0.4 in the gaps between them, which must not count.
    samples = [
        Sample(at, {"orchestrator": Usage(cpu, 100 * 2**20), "generator": Usage(0.0, 2**20)})
        for at, cpu in (
            (100.0, 0.0),
            (102.0, 1.0),
            (112.0, 3.5),
            (115.0, 5.0),
            (125.0, 8.0),
            (130.0, 10.0),
            (140.0, 11.0),
        )
    ]
    return facts(
        get_phase=get_phase(get_requests, {"MER_A": 2, "MER_B": 1, "MER_C": 1}),
        floor=PhaseFacts(window=(130.0, 140.0), requests=floor_requests),
        process_samples=samples,
    )


def test_get_phase_rates_latency_and_errors_over_its_own_window() -> None:
    get = build_report(with_phases_and_processes())["get_phase"]
    assert get["duration_s"] == 10.0
    # 10 measured requests answered by 125 (the warm-up one and the late one left out).
    assert get["requests_per_s"] == pytest.approx(1.0)
    assert get["ok_requests_per_s"] == pytest.approx(0.8)
    operation = get["operation"]
    assert (operation["count"], operation["ok"], operation["errors"]) == (10, 8, 2)
    assert operation["errors_by_kind"] == {"HTTP 429": 2}
    latency = operation["latency_ms"]  # over the eight 200s: 10, 20, ... 80 ms
    assert latency["p50"] == pytest.approx(45.0)
    assert latency["p90"] == pytest.approx(73.0)
    assert latency["p99"] == pytest.approx(79.3)
    assert latency["max"] == pytest.approx(80.0)
    assert get["error_examples"] == {"get_phase: HTTP 429": RATE_LIMITED}
    assert (get["payments"], get["merchants"], get["callers"]) == (6, 3, 4)
    # MER_A carries two of the four callers: it reaches 100/s when all four send 200/s.
    assert get["per_merchant_ceiling_per_s"] == pytest.approx(200.0)


def test_get_phase_rate_limiting_is_an_error_with_a_note() -> None:
    notes = " ".join(build_report(with_phases_and_processes())["notes"])
    assert "2 requests of the get phase were rate limited (HTTP 429)" in notes
    assert "2 requests of the floor phase were rate limited (HTTP 429)" in notes
    assert "GET phase reached" not in notes


def test_a_get_phase_close_to_its_per_merchant_ceiling_gets_a_note() -> None:
    # 90 GET/s with 200 OK from one caller of one merchant: 90% of its 100/s.
    requests = [
        RequestRecord(GET_PHASE, True, 115 + i / 90, 115 + i / 90, None) for i in range(900)
    ]
    report = build_report(facts(get_phase=get_phase(requests, {"MER_A": 1})))
    assert report["get_phase"]["ok_requests_per_s"] == pytest.approx(90.0)
    assert report["get_phase"]["per_merchant_ceiling_per_s"] == pytest.approx(100.0)
    [note] = [n for n in report["notes"] if "GET phase" in n]
    assert note.startswith("The GET phase reached 90 of the 100 GET/s its 1 callers over 1 ")


def test_a_get_phase_without_payments_to_get_is_noted_only_when_asked_for() -> None:
    asked = build_report(facts(config=CONFIG | {"get_duration": 10.0}))
    assert asked["get_phase"] is None
    assert "The GET phase did not run: no journey reached SUCCESS" in " ".join(asked["notes"])
    not_asked = build_report(facts(config=CONFIG | {"get_duration": 0.0}))
    assert not any("GET phase" in note for note in not_asked["notes"])


def test_floor_phase_and_ratio() -> None:
    report = build_report(with_phases_and_processes())
    floor = report["floor"]
    assert floor["requests_per_s"] == pytest.approx(0.8)
    assert floor["ok_requests_per_s"] == pytest.approx(0.6)
    assert floor["operation"]["errors_by_kind"] == {"HTTP 429": 2}
    assert floor["operation"]["latency_ms"]["p50"] == pytest.approx(500.0)
    # 0.2 journeys/s reaching SUCCESS over 0.6 floor requests/s.
    assert floor["journeys_per_s_over_floor_requests_per_s"] == pytest.approx(1 / 3, abs=1e-5)


def test_processes_cpu_per_request_in_each_phase() -> None:
    processes = build_report(with_phases_and_processes())["processes"]
    orchestrator = processes["journeys"]["orchestrator"]
    assert orchestrator["cpu_percent_of_one_core"] == pytest.approx(25.0)
    # 250 ms of CPU per second over 0.5 requests/s in the window.
    assert orchestrator["cpu_ms_per_request"] == pytest.approx(500.0)
    assert orchestrator["peak_rss_mib"] == 100.0
    assert processes["floor"]["orchestrator"]["cpu_ms_per_request"] == pytest.approx(166.667)
    assert processes["journeys_total_cpu_ms_per_request"] == pytest.approx(500.0)
    # 300 ms of CPU per second in the GET phase's window over its 0.8 GET/s with 200 OK.
    during_gets = processes["get_phase"]["orchestrator"]
    assert during_gets == {"cpu_percent_of_one_core": 30.0, "cpu_ms_per_request": 375.0}
    assert processes["get_phase"]["generator"]["cpu_ms_per_request"] == 0.0
    assert processes["get_phase_total_cpu_ms_per_request"] == pytest.approx(375.0)


def test_no_processes_section_without_samples() -> None:
    report = build_report(facts())
    assert report["processes"] == {}
    assert report["floor"] is None
    assert report["get_phase"] is None


def test_rendered_report_shows_the_floor_and_the_processes() -> None:
    console = Console(record=True, width=240)
    render_report(build_report(with_phases_and_processes()), console)
    text = console.export_text()
    assert "floor (trivial gRPC handler behind the same Envoy, 10 s): 0.60 req/s" in text
    assert (
        "GET phase (GET /api/v1/payments/{id} of 6 SUCCESS payments, 4 callers over 3 "
        "merchants, 10 s): 0.80 req/s with 200 OK, 2 errors; ms p50 45.0, p90 73.0, p99 79.3, "
        "max 80.0"
    ) in text
    assert f"error HTTP 429: 2, first answer {RATE_LIMITED}" in text
    assert "lets these callers send 200 GET/s in all" in text
    header = next(line for line in text.splitlines() if "get CPU %" in line)
    assert header.split() == [
        "process", "CPU", "%", "ms/req", "get", "CPU", "%", "get", "ms/req",
        "floor", "CPU", "%", "floor", "ms/req", "peak", "MiB", "MiB", "per", "minute",
    ]  # fmt: skip
    orchestrator = next(line for line in text.splitlines() if line.startswith(" orchestrator"))
    assert orchestrator.split()[:7] == ["orchestrator", "25", "500", "30", "375", "10", "166.667"]
    assert "journeys/s ÷ floor req/s = 0.20 ÷ 0.60 = 0.3333" in text
    assert "orchestrator" in text
    assert "generator" in text


def test_cli_defaults() -> None:
    args = parse_args([])
    assert (args.rate, args.duration, args.warmup, args.merchants) == (50.0, 30.0, 3.0, 32)
    assert (args.get_duration, args.get_concurrency) == (10.0, 64)
    assert str(args.out) == "bench-results.json"
    assert args.gateway is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate", "0"],
        ["--duration", "-1"],
        ["--merchants", "1.5"],
        ["--jwt-secret", "x"],
        ["--get-duration", "-1"],
        ["--get-concurrency", "0"],
        ["--gateway", "http://127.0.0.1:8080", "--shipped-limits"],
        ["--gateway", "http://127.0.0.1:8080", "--broker", "memory"],
    ],
)
def test_cli_refuses_bad_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2


def test_the_benchmarks_stack_lifts_only_the_limits_on_all_merchants_together(
    tmp_path: Path,
) -> None:
    lifted = door_limits_lifted(tmp_path, {})
    assert lifted["RATE_LIMIT_LOCAL_RPS"] == str(LIFTED_PER_SECOND)
    limits = yaml.safe_load(Path(lifted["RATE_LIMIT_CONFIG_PATH"]).read_text())
    by_key = {d["key"]: d["rate_limit"]["requests_per_unit"] for d in limits["descriptors"]}
    assert by_key == {"generic_key": LIFTED_PER_SECOND, "merchant_id": 100}
    # What the caller set stays.
    assert door_limits_lifted(tmp_path, {"RATE_LIMIT_LOCAL_RPS": "5000"}).keys() == {
        "RATE_LIMIT_CONFIG_PATH"
    }
    assert (
        door_limits_lifted(
            tmp_path, {"RATE_LIMIT_LOCAL_RPS": "5000", "RATE_LIMIT_CONFIG_PATH": "/x.yaml"}
        )
        == {}
    )
