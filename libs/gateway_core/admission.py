"""Admission control: refuse new work at the door once this process is saturated.

Past what a process sustains, every request it accepts waits behind the ones before it on its
one event loop. Without a bound, the backlog grows until callers time out (a payment whose
answer never came), health checks miss their timeout and the load balancer takes the process
out, so even reads fail. The bench at twice the sustainable rate showed all three (issue 13).

So the work that starts something new (a payment) is admitted only while

- fewer than `max_in_flight` such calls are already running here, and
- the event loop keeps its schedule: its smoothed lag stays under `max_lag_s`.

A caller tests the door first (`check()`, which takes no place) before a request costs
anything, then holds a place (`admit()`) only around the work that is this process's own.
Otherwise the call is refused at once, before anything is stored: UNAVAILABLE with reason
OVERLOADED, Retry-After, and the bound in the error's metadata (`cause`: `admission.in_flight`
or `admission.loop_lag`), which Envoy returns as HTTP 503. Work on what already exists (reads,
captures, refunds, provider callbacks) and health checks are never refused here: they are what
lets the admitted payments finish.

`LoopLag` measures the lag: a task that sleeps a fixed interval and records how late it woke.
That lateness is the time every ready callback, a new request's included, waits for the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from prometheus_client import Counter, Gauge

from gateway_core.errors import Unavailable

OVERLOADED = "OVERLOADED"
# Seconds a refused caller is told to wait: long enough for the backlog to clear.
RETRY_AFTER_S = 1

LOOP_LAG = Gauge(
    "event_loop_lag_seconds",
    "How late this process's event loop runs its callbacks (smoothed)",
)
REFUSED = Counter(
    "admission_refused_total",
    "Calls refused with UNAVAILABLE (Retry-After) because this process was saturated",
    ["work", "reason"],
)


class LoopLag:
    """The event loop's lag, sampled every `interval_s` and smoothed (with the defaults, a
    lateness that lasts a quarter of a second moves it most of the way)."""

    def __init__(self, interval_s: float = 0.05, smoothing: float = 0.2) -> None:
        self.interval_s = interval_s
        self._smoothing = smoothing
        self.seconds = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe(max(0.0, loop.time() - due))

    def observe(self, late_s: float) -> None:
        # An exponential average: one pause (a GC, a slow callback) counts a fifth, so only one
        # of more than half a second reaches the default bound alone; a backlog that lasts a
        # few samples does.
        self.seconds += self._smoothing * (late_s - self.seconds)
        LOOP_LAG.set(self.seconds)


class Admission:
    """The door for one kind of new work (`work`, e.g. "payment")."""

    def __init__(self, work: str, lag: LoopLag, *, max_in_flight: int, max_lag_ms: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if max_lag_ms < 1:
            raise ValueError("max_lag_ms must be at least 1")
        self.work = work
        self._lag = lag
        self._max_in_flight = max_in_flight
        self._max_lag_s = max_lag_ms / 1000
        self.in_flight = 0

    @property
    def saturated(self) -> bool:
        """The event loop is behind by more than its bound: this process is the bottleneck."""
        return self._lag.seconds > self._max_lag_s

    def check(self) -> None:
        """Raise Unavailable if a call would be refused now, taking no place: the cheap test at
        the door, before a request costs anything (its idempotency key, its lookups)."""
        if self.in_flight >= self._max_in_flight:
            raise self._refuse("in_flight")
        if self.saturated:
            raise self._refuse("loop_lag")

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Run the block as one admitted call, holding a place, or raise Unavailable (nothing
        was done)."""
        self.check()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _refuse(self, reason: str) -> Unavailable:
        REFUSED.labels(work=self.work, reason=reason).inc()
        return Unavailable(
            f"the gateway is at capacity and takes no new {self.work} now: retry shortly",
            reason=OVERLOADED,
            metadata={"cause": f"admission.{reason}"},
            retry_after_s=RETRY_AFTER_S,
        )
