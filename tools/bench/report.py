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
# The closed-loop phases after the journeys (bench.phases), in the order they run, with their
# label in the processes table; a phase's key is also the operation its requests are recorded as.
GET_PHASE = "get_phase"
FLOOR = "floor"
PHASE_LABELS = {GET_PHASE: "get", FLOOR: "floor"}
# Above this share of its per-merchant ceiling, a phase is close to measuring the limiter.
NEAR_LIMIT = 0.8


@dataclass(frozen=True)
class PhaseFacts:
    """A closed-loop phase: the GET phase (real payments) or the floor (a constant payment from
    a trivial server behind the same Envoy)."""

    window: tuple[float, float]  # measured, clock seconds
    requests: Sequence[RequestRecord]
    examples: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GetPhaseFacts:
    """The GET phase: the journeys' SUCCESS payments, each read with its merchant's token."""

    phase: PhaseFacts
    payments: int  # distinct payments the callers read
    callers_per_merchant: Mapping[str, int]

    @property
    def per_merchant_ceiling_per_s(self) -> float | None:
        """The phase's rate at which its busiest merchant reaches the per-merchant limit, the
        callers going at the same pace."""
        busiest = max(self.callers_per_merchant.values(), default=0)
        if not busiest:
            return None
        return PER_MERCHANT_LIMIT * sum(self.callers_per_merchant.values()) / busiest


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
    get_phase: GetPhaseFacts | None = None
    floor: PhaseFacts | None = None
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
    report[GET_PHASE] = _get_phase(facts.get_phase)
    report[FLOOR] = _floor(facts.floor, report["throughput"]["journeys_per_s"])
    phases = {GET_PHASE: facts.get_phase.phase if facts.get_phase else None, FLOOR: facts.floor}
    report["processes"] = _processes(facts, requests_per_s, phases, report)
    report["notes"] = _notes(report)
    return report


def _phase(phase: PhaseFacts) -> dict[str, Any]:
    """What every closed-loop phase reports: its rates over the measured window (requests
    started in it and answered by its end), latency and errors."""
    begin, end = phase.window
    seconds = max(end - begin, 1e-9)
    measured = [r for r in phase.requests if r.measured and r.end <= end]
    ok = sum(1 for r in measured if r.error is None)
    return {
        "duration_s": round(end - begin, 3),
        "requests_per_s": round(len(measured) / seconds, 3),
        "ok_requests_per_s": round(ok / seconds, 3),
        "operation": OperationStats.of(Outcome(r.end - r.due, r.error) for r in measured).to_json(),
        "error_examples": dict(phase.examples),
    }


def _get_phase(facts: GetPhaseFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    ceiling = facts.per_merchant_ceiling_per_s
    return {
        **_phase(facts.phase),
        "payments": facts.payments,
        "merchants": len(facts.callers_per_merchant),
        "callers": sum(facts.callers_per_merchant.values()),
        "per_merchant_ceiling_per_s": None if ceiling is None else round(ceiling, 1),
    }


def _floor(floor: PhaseFacts | None, journeys_per_s: float) -> dict[str, Any] | None:
    if floor is None:
        return None
    out = _phase(floor)
    ok_per_s = out["ok_requests_per_s"]
    out["journeys_per_s_over_floor_requests_per_s"] = (
        round(journeys_per_s / ok_per_s, 5) if ok_per_s else None
    )
    return out


def _processes(
    facts: RunFacts,
    requests_per_s: float,
    phases: Mapping[str, PhaseFacts | None],
    report: Mapping[str, Any],
) -> dict[str, Any]:
    """CPU per HTTP request and memory of each process of the stack, in the journeys' window
    and (CPU only) in each closed-loop phase's, per request with 200 OK of that phase."""
    if not facts.process_samples:
        return {}
    journeys = summarize(facts.process_samples, facts.window, requests_per_s)
    out: dict[str, Any] = {
        "journeys": journeys,
        "journeys_total_cpu_ms_per_request": total_cpu_ms_per_request(journeys),
    }
    for key, phase in phases.items():
        if phase is None:
            continue
        during = summarize(facts.process_samples, phase.window, report[key]["ok_requests_per_s"])
        out[key] = {
            name: {k: v[k] for k in ("cpu_percent_of_one_core", "cpu_ms_per_request")}
            for name, v in during.items()
        }
        out[f"{key}_total_cpu_ms_per_request"] = total_cpu_ms_per_request(during)
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
    notes.extend(_get_phase_notes(report))
    for key, label in PHASE_LABELS.items():
        phase = report[key]
        phase_limited = phase["operation"]["errors_by_kind"].get("HTTP 429", 0) if phase else 0
        if phase_limited:
            notes.append(
                f"{phase_limited} requests of the {label} phase were rate limited "
                "(HTTP 429): they count as errors. Besides each merchant's limit, Envoy's own "
                "bucket (RATE_LIMIT_LOCAL_RPS) and the global limit "
                "(services/ratelimit/config/limits.yaml) cap all merchants together."
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


def _get_phase_notes(report: Mapping[str, Any]) -> list[str]:
    get = report[GET_PHASE]
    if get is None:
        if report["config"].get("get_duration"):
            return ["The GET phase did not run: no journey reached SUCCESS, so no payment to GET."]
        return []
    ceiling = get["per_merchant_ceiling_per_s"]
    if ceiling is not None and get["ok_requests_per_s"] > NEAR_LIMIT * ceiling:
        return [
            f"The GET phase reached {get['ok_requests_per_s']:.0f} of the {ceiling:.0f} GET/s "
            f"its {get['callers']} callers over {get['merchants']} merchants may send under the "
            f"per-merchant limit of {PER_MERCHANT_LIMIT:.0f} requests/s: use more --merchants "
            "(at least the target rate / 100) to measure the gateway rather than the limiter."
        ]
    return []


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
    _render_get_phase(report, console)
    _render_floor(report, console)
    _render_processes(report, console)
    for note in _as_list(report.get("notes")):
        console.print(f"[yellow]note:[/] {escape(note)}")


def _render_get_phase(report: Mapping[str, Any], console: Console) -> None:
    get = report.get(GET_PHASE)
    if not get:
        return
    _render_phase(
        GET_PHASE,
        f"GET phase (GET /api/v1/payments/{{id}} of {get['payments']} SUCCESS payments, "
        f"{get['callers']} callers over {get['merchants']} merchants, {get['duration_s']:g} s)",
        get,
        console,
    )
    ceiling = get["per_merchant_ceiling_per_s"]
    if ceiling is not None:
        console.print(
            f"[dim]the per-merchant limit ({PER_MERCHANT_LIMIT:.0f}/s) lets these callers "
            f"send {ceiling:.0f} GET/s in all[/]"
        )


def _render_floor(report: Mapping[str, Any], console: Console) -> None:
    floor = report.get(FLOOR)
    if not floor:
        return
    _render_phase(
        FLOOR,
        f"floor (trivial gRPC handler behind the same Envoy, {floor['duration_s']:g} s)",
        floor,
        console,
    )
    ratio = floor["journeys_per_s_over_floor_requests_per_s"]
    console.print(
        f"journeys/s ÷ floor req/s = {_rate(report['throughput']['journeys_per_s'])} ÷ "
        f"{_rate(floor['ok_requests_per_s'])} = "
        + (f"[bold]{ratio:.4f}[/]" if ratio is not None else "-")
    )


def _render_phase(key: str, title: str, phase: Mapping[str, Any], console: Console) -> None:
    """A closed-loop phase's line, then its errors by kind with the first answer of each (its
    requests are recorded with the phase's key as their operation)."""
    operation = phase["operation"]
    latency = operation["latency_ms"] or {}
    console.print(
        f"{escape(title)}: [bold]{_rate(phase['ok_requests_per_s'])} req/s[/] with 200 OK, "
        f"{operation['errors']} errors; ms "
        + ", ".join(f"{k} {_ms(latency.get(k))}" for k in ("p50", "p90", "p99", "max"))
    )
    examples: Mapping[str, str] = phase["error_examples"]
    for kind, count in operation["errors_by_kind"].items():
        example = examples.get(f"{key}: {kind}", "")
        console.print(
            f"[yellow]  error {escape(kind)}: {count}[/]"
            + (f", first answer {escape(example[:160])}" if example else "")
        )


def _render_processes(report: Mapping[str, Any], console: Console) -> None:
    processes = report.get("processes")
    if not processes:
        return
    journeys: Mapping[str, Any] = processes["journeys"]
    phases = [(key, label) for key, label in PHASE_LABELS.items() if key in processes]
    table = Table(
        title="processes: CPU (% of one core, ms per HTTP request) in the journeys' window"
        + "".join(f" and in the {label} phase" for _, label in phases)
        + "; resident memory",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("process", no_wrap=True)
    columns = ["CPU %", "ms/req"]
    columns += [f"{label} {name}" for _, label in phases for name in ("CPU %", "ms/req")]
    for name in (*columns, "peak MiB"):
        table.add_column(name, justify="right")
    table.add_column("MiB per minute")
    for name, entry in sorted(journeys.items(), key=lambda item: item[0]):
        cpu = [entry]
        cpu += [processes[key].get(name, {}) for key, _ in phases]
        table.add_row(
            name,
            *(
                _number(usage.get(figure))
                for usage in cpu
                for figure in ("cpu_percent_of_one_core", "cpu_ms_per_request")
            ),
            _number(entry["peak_rss_mib"]),
            " ".join(f"{v:g}" for v in entry["rss_mib_per_minute"]),
        )
    totals = [processes["journeys_total_cpu_ms_per_request"]]
    totals += [processes[f"{key}_total_cpu_ms_per_request"] for key, _ in phases]
    table.add_row(
        "total",
        *(cell for total in totals for cell in ("", _number(total))),
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
