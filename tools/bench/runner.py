"""Run the load: merchants first, then arrivals at a constant rate, then let journeys finish."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from bench.client import Gateway
from bench.floor import HEADER as FLOOR_HEADER
from bench.floor import PAYMENT_ID as FLOOR_PAYMENT_ID
from bench.journey import (
    JourneyRecord,
    Journeys,
    JourneySettings,
    Recorder,
    create_merchants,
    wait_ready,
)
from bench.phases import Caller, run_closed_loop, spread_callers
from bench.procstats import GENERATOR, Sampler
from bench.report import FLOOR, GET_PHASE, GetPhaseFacts, PhaseFacts, RunFacts
from bench.schedule import arrival_offsets, run_arrivals
from gateway_core.tokens import mint_token

# Lead time between scheduling the first arrival and its due time.
FIRST_ARRIVAL_DELAY_S = 0.1
PROGRESS_TICK_S = 0.25
PLAIN_PROGRESS_EVERY_S = 5.0  # when the output is not a terminal


@dataclass(frozen=True)
class LoadConfig:
    rate: float = 50.0
    duration: float = 30.0
    warmup: float = 3.0
    # The GET phase reads each payment with its owner's token, so the per-merchant limit
    # (100 requests/s) caps it at 100/s per merchant: 32 merchants carry its 64 callers two
    # each, up to 3,200 GET/s, above issue 13's 2,000.
    merchants: int = 32
    poll_interval: float = 0.25
    success_timeout: float = 10.0
    request_timeout: float = 10.0
    amount_paisa: int = 10000
    vpa: str = "success@upi"
    max_in_flight: int = 10000
    max_connections: int = 512
    # Seconds of the GET phase after the journeys (0: none): the SUCCESS payments, read back
    # to back, each with its merchant's token.
    get_duration: float = 10.0
    get_concurrency: int = 64
    # Seconds of the floor phase after the journeys (0: none; it needs a stack with the
    # floor's route, which only a stack the benchmark starts has).
    floor_duration: float = 10.0
    floor_concurrency: int = 64

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Credentials:
    """How to sign the bearer tokens the gateway accepts."""

    secret: str
    issuer: str
    audience: str

    def token(self, subject: str, role: str = "merchant", ttl_seconds: int = 3600) -> str:
        return mint_token(
            self.secret,
            subject,
            role=role,
            issuer=self.issuer,
            audience=self.audience,
            ttl_seconds=ttl_seconds,
        )


async def run_load(
    config: LoadConfig,
    gateway_url: str,
    credentials: Credentials,
    console: Console,
    processes: Mapping[str, int] | None = None,
) -> RunFacts:
    """Create the merchants, run warm-up and measured arrivals, wait for journeys to end,
    then the GET phase and the floor phase; `processes` (name -> pid of a session leader) are
    sampled all along, with the generator itself."""
    run_id = secrets.token_hex(4)
    ttl = int(config.warmup + config.duration + config.success_timeout) + 3600
    async with Gateway(gateway_url, config.max_connections, config.request_timeout) as gateway:
        with console.status(f"creating {config.merchants} merchants at {gateway_url}…"):
            await wait_ready(gateway)
            admin = {"Authorization": f"Bearer {credentials.token('bench-admin', 'admin', ttl)}"}
            merchants = await create_merchants(
                gateway,
                admin,
                config.merchants,
                run_id,
                lambda merchant_id: credentials.token(merchant_id, ttl_seconds=ttl),
            )
        console.print(
            f"[green]✓[/] {len(merchants)} merchants created (run {run_id}); "
            f"offering {config.rate:g} journeys/s for {config.warmup:g} s warm-up "
            f"+ {config.duration:g} s measured"
        )
        recorder = Recorder()
        journeys = Journeys(
            gateway,
            merchants,
            recorder,
            JourneySettings(
                poll_interval=config.poll_interval,
                success_timeout=config.success_timeout,
                amount_paisa=config.amount_paisa,
                vpa=config.vpa,
            ),
            run_id,
        )
        sampler = Sampler({**(processes or {}), GENERATOR: os.getpid()})
        async with sampler.running():
            facts = await _arrivals(config, journeys, recorder, console)
            get_phase = None
            if config.get_duration > 0:
                get_phase = await _get_phase(config, journeys, recorder.journeys, console)
            floor = None
            if config.floor_duration > 0:
                floor = await _floor(config, journeys, credentials, ttl, console)
        return replace(facts, get_phase=get_phase, floor=floor, process_samples=sampler.samples)


async def _get_phase(
    config: LoadConfig, journeys: Journeys, done: Sequence[JourneyRecord], console: Console
) -> GetPhaseFacts | None:
    """GETs of the payments the journeys brought to SUCCESS (warm-up ones included), back to
    back by `get_concurrency` callers, each with the token of the merchant that owns its
    payments (another merchant's token gets 404). None when there is no such payment."""
    payments: dict[str, list[str]] = {}
    headers: dict[str, Mapping[str, str]] = {}
    for journey in done:
        if journey.error is None and journey.payment_id is not None:
            merchant = journeys.merchant_of(journey.index)
            payments.setdefault(merchant.merchant_id, []).append(journey.payment_id)
            headers[merchant.merchant_id] = merchant.headers
    spread = spread_callers(payments, config.get_concurrency)
    if not spread:
        console.print("[yellow]GET phase skipped: no journey reached SUCCESS[/]")
        return None
    callers = [
        Caller(headers[merchant_id], [f"/api/v1/payments/{payment_id}" for payment_id in ids])
        for merchant_id, ids in spread
    ]
    phase = await run_closed_loop(
        GET_PHASE, callers, config.get_duration, journeys, console, "GET phase"
    )
    return GetPhaseFacts(
        phase=phase,
        payments=sum(len(ids) for ids in payments.values()),
        callers_per_merchant=Counter(merchant_id for merchant_id, _ in spread),
    )


async def _floor(
    config: LoadConfig, journeys: Journeys, credentials: Credentials, ttl: int, console: Console
) -> PhaseFacts:
    """As many GETs of the floor's constant payment as `floor_concurrency` callers can make
    back to back (the most the gateway's door sustains), each caller with its own merchant
    token so that no per-merchant limit is what is measured."""

    def caller(number: int) -> Caller:
        token = credentials.token(f"bench-floor-{number}", ttl_seconds=ttl)
        headers = {"Authorization": f"Bearer {token}", FLOOR_HEADER: "1"}
        path = f"/api/v1/payments/{FLOOR_PAYMENT_ID}"
        return Caller(headers, [path])

    callers = [caller(number) for number in range(config.floor_concurrency)]
    return await run_closed_loop(FLOOR, callers, config.floor_duration, journeys, console, "floor")


async def _arrivals(
    config: LoadConfig, journeys: Journeys, recorder: Recorder, console: Console
) -> RunFacts:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.monotonic() + FIRST_ARRIVAL_DELAY_S
    window = (start + config.warmup, start + config.warmup + config.duration)
    running: dict[asyncio.Task[None], bool] = {}  # task -> measured
    measured_lags: list[float] = []
    dropped = 0

    def fire(index: int, due: float) -> None:
        nonlocal dropped
        measured = due >= window[0] - 1e-9
        if measured:
            measured_lags.append(max(0.0, time.monotonic() - due))
        if len(running) >= config.max_in_flight:
            dropped += measured
            recorder.dropped += 1
            return
        recorder.started += 1
        task = asyncio.create_task(journeys.run(index, due, measured))
        running[task] = measured
        task.add_done_callback(lambda done: running.pop(done, None))

    cpu_before, wall_before = time.process_time(), time.monotonic()
    offsets = arrival_offsets(config.rate, config.warmup + config.duration)
    unfinished = 0
    with _progress(config, recorder, running, start, console) as ticker:
        try:
            await run_arrivals(offsets, start, fire)
            ticker.draining = True
            if running:
                # A journey polls for success_timeout, and its last poll may take a request
                # timeout; the last arrival's journey gets that long, whatever is left is cut.
                patience = config.success_timeout + config.request_timeout + 1
                await asyncio.wait(list(running), timeout=patience)
            unfinished = sum(running.values())
        finally:
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    generator_cpu_s = time.process_time() - cpu_before
    load_s = time.monotonic() - wall_before
    return RunFacts(
        config=config.to_json(),
        generator_cpu_s=generator_cpu_s,
        load_s=load_s,
        started_at=started_at,
        window=window,
        requests=recorder.requests,
        journeys=recorder.journeys,
        start_lags=measured_lags,
        dropped=dropped,
        unfinished=unfinished,
        unscored=recorder.unscored,
        examples=recorder.examples,
    )


class _Ticker:
    draining = False


@contextmanager
def _progress(
    config: LoadConfig,
    recorder: Recorder,
    running: dict[asyncio.Task[None], bool],
    start: float,
    console: Console,
) -> Iterator[_Ticker]:
    """A live bar on a terminal (a plain line every few seconds elsewhere) while it runs."""
    ticker = _Ticker()
    total = config.warmup + config.duration
    progress = Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.completed:>5.1f}/{task.total:g} s"),
        TextColumn("{task.fields[stats]}"),
        console=console,
        transient=False,
    )
    task_id = progress.add_task("warm-up", total=total, stats="")
    state = {"requests": 0, "at": time.monotonic(), "plain": 0.0}

    def line() -> str:
        now = time.monotonic()
        done = len(recorder.requests)
        elapsed = now - state["at"]
        rate = (done - state["requests"]) / elapsed if elapsed > 0 else 0.0
        state["requests"], state["at"] = done, now
        return (
            f"started {recorder.started}  in flight {len(running)}  "
            f"SUCCESS {recorder.succeeded}  failed {recorder.failed}  "
            f"req/s {rate:.0f}  req errors {recorder.request_errors}"
        )

    def phase(now: float) -> str:
        if ticker.draining:
            return "draining"
        return "warm-up" if now < start + config.warmup else "measuring"

    async def tick() -> None:
        while True:
            await asyncio.sleep(PROGRESS_TICK_S if console.is_terminal else PLAIN_PROGRESS_EVERY_S)
            now = time.monotonic()
            elapsed = min(max(0.0, now - start), total)
            stats = line()
            if console.is_terminal:
                progress.update(task_id, completed=elapsed, description=phase(now), stats=stats)
            else:
                console.print(f"{phase(now):<10} {elapsed:5.1f}/{total:g} s  {stats}")

    if console.is_terminal:
        progress.start()
    ticking = asyncio.get_running_loop().create_task(tick())
    try:
        yield ticker
    finally:
        ticking.cancel()
        if console.is_terminal:
            progress.update(task_id, completed=total, description="done", stats=line())
            progress.stop()
