"""The benchmark's report: one JSON-able dict, written to a file and printed as tables."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.journey import CREATE, GET, JOURNEY, UNFINISHED, JourneyRecord, RequestRecord
from bench.procstats import Sample, summarize, total_cpu_ms_per_request
from bench.stats import Latency, OperationStats, Outcome

SCHEMA_VERSION = 1
OPERATIONS = (CREATE, GET, JOURNEY)
LABELS = {CREATE: "create (POST)", GET: "get (poll)", JOURNEY: "time to SUCCESS"}
DROPPED = "dropped (generator at --max-in-flight)"
# Above this, the generator itself was late starting iterations: say so.
LAG_WARNING_MS = 20.0
PER_MERCHANT_LIMIT = 100.0  # the gateway's default per-merchant limit (requests/s)
FLOOR = "floor"


@dataclass(frozen=True)
class FloorFacts:
    """The floor phase: GETs of a constant payment from a trivial server behind the same Envoy."""

    window: tuple[float, float]  # measured, clock seconds
    requests: Sequence[RequestRecord]
    examples: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFacts:
    """What a run observed, in clock seconds; `build_report` turns it into the report."""

    config: Mapping[str, Any]
    started_at: str  # ISO 8601, UTC
    window: tuple[float, float]  # the measured window (after warm-up), clock seconds
    requests: Sequence[RequestRecord]
    journeys: Sequence[JourneyRecord]
    start_lags: Sequence[float]  # of measured arrivals, seconds
    dropped: int = 0  # measured arrivals not started (max in flight reached)
    unfinished: int = 0  # measured journeys still running when the run gave up on them
    unscored: int = 0  # measured creations the fraud check let through unscored (fail-open)
    generator_cpu_s: float | None = None  # CPU time the generator itself used during the load
    load_s: float | None = None  # wall time of the load (arrivals and draining)
    examples: Mapping[str, str] = field(default_factory=dict)
    machine: Mapping[str, Any] = field(default_factory=dict)
    git: Mapping[str, Any] = field(default_factory=dict)
    floor: FloorFacts | None = None
    process_samples: Sequence[Sample] = ()


def build_report(facts: RunFacts) -> dict[str, Any]:
    begin, end = facts.window
    seconds = max(end - begin, 1e-9)
    measured = [r for r in facts.requests if r.measured]
    operations = {
        op: OperationStats.of(Outcome(r.end - r.due, r.error) for r in measured if r.op == op)
        for op in (CREATE, GET)
    }
    journeys = [
        *(Outcome(j.end - j.due, j.error) for j in facts.journeys if j.measured),
        *(Outcome(None, DROPPED) for _ in range(facts.dropped)),
        *(Outcome(None, UNFINISHED) for _ in range(facts.unfinished)),
    ]
    operations[JOURNEY] = OperationStats.of(journeys)

    in_window = [r for r in facts.requests if begin <= r.end < end]
    completed = sum(1 for j in facts.journeys if j.error is None and begin <= j.end < end)
    merchants = int(facts.config.get("merchants") or 1)
    requests_per_s = len(in_window) / seconds
    lag = Latency.of_seconds(facts.start_lags)
    polls = [j.polls for j in facts.journeys if j.measured]
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "UPI payment journey, open model (constant arrival rate)",
        "started_at": facts.started_at,
        "config": dict(facts.config),
        "machine": dict(facts.machine),
        "git": dict(facts.git),
        "duration_s": round(seconds, 3),
        "offered": {
            "rate_per_s": facts.config.get("rate"),
            "arrivals": len(facts.start_lags) + facts.dropped,
            "dropped": facts.dropped,
        },
        "throughput": {
            "journeys_per_s": round(completed / seconds, 3),
            "requests_per_s": round(requests_per_s, 3),
            "ok_requests_per_s": round(sum(1 for r in in_window if r.error is None) / seconds, 3),
            "requests_per_s_per_merchant": round(requests_per_s / merchants, 3),
        },
        "operations": {op: operations[op].to_json() for op in OPERATIONS},
        "polls_per_journey": {
            "mean": round(math.fsum(polls) / len(polls), 2) if polls else None,
            "max": max(polls, default=None),
        },
        "generator": {
            "start_lag_ms": lag.to_json() if lag else None,
            "cpu_s": _round(facts.generator_cpu_s),
            "cpu_percent_of_one_core": _round(
                100 * facts.generator_cpu_s / facts.load_s
                if facts.generator_cpu_s is not None and facts.load_s
                else None
            ),
        },
        "error_examples": dict(facts.examples),
        "fraud": {"unscored_creates": facts.unscored},
    }
    report["floor"] = _floor(facts.floor, report["throughput"]["journeys_per_s"])
    report["processes"] = _processes(facts, requests_per_s, report["floor"])
    report["notes"] = _notes(report)
    return report


def _floor(floor: FloorFacts | None, journeys_per_s: float) -> dict[str, Any] | None:
    if floor is None:
        return None
    begin, end = floor.window
    measured = [r for r in floor.requests if r.measured and r.end <= end]
    ok = sum(1 for r in measured if r.error is None)
    ok_per_s = ok / max(end - begin, 1e-9)
    return {
        "duration_s": round(end - begin, 3),
        "requests_per_s": round(len(measured) / max(end - begin, 1e-9), 3),
        "ok_requests_per_s": round(ok_per_s, 3),
        "operation": OperationStats.of(Outcome(r.end - r.due, r.error) for r in measured).to_json(),
        "journeys_per_s_over_floor_requests_per_s": (
            round(journeys_per_s / ok_per_s, 5) if ok_per_s else None
        ),
        "error_examples": dict(floor.examples),
    }


def _processes(
    facts: RunFacts, requests_per_s: float, floor: Mapping[str, Any] | None
) -> dict[str, Any]:
    """CPU per HTTP request and memory of each process of the stack, in the journeys' window
    and (CPU only) in the floor's."""
    if not facts.process_samples:
        return {}
    journeys = summarize(facts.process_samples, facts.window, requests_per_s)
    out: dict[str, Any] = {
        "journeys": journeys,
        "journeys_total_cpu_ms_per_request": total_cpu_ms_per_request(journeys),
    }
    if facts.floor is not None and floor is not None:
        during_floor = summarize(
            facts.process_samples, facts.floor.window, floor["ok_requests_per_s"]
        )
        out["floor"] = {
            name: {k: v[k] for k in ("cpu_percent_of_one_core", "cpu_ms_per_request")}
            for name, v in during_floor.items()
        }
        out["floor_total_cpu_ms_per_request"] = total_cpu_ms_per_request(during_floor)
    return out


def _notes(report: Mapping[str, Any]) -> list[str]:
    notes = []
    operations = report["operations"]
    journeys = operations[JOURNEY]
    kinds: dict[str, int] = journeys["errors_by_kind"]
    never = sum(n for kind, n in kinds.items() if kind.startswith("never succeeded"))
    if journeys["count"] and journeys["ok"] == 0 and never:
        notes.append(
            f"No journey reached SUCCESS ({never} of {journeys['count']} never succeeded): "
            "payments stayed as shown in the error kinds (the sandbox's approval callback may "
            "not be in place yet). create and get latencies are still real measurements; "
            "time to SUCCESS has none, and every journey polled until the timeout."
        )
    limited = sum(operations[op]["errors_by_kind"].get("HTTP 429", 0) for op in (CREATE, GET))
    if limited:
        notes.append(
            f"{limited} requests were rate limited (HTTP 429). The gateway allows "
            f"{PER_MERCHANT_LIMIT:.0f} requests/s per merchant by default: use more --merchants "
            "or a lower --rate to measure the service rather than the limiter."
        )
    elif report["throughput"]["requests_per_s_per_merchant"] > 0.8 * PER_MERCHANT_LIMIT:
        notes.append(
            "Each merchant sent close to the gateway's default limit of "
            f"{PER_MERCHANT_LIMIT:.0f} requests/s: use more --merchants for higher rates."
        )
    lag = report["generator"]["start_lag_ms"]
    if lag and lag["p99"] > LAG_WARNING_MS:
        notes.append(
            f"The load generator started iterations late (p99 {lag['p99']:.1f} ms, max "
            f"{lag['max']:.1f} ms): the machine was saturated. Latencies include this delay "
            "(they count from when a request was due), so they stay honest, but part of them "
            "is the generator's."
        )
    if report["fraud"]["unscored_creates"]:
        notes.append(
            f"{report['fraud']['unscored_creates']} measured payments were let through without "
            "a fraud score (verdict UNAVAILABLE: the scorer missed its deadline and "
            "FRAUD_FAIL_POLICY=open applied)."
        )
    if report["offered"]["dropped"]:
        notes.append(
            f"{report['offered']['dropped']} arrivals were dropped because --max-in-flight "
            "journeys were already running; they count as time-to-SUCCESS errors."
        )
    return notes


# -- the machine and the code ----------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def git_info(repo: Path) -> dict[str, Any]:
    """The commit benchmarked and whether tracked files differ from it (read-only git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", *args],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(changes) if changes is not None else None}


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


# -- printing -----------------------------------------------------------------------------


def render_report(report: Mapping[str, Any], console: Console) -> None:
    config = report["config"]
    machine = report["machine"]
    git = report["git"]
    commit = (git.get("commit") or "unknown")[:12] + (" (modified)" if git.get("dirty") else "")
    throughput = report["throughput"]
    offered = report["offered"]

    console.print()
    console.rule("[bold]benchmark: UPI payment journey (open model)")
    console.print(
        f"offered [bold]{offered['rate_per_s']:g}/s[/] for {report['duration_s']:g} s "
        f"({offered['arrivals']} arrivals, warm-up {config.get('warmup', 0):g} s not measured), "
        f"spread over {config.get('merchants')} merchants; gateway {config.get('gateway')}"
        + (f", broker log {config['broker']}" if config.get("broker") else "")
    )
    console.print(
        f"achieved [bold]{_rate(throughput['journeys_per_s'])} journeys/s[/] reaching SUCCESS, "
        f"[bold]{_rate(throughput['requests_per_s'])} requests/s[/] finished "
        f"({_rate(throughput['ok_requests_per_s'])}/s with 200 OK, "
        f"{_rate(throughput['requests_per_s_per_merchant'])}/s per merchant)"
    )
    console.print(
        f"machine: {machine.get('cpu_count')} CPUs, {machine.get('memory_gib', '?')} GiB, "
        f"{machine.get('platform')}, Python {machine.get('python')}; commit {commit}"
    )

    table = Table(
        title="latency in ms, from when the request was due (successes only)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("operation", no_wrap=True)
    for name in ("count", "ok", "errors", "error %", "p50", "p90", "p99", "max"):
        table.add_column(name, justify="right", no_wrap=True)
    for op in OPERATIONS:
        stats = report["operations"][op]
        latency = stats["latency_ms"] or {}
        table.add_row(
            LABELS[op],
            str(stats["count"]),
            str(stats["ok"]),
            str(stats["errors"]),
            f"{100 * stats['error_rate']:.1f}",
            *(_ms(latency.get(k)) for k in ("p50", "p90", "p99", "max")),
            style="red" if stats["count"] and stats["errors"] == stats["count"] else None,
        )
    console.print(table)

    examples: Mapping[str, str] = report.get("error_examples", {})
    rows = [
        (LABELS[op], kind, count, examples.get(f"{op}: {kind}", ""))
        for op in OPERATIONS
        for kind, count in report["operations"][op]["errors_by_kind"].items()
    ]
    if rows:
        errors = Table(title="errors by kind", box=box.SIMPLE_HEAD, pad_edge=False)
        errors.add_column("operation", no_wrap=True)
        errors.add_column("error")
        errors.add_column("count", justify="right")
        with_examples = any(example for *_, example in rows)
        if with_examples:
            errors.add_column("first answer (truncated)", overflow="fold", max_width=50)
        for label, kind, count, example in rows:
            cells = [label, escape(kind), str(count)]
            errors.add_row(*cells, *([escape(example[:160])] if with_examples else []))
        console.print(errors)
    polls = report["polls_per_journey"]
    if polls["mean"] is not None:
        console.print(f"[dim]polls per journey: mean {polls['mean']:g}, max {polls['max']}[/]")
    generator = report["generator"]
    lag = generator["start_lag_ms"]
    if lag:
        cpu = generator.get("cpu_percent_of_one_core")
        console.print(
            f"[dim]generator: start lag (due → started) p50 {lag['p50']:.2f} ms, "
            f"p99 {lag['p99']:.2f} ms, max {lag['max']:.2f} ms"
            + (f"; its own CPU {cpu:g}% of one core" if cpu is not None else "")
            + "[/]"
        )
    _render_floor(report, console)
    _render_processes(report, console)
    for note in _as_list(report.get("notes")):
        console.print(f"[yellow]note:[/] {escape(note)}")


def _render_floor(report: Mapping[str, Any], console: Console) -> None:
    floor = report.get("floor")
    if not floor:
        return
    operation = floor["operation"]
    latency = operation["latency_ms"] or {}
    ratio = floor["journeys_per_s_over_floor_requests_per_s"]
    console.print(
        f"floor (trivial gRPC handler behind the same Envoy, {floor['duration_s']:g} s): "
        f"[bold]{_rate(floor['ok_requests_per_s'])} req/s[/] with 200 OK, "
        f"{operation['errors']} errors, p50 {_ms(latency.get('p50'))} ms, "
        f"p99 {_ms(latency.get('p99'))} ms"
    )
    console.print(
        f"journeys/s ÷ floor req/s = {_rate(report['throughput']['journeys_per_s'])} ÷ "
        f"{_rate(floor['ok_requests_per_s'])} = "
        + (f"[bold]{ratio:.4f}[/]" if ratio is not None else "-")
    )
    for kind, example in floor["error_examples"].items():
        console.print(f"[yellow]floor error {escape(kind)}:[/] {escape(example[:160])}")


def _render_processes(report: Mapping[str, Any], console: Console) -> None:
    processes = report.get("processes")
    if not processes:
        return
    journeys: Mapping[str, Any] = processes["journeys"]
    floor: Mapping[str, Any] = processes.get("floor", {})
    table = Table(
        title="processes: CPU (% of one core, ms per HTTP request) in the journeys' window and "
        "in the floor phase; resident memory",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("process", no_wrap=True)
    for name in ("CPU %", "ms/req", "floor CPU %", "floor ms/req", "peak MiB"):
        table.add_column(name, justify="right")
    table.add_column("MiB per minute")
    for name, entry in sorted(journeys.items(), key=lambda item: item[0]):
        during_floor = floor.get(name, {})
        table.add_row(
            name,
            _number(entry["cpu_percent_of_one_core"]),
            _number(entry["cpu_ms_per_request"]),
            _number(during_floor.get("cpu_percent_of_one_core")),
            _number(during_floor.get("cpu_ms_per_request")),
            _number(entry["peak_rss_mib"]),
            " ".join(f"{v:g}" for v in entry["rss_mib_per_minute"]),
        )
    table.add_row(
        "total",
        "",
        _number(processes["journeys_total_cpu_ms_per_request"]),
        "",
        _number(processes.get("floor_total_cpu_ms_per_request")),
        "",
        "",
        style="bold",
    )
    console.print(table)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _rate(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}"


def _as_list(value: Any) -> Iterable[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
