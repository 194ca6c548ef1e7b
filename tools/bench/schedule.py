"""When iterations start: a constant arrival rate (the open model), without drift.

The i-th arrival is due at `start + i / rate`, computed from i rather than by adding 1/rate
to the previous time, so neither float error nor a late wake-up accumulates: an arrival that
comes late (the event loop was busy) is fired at once, and the next one is still due at its
own time. Nothing waits for earlier iterations to finish.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

# Float slack when counting arrivals: 0.3 s at 10/s is 3 arrivals, not 3.0000000000000004.
_EPSILON = 1e-9


def arrival_count(rate: float, duration: float) -> int:
    """How many arrivals fall in [0, duration) at `rate` per second."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if duration < 0:
        raise ValueError(f"duration must not be negative, got {duration}")
    return max(0, math.ceil(duration * rate - _EPSILON))


def arrival_offsets(rate: float, duration: float) -> Iterator[float]:
    """Seconds from the start at which each arrival is due: 0, 1/rate, 2/rate, ..."""
    for index in range(arrival_count(rate, duration)):
        yield index / rate


@dataclass
class ArrivalLog:
    """How punctual the scheduler was: lag = when an arrival fired minus when it was due."""

    fired: int = 0
    lags: list[float] = field(default_factory=list)


async def run_arrivals(
    offsets: Iterator[float],
    start: float,
    fire: Callable[[int, float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ArrivalLog:
    """Call `fire(index, due_time)` for each arrival at `start + offset` (clock seconds).

    `fire` must not block: it starts the iteration (a task) and returns. Late arrivals are
    fired immediately, never skipped, so the offered load stays what was asked for.
    """
    log = ArrivalLog()
    for index, offset in enumerate(offsets):
        due = start + offset
        delay = due - clock()
        if delay > 0:
            await sleep(delay)
        log.lags.append(max(0.0, clock() - due))
        fire(index, due)
        log.fired += 1
    return log
