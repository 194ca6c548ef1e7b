"""`python -m chaos` (`make chaos`): a seeded fault-injection run against a stack of its own.

    start the stack (ports of its own, durable settings) and a webhook receiver on 127.0.0.2
    → merchants, each subscribed to every event
    → the load (every method, constant arrival rate) and, meanwhile, the planned faults
    → the load stops; the stack settles (payments final, events published, webhooks sent)
    → the checks, printed as a table

Exit status: 0 when every check passed; 1 when a check failed; 2 for bad options; 3 when the
stack could not start or the run could not be set up; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chaos import checks, facts
from chaos.checks import Books, Check
from chaos.faults import FaultLog, run_faults
from chaos.load import Load, LoadSettings, Merchant, Observations
from chaos.schedule import CATALOGUE, Timing, plan_faults, plan_journeys
from devstack.config import SMTP_VARIABLES
from devstack.fraud_scoring import write_clock_free_scoring
from devstack.stack import Stack, StackError
from devstack.webhook_receiver import HOST as RECEIVER_HOST
from devstack.webhook_receiver import WebhookReceiver
from gateway_core.tokens import mint_token

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MERCHANTS = 3
# The stack's settings for the run: unpaid payments expire within a minute, so the settle
# period sees them closed; webhook retries come within seconds; the receiver's address is the
# one loopback address webhooks may reach; the fraud deadline tolerates a loaded machine.
STACK_SETTINGS = {
    "PAYMENT_EXPIRY_SECONDS": "60",
    "WEBHOOK_RETRY_SCHEDULE": "1,2,5,10,20,30,60,60,60",
    "WEBHOOK_TIMEOUT": "5s",
    "WEBHOOK_ALLOWED_CIDRS": f"{RECEIVER_HOST}/32",
    "FRAUD_TIMEOUT_MS": "2000",
}
RECOVER_AFTER_HEAL = 5.0  # seconds after a heal that still count as the fault's window


@dataclass(frozen=True)
class RunOptions:
    seed: int
    duration: float
    rate: float
    settle: float  # longest wait for the stack to settle after the load
    grace: float  # the inquiry schedule's allowance past a payment's deadline
    keep: bool


def parse_args(argv: list[str] | None = None) -> RunOptions:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Seeded fault injection under load (docs/reliability.md)",
    )
    parser.add_argument("--seed", type=int, help="the run's seed (default: a random one, printed)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load and faults")
    parser.add_argument("--rate", type=float, default=5.0, help="journeys started per second")
    parser.add_argument("--settle", type=float, default=180.0, help="longest settle, seconds")
    parser.add_argument(
        "--grace", type=float, default=60.0, help="seconds past its deadline a payment may settle"
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory (logs)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.settle < 0 or args.grace < 0:
        parser.error("--duration and --rate must be positive, --settle and --grace not negative")
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    return RunOptions(seed, args.duration, args.rate, args.settle, args.grace, args.keep)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    console = Console(width=max(Console().width, 120))
    # The run's own Kafka reader sees the broker restarts it causes; the table tells the rest.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    timing = Timing()
    planned = plan_faults(options.seed, options.duration, timing)
    console.print(
        f"[bold]chaos run[/] seed {options.seed}, {options.duration:g} s of load at"
        f" {options.rate:g} journeys/s, {len(planned)} faults"
    )
    console.print(
        f"reproduce: make chaos CHAOS_SEED={options.seed} CHAOS_DURATION={options.duration:g}"
    )
    if {p.fault for p in planned} != set(CATALOGUE):
        console.print("[yellow]the duration is too short for every fault of the catalogue[/]")
    state_dir = Path(tempfile.mkdtemp(prefix="paygate-chaos-"))
    environ = {**os.environ, **STACK_SETTINGS, **write_clock_free_scoring(state_dir)}
    for name in SMTP_VARIABLES:
        environ.pop(name, None)
    try:
        stack = Stack(state_dir, ports="ephemeral", seed=False, keep_data=True, environ=environ)
        stack.start(progress=console.is_terminal)
    except StackError as exc:
        console.print(f"[red]the stack did not start:[/] {escape(str(exc))}")
        return EXIT_SETUP
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    passed = False
    try:
        results = asyncio.run(_run(stack, options, timing, console))
        passed = all(check.passed for check in results)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    except SetupFailed as exc:
        console.print(f"[red]the run could not be set up:[/] {escape(str(exc))}")
        return EXIT_SETUP
    finally:
        stack.stop()
        if passed and not options.keep:
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            console.print(f"stack directory (logs): {state_dir}")
    console.print("[bold green]every check passed[/]" if passed else "[bold red]a check failed[/]")
    return EXIT_OK if passed else EXIT_FAILED


class SetupFailed(RuntimeError):
    pass


async def _run(stack: Stack, options: RunOptions, timing: Timing, console: Console) -> list[Check]:
    receiver = WebhookReceiver()
    await receiver.start()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    gateway = httpx.AsyncClient(
        base_url=stack.gateway_url,
        # Each request's whole deadline is the load's (LoadSettings.request_timeout).
        timeout=None,  # noqa: S113
        limits=limits,
        trust_env=False,
    )
    browser = httpx.AsyncClient(timeout=10, trust_env=False)
    try:
        merchants = await _merchants(gateway, stack, receiver)
        return await _load_and_faults(
            stack, options, timing, gateway, browser, merchants, receiver, console
        )
    finally:
        await gateway.aclose()
        await browser.aclose()
        await receiver.stop()


async def _merchants(
    client: httpx.AsyncClient, stack: Stack, receiver: WebhookReceiver
) -> list[Merchant]:
    """Merchants for the load, each with an endpoint on the receiver for every event."""

    def token(subject: str, role: str = "merchant") -> str:
        return mint_token(
            stack.env["JWT_SECRET"],
            subject,
            role=role,
            issuer=stack.env["JWT_ISSUER"],
            audience=stack.env["JWT_AUDIENCE"],
            ttl_seconds=4 * 3600,
        )

    admin = {"Authorization": f"Bearer {token('chaos-admin', 'admin')}"}
    merchants = []
    for n in range(MERCHANTS):
        reply = await client.post(
            "/api/v1/admin/merchants",
            json={"name": f"Chaos shop {n} {uuid.uuid4().hex[:6]}"},
            headers=admin,
        )
        if reply.status_code != 200:
            raise SetupFailed(f"creating a merchant answered {reply.status_code}: {reply.text}")
        merchant_id = str(reply.json()["merchant_id"])
        headers = {"Authorization": f"Bearer {token(merchant_id)}"}
        hook = await client.post(
            "/api/v1/webhooks",
            json={"url": receiver.endpoint(merchant_id), "events": ["*"]},
            headers=headers,
        )
        if hook.status_code != 200:
            raise SetupFailed(f"subscribing a webhook answered {hook.status_code}: {hook.text}")
        merchants.append(Merchant(merchant_id, headers))
    return merchants


async def _load_and_faults(
    stack: Stack,
    options: RunOptions,
    timing: Timing,
    gateway: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    merchants: list[Merchant],
    receiver: WebhookReceiver,
    console: Console,
) -> list[Check]:
    sandbox_url = stack.env["SANDBOX_PUBLIC_URL"]
    load = Load(gateway, browser, merchants, LoadSettings(rate=options.rate), f"{options.seed}")
    planned = plan_faults(options.seed, options.duration, timing)
    journeys = plan_journeys(options.seed, int(options.duration * options.rate) + 1)
    log = FaultLog()
    tap = facts.EventTap(stack.kafka_bootstrap, stack.env["KAFKA_TOPIC_PAYMENTS"])
    await tap.start()
    stop = asyncio.Event()
    started = time.monotonic()
    loading = asyncio.create_task(load.run(journeys, stop))
    faulting = asyncio.create_task(
        run_faults(
            stack, planned, timing, started, stop, lambda: facts.read_books(sandbox_url), log
        )
    )
    ticking = asyncio.create_task(_progress(console, load.seen, log, started, options.duration))
    # Every planned fault happens under load: the load lasts the duration, or until the last
    # fault has healed and the stack has had its recovery time, whichever is later.
    await asyncio.gather(asyncio.sleep(options.duration), faulting)
    stop.set()
    console.print("load stopped; waiting for the journeys under way")
    await loading
    ticking.cancel()
    _print_schedule(console, log, started, time.time() - (time.monotonic() - started))
    _print_load(console, load.seen)
    await _settle(stack, options, console)
    return await _judge(stack, options, load.seen, log, receiver, merchants, tap, console)


async def _progress(
    console: Console, seen: Observations, log: FaultLog, started: float, duration: float
) -> None:
    while True:
        await asyncio.sleep(10)
        fault = log.executed[-1] if log.executed else None
        current = fault.planned.fault.name if fault and not fault.healed_at else "none"
        errors = sum(1 for a in seen.answers if not a.ok)
        console.print(
            f"{time.monotonic() - started:5.0f}/{duration:g} s  journeys {seen.started}"
            f"  acknowledged {len(seen.payments)}  requests {len(seen.answers)}"
            f"  errors {errors}  fault: {current}"
        )


async def _settle(stack: Stack, options: RunOptions, console: Console) -> None:
    """Wait until every payment is final (or held for capture), every event published and
    every webhook delivered, or `settle` seconds."""
    began = time.monotonic()
    left: dict[str, int] = {}

    async def settled() -> bool:
        gateway = await facts.read_gateway(stack.dsn)
        left["payments in flight"] = sum(
            1 for p in gateway.payments.values() if p.status not in checks.FINAL | {checks.HELD}
        )
        left["refunds pending"] = sum(1 for r in gateway.refunds.values() if r.status == "PENDING")
        left.update(await facts.backlog(stack.dsn))
        return not any(left.values())

    with console.status("settling: payments final, events published, webhooks delivered"):
        done = await facts.until(settled, options.settle)
    took = f"after {time.monotonic() - began:.0f} s"
    if done:
        console.print(f"settled {took}")
    else:
        still = ", ".join(f"{what} {n}" for what, n in left.items() if n)
        console.print(f"still settling {took} ({still}): the checks judge what is late")


async def _judge(
    stack: Stack,
    options: RunOptions,
    seen: Observations,
    log: FaultLog,
    receiver: WebhookReceiver,
    merchants: list[Merchant],
    tap: facts.EventTap,
    console: Console,
) -> list[Check]:
    gateway = await facts.read_gateway(stack.dsn)
    books = Books()
    for _, document in log.books_before_amnesia:
        books.add(document)
    books.add(await facts.read_books(stack.env["SANDBOX_PUBLIC_URL"]))
    excluded: set[str] = set()
    for window in log.amnesia_windows:
        excluded |= checks.touched_between(gateway, window.start - 3, window.end + 3)
    with console.status("reading payments.events to its end"):
        unread = await tap.finish()
    events = tap.events
    delivered = [key for d in receiver.deliveries if (key := facts.delivered_key(d))]
    results = [
        checks.acknowledged_writes_kept(seen.payments, seen.refunds, seen.captures, gateway),
        checks.nothing_stuck(gateway, time.time(), options.grace),
        checks.books_agree(books, gateway, excluded),
        checks.one_payment_per_key(gateway),
        checks.ledger_exact(gateway),
        checks.events_published(gateway, events, unread),
        checks.webhooks_delivered(events, {m.merchant_id for m in merchants}, delivered),
        checks.errors_clean(seen.answers, log.windows("envoy", RECOVER_AFTER_HEAL), excluded),
        checks.every_method_exercised(seen.payments, gateway),
        checks.Check(
            "no part died by itself",
            not log.died,
            f"{len(log.executed)} faults",
            problems=tuple(log.died),
        ),
    ]
    _print_results(console, results)
    return results


def _print_schedule(console: Console, log: FaultLog, started: float, wall_start: float) -> None:
    table = Table(title="fault schedule", title_justify="left")
    for column in ("#", "planned at", "fault", "hold", "injected at", "heal took", "note"):
        table.add_column(column)
    for n, done in enumerate(log.executed, 1):
        table.add_row(
            str(n),
            f"{done.planned.start:.1f} s",
            done.planned.fault.name,
            f"{done.planned.hold:.1f} s",
            f"{done.injected_at - wall_start:.1f} s",
            f"{done.heal_seconds:.1f} s",
            escape(done.note),
        )
    console.print(table)


def _print_load(console: Console, seen: Observations) -> None:
    tally: dict[str, int] = {}
    for outcome in seen.outcomes.values():
        label = outcome if not outcome.startswith(("gave up", "load error")) else outcome[:60]
        tally[label] = tally.get(label, 0) + 1
    summary = ", ".join(f"{label}: {n}" for label, n in sorted(tally.items(), key=lambda i: -i[1]))
    console.print(f"journeys {seen.started}: {escape(summary)}")
    errors: dict[str, int] = {}
    for answer in seen.answers:
        if not answer.ok:
            label = f"{answer.op} {answer.status or 'no answer'} {answer.reason}".rstrip()
            errors[label] = errors.get(label, 0) + 1
    shown = ", ".join(f"{label}: {n}" for label, n in sorted(errors.items(), key=lambda i: -i[1]))
    console.print(f"requests {len(seen.answers)}, error answers: {escape(shown) or 'none'}")


def _print_results(console: Console, results: list[Check]) -> None:
    table = Table(title="checks", title_justify="left")
    for column in ("check", "result", "counts", "payments involved"):
        table.add_column(column)
    for check in results:
        shown = ", ".join(check.offenders[: checks.SHOWN])
        more = len(check.offenders) - checks.SHOWN
        table.add_row(
            check.name,
            "[green]pass[/]" if check.passed else "[red]FAIL[/]",
            check.counts,
            shown + (f" (+{more})" if more > 0 else ""),
        )
    console.print(table)
    for check in results:
        for problem in check.problems[:20]:
            console.print(f"  [red]{escape(check.name)}[/]: {escape(problem)}")


if __name__ == "__main__":
    sys.exit(main())
