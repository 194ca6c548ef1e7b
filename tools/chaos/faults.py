"""Injecting and healing the planned faults on a running devstack Stack, one at a time, and
recording when each really happened (the plan says when it should)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.checks import Window
from chaos.schedule import Action, PlannedFault, Timing
from devstack.stack import Stack, StackError


@dataclass
class Executed:
    planned: PlannedFault
    injected_at: float = 0.0  # Unix seconds
    healed_at: float = 0.0
    heal_seconds: float = 0.0  # how long the heal took (a restart's start-up)
    note: str = ""  # what went wrong injecting or healing, or a part that died meanwhile


@dataclass
class FaultLog:
    executed: list[Executed] = field(default_factory=list)
    # The providers' books read just before the sandbox was killed (it forgets them): the
    # moment, and the document.
    books_before_amnesia: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    # When the sandbox came back, per kill: payments touched around then are not comparable.
    amnesia_windows: list[Window] = field(default_factory=list)
    died: list[str] = field(default_factory=list)  # parts that exited without being told to

    def windows(self, target: str, recover: float) -> list[Window]:
        return [
            Window(e.planned.fault.name, e.injected_at, e.healed_at + recover)
            for e in self.executed
            if e.planned.fault.target == target and e.planned.fault.action is not Action.FREEZE
        ]


async def run_faults(
    stack: Stack,
    planned: list[PlannedFault],
    timing: Timing,
    started: float,
    stop: asyncio.Event,
    read_books: Callable[[], Awaitable[dict[str, Any]]],
    log: FaultLog,
) -> None:
    """Inject each planned fault at its time (from `started`, a monotonic clock), hold it,
    heal it; a heal that ran late pushes the next fault back to keep the recovery gap."""
    ready_at = started
    for plan in planned:
        due = max(started + plan.start, ready_at)
        if await _wait(stop, due - time.monotonic()):
            return
        done = Executed(plan)
        log.executed.append(done)
        fault = plan.fault
        done.injected_at = time.time()
        try:
            if fault.target == "sandbox" and fault.action is Action.KILL_SERVICE:
                log.books_before_amnesia.append((time.time(), await read_books()))
            _inject(stack, fault.action, fault.target)
        except (StackError, KeyError, OSError) as exc:
            done.note = f"inject failed: {exc}"
        await asyncio.sleep(plan.hold)
        healing = time.monotonic()
        try:
            await _heal(stack, fault.action, fault.target)
        except (StackError, KeyError, OSError) as exc:
            done.note = f"heal failed: {str(exc).splitlines()[0]}"
        done.heal_seconds = time.monotonic() - healing
        done.healed_at = time.time()
        if fault.target == "sandbox" and fault.action is Action.KILL_SERVICE:
            log.amnesia_windows.append(Window(fault.name, done.injected_at, done.healed_at))
        for component in stack.exited():
            log.died.append(f"{component.name} ({component.note}) during {fault.name}")
            done.note = (done.note + f"; {component.name} died").lstrip("; ")
        ready_at = time.monotonic() + timing.recover


def _inject(stack: Stack, action: Action, target: str) -> None:
    match action:
        case Action.KILL_SERVICE:
            stack.crash(target)
        case Action.KILL_INFRA:
            stack.kill(target)
        case Action.FREEZE:
            stack.freeze(target)


async def _heal(stack: Stack, action: Action, target: str) -> None:
    match action:
        case Action.KILL_SERVICE:
            await stack.revive(target)
        case Action.KILL_INFRA:
            await stack.start_again(target)
        case Action.FREEZE:
            stack.thaw(target)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`; True if `stop` was set meanwhile."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
