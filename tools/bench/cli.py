"""`python -m bench` (`make bench`): start a stack (or use one), run the load, report.

Exit status: 0 when the measurement ran, whatever errors it measured; 1 when the stack could
not start or the benchmark could not be set up (gateway not ready, merchants not created);
2 for bad options; 130 when interrupted (Ctrl-C or SIGTERM; the stack is stopped either way).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

import yaml
from rich.console import Console
from rich.markup import escape

from bench.journey import SetupError
from bench.report import build_report, git_info, machine_info, render_report, write_report
from bench.runner import Credentials, LoadConfig, run_load
from gateway_core.services import REPO_ROOT

EXIT_OK, EXIT_SETUP, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _not_negative(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = LoadConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Open-model load benchmark of the UPI payment journey "
        "(create, customer approval, poll until SUCCESS). See docs/benchmark.md.",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=defaults.rate,
        help="journeys started per second, whatever the gateway does (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=defaults.duration,
        help="measured seconds (default %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=_not_negative,
        default=defaults.warmup,
        help="seconds of load before measuring, not reported (default %(default)s)",
    )
    parser.add_argument(
        "--merchants",
        type=_positive_int,
        default=defaults.merchants,
        help="merchants the load is spread over; the gateway limits each to 100 requests/s, "
        "so the GET phase needs at least its target rate / 100 (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the JSON report (default %(default)s)",
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="use this running gateway instead of starting a stack (e.g. http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--broker",
        choices=("durable", "memory"),
        default="durable",
        help="the started stack's broker log: on the durable local store, as `make run` keeps it "
        "(default), or in memory, as a gateway whose Kafka runs elsewhere sees it: the local "
        "store is Python and costs more per event than anything else in the stack",
    )
    parser.add_argument(
        "--shipped-limits",
        action="store_true",
        help="keep the shipped limits on all merchants together (each Envoy's 1,000/s bucket, "
        "the global 2,000/s) in the started stack; by default they are lifted so that the run "
        "measures capacity (each merchant's own limit always stays)",
    )
    parser.add_argument(
        "--jwt-secret",
        help="with --gateway: the gateway's JWT_SECRET (default: JWT_SECRET from the "
        "environment or .env)",
    )
    tuning = parser.add_argument_group("journey and generator tuning")
    tuning.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=defaults.poll_interval,
        help="seconds between polls of a payment (default %(default)s)",
    )
    tuning.add_argument(
        "--success-timeout",
        type=_positive_float,
        default=defaults.success_timeout,
        help="seconds of polling before a journey counts as never succeeded (default %(default)s)",
    )
    tuning.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=defaults.request_timeout,
        help="seconds before a request counts as a timeout (default %(default)s)",
    )
    tuning.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=defaults.max_in_flight,
        help="journeys running at once before new arrivals are dropped and counted as errors "
        "(default %(default)s)",
    )
    tuning.add_argument(
        "--max-connections",
        type=_positive_int,
        default=defaults.max_connections,
        help="HTTP connections to the gateway at most (default %(default)s)",
    )
    tuning.add_argument(
        "--get-duration",
        type=_not_negative,
        default=defaults.get_duration,
        help="seconds of the GET phase after the journeys: the payments that reached SUCCESS, "
        "read back to back, each with its merchant's token (0: none) (default %(default)s)",
    )
    tuning.add_argument(
        "--get-concurrency",
        type=_positive_int,
        default=defaults.get_concurrency,
        help="callers of the GET phase, spread round robin over the merchants "
        "(default %(default)s)",
    )
    tuning.add_argument(
        "--floor-duration",
        type=_not_negative,
        default=defaults.floor_duration,
        help="seconds of the floor phase after the journeys: a trivial gRPC handler behind "
        "the same Envoy, called back to back (0: none; only with a started stack) "
        "(default %(default)s)",
    )
    tuning.add_argument(
        "--floor-concurrency",
        type=_positive_int,
        default=defaults.floor_concurrency,
        help="callers of the floor phase, each with its own token (default %(default)s)",
    )
    tuning.add_argument(
        "--keep-stack-dir",
        action="store_true",
        help="keep the started stack's state directory (logs) after a successful run",
    )
    args = parser.parse_args(argv)
    if args.jwt_secret and not args.gateway:
        parser.error("--jwt-secret only goes with --gateway (a started stack has its own)")
    if args.broker != "durable" and args.gateway:
        parser.error("--broker only goes with a started stack, not with --gateway")
    if args.shipped_limits and args.gateway:
        parser.error("--shipped-limits only goes with a started stack, not with --gateway")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    config = LoadConfig(
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        merchants=args.merchants,
        poll_interval=args.poll_interval,
        success_timeout=args.success_timeout,
        request_timeout=args.request_timeout,
        max_in_flight=args.max_in_flight,
        max_connections=args.max_connections,
        get_duration=args.get_duration,
        get_concurrency=args.get_concurrency,
        # A gateway we did not start has no floor route.
        floor_duration=0.0 if args.gateway else args.floor_duration,
        floor_concurrency=args.floor_concurrency,
    )
    machine = machine_info()  # before the stack loads the machine
    with _sigterm_interrupts():
        try:
            if args.gateway:
                return _external(args, config, machine, console)
            return _own_stack(args, config, machine, console)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: no report written[/]")
            return EXIT_INTERRUPTED


def _external(
    args: argparse.Namespace, config: LoadConfig, machine: dict[str, object], console: Console
) -> int:
    from gateway_core.config import get_settings

    settings = get_settings()
    secret = args.jwt_secret or settings.jwt_secret.get_secret_value()
    credentials = Credentials(secret, settings.jwt_issuer, settings.jwt_audience)
    return _measure(
        args, config, args.gateway.rstrip("/"), credentials, machine, console, "given", None
    )


# Far above what the machine can send: the door's totals no longer decide what is measured.
LIFTED_PER_SECOND = 1_000_000


def door_limits_lifted(state_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Settings for the benchmark's own stack in which the limits on all merchants together
    (each Envoy's bucket, RATE_LIMIT_LOCAL_RPS, and the global limit of the ratelimit service)
    are out of reach, so the run measures the gateway's capacity rather than a quota. Every
    merchant keeps its own limit and every request still goes through both limiters. A value
    the caller set in the environment is kept."""
    from ratelimit.__main__ import DEFAULT_CONFIG

    lifted: dict[str, str] = {}
    if "RATE_LIMIT_LOCAL_RPS" not in environ:
        lifted["RATE_LIMIT_LOCAL_RPS"] = str(LIFTED_PER_SECOND)
    if "RATE_LIMIT_CONFIG_PATH" not in environ:
        limits = yaml.safe_load(DEFAULT_CONFIG.read_text())
        for descriptor in limits["descriptors"]:
            if descriptor["key"] == "generic_key":
                descriptor["rate_limit"]["requests_per_unit"] = LIFTED_PER_SECOND
        path = state_dir / "limits.yaml"
        path.write_text(yaml.safe_dump(limits))
        lifted["RATE_LIMIT_CONFIG_PATH"] = str(path)
    return lifted


def _own_stack(
    args: argparse.Namespace, config: LoadConfig, machine: dict[str, object], console: Console
) -> int:
    from devstack import Stack, StackError

    state_dir = Path(tempfile.mkdtemp(prefix="paygate-bench-"))
    console.print(f"starting a stack in {state_dir} (ephemeral ports, no seed)…")
    environ = dict(os.environ)
    if not args.shipped_limits:
        environ |= door_limits_lifted(state_dir, environ)
    try:
        stack = Stack(
            state_dir,
            ports="ephemeral",
            seed=False,
            keep_data=False,
            environ=environ,
            bench_floor=config.floor_duration > 0,
            durable_broker=args.broker == "durable",
        )
        stack.start(progress=True)  # stops what it started if it fails or is interrupted
    except StackError as exc:
        console.print(f"[red]the stack did not start:[/] {escape(str(exc))}")
        console.print(f"logs: {state_dir / 'logs'}")
        return EXIT_SETUP
    except KeyboardInterrupt:
        console.print(f"stack stopped; logs: {state_dir / 'logs'}")
        raise
    finished = False
    try:
        env = stack.env
        credentials = Credentials(env["JWT_SECRET"], env["JWT_ISSUER"], env["JWT_AUDIENCE"])
        code = _measure(
            args,
            config,
            stack.gateway_url,
            credentials,
            machine,
            console,
            "started",
            args.broker,
            stack.pids(),
        )
        finished = code == EXIT_OK
        return code
    finally:
        with _sigint_ignored():
            console.print("stopping the stack…")
            stack.stop()
        if finished and not args.keep_stack_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            console.print(f"stack logs kept in {stack.logs_dir}")


def _measure(
    args: argparse.Namespace,
    config: LoadConfig,
    gateway_url: str,
    credentials: Credentials,
    machine: dict[str, object],
    console: Console,
    stack: str,
    broker: str | None,
    processes: Mapping[str, int] | None = None,
) -> int:
    try:
        facts = asyncio.run(run_load(config, gateway_url, credentials, console, processes))
    except SetupError as exc:
        console.print(f"[red]cannot run the benchmark:[/] {escape(str(exc))}")
        return EXIT_SETUP
    facts = replace(
        facts,
        config={**facts.config, "gateway": gateway_url, "stack": stack, "broker": broker},
        machine=machine,
        git=git_info(REPO_ROOT),
    )
    report = build_report(facts)
    render_report(report, console)
    write_report(report, args.out)
    console.print(f"results written to {args.out}")
    return EXIT_OK


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C does, so the stack is stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """While stopping the stack: a second Ctrl-C must not leave half of it running."""
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
