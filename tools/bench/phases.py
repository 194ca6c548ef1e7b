"""Closed-loop phases after the journeys: the GET phase and the floor.

In a closed loop each caller sends its next request as soon as the last one answered, so the
phase measures the most the gateway sustains for that request (its capacity), and its latency
is mostly queueing behind the other callers. The first second is not measured (new
connections, Envoy's first calls upstream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import cycle

from rich.console import Console

from bench.journey import Journeys, Recorder
from bench.report import PhaseFacts

WARMUP_S = 1.0


@dataclass(frozen=True)
class Caller:
    """One caller of a closed-loop phase: its headers, and the paths it GETs in turn, round
    and round."""

    headers: Mapping[str, str]
    paths: Sequence[str]


async def run_closed_loop(
    op: str,
    callers: Sequence[Caller],
    duration: float,
    journeys: Journeys,
    console: Console,
    status: str,
) -> PhaseFacts:
    """Every caller GETs back to back for `WARMUP_S` + `duration` seconds; requests due after
    the warm-up are measured. Requests are recorded as `op` through `journeys.call`, so they
    are classified exactly as the journeys' are."""
    recorder = Recorder()
    calls = replace(journeys, recorder=recorder)
    start = time.monotonic()
    window = (start + WARMUP_S, start + WARMUP_S + duration)

    async def call_back_to_back(caller: Caller) -> None:
        for path in cycle(caller.paths):
            now = time.monotonic()
            if now >= window[1]:
                return
            measured = now >= window[0]
            await calls.call(op, measured, now, "GET", path, headers=caller.headers)

    with console.status(f"{status}: {len(callers)} callers for {WARMUP_S + duration:g} s…"):
        await asyncio.gather(*(call_back_to_back(caller) for caller in callers))
    return PhaseFacts(window=window, requests=recorder.requests, examples=recorder.examples)


def spread_callers(
    payments: Mapping[str, Sequence[str]], concurrency: int
) -> list[tuple[str, list[str]]]:
    """(merchant id, payment ids in the order to GET them) for each of `concurrency` callers.

    `payments` maps each merchant to the payments it owns (a payment is only visible to its
    merchant: another one's token gets 404). Callers go to merchants round robin, so each
    merchant's rate limit carries as few callers as possible; the callers of one merchant start
    at different payments of its own."""
    owners = sorted(merchant for merchant, ids in payments.items() if ids)
    if not owners:
        return []
    spread = []
    for number in range(concurrency):
        merchant = owners[number % len(owners)]
        ids = list(payments[merchant])
        turn = (number // len(owners)) % len(ids)
        spread.append((merchant, ids[turn:] + ids[:turn]))
    return spread
