"""The open-model arrival scheduler: arrivals at start + i/rate, no drift, nothing skipped."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from bench.schedule import arrival_count, arrival_offsets, run_arrivals


class FakeClock:
    """A clock that only moves when the scheduler sleeps; each sleep overshoots by `late`."""

    def __init__(self, now: float = 1000.0, late: float = 0.0) -> None:
        self.now = now
        self.late = late
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.late


@pytest.mark.parametrize(
    ("rate", "duration", "count"),
    [(50, 30, 1500), (10, 0.3, 3), (20, 10, 200), (3, 1, 3), (0.5, 3, 2), (7, 0, 0)],
)
def test_arrival_count(rate: float, duration: float, count: int) -> None:
    assert arrival_count(rate, duration) == count
    assert len(list(arrival_offsets(rate, duration))) == count


def test_offsets_are_exact_multiples_of_the_interval_without_accumulated_error() -> None:
    offsets = list(arrival_offsets(30, 3600))
    assert len(offsets) == 108000
    assert offsets[:4] == pytest.approx([0, 1 / 30, 2 / 30, 3 / 30])
    # Adding 1/30 a hundred thousand times drifts; i / rate does not.
    assert offsets[-1] == 107999 / 30
    assert all(b > a for a, b in itertools.pairwise(offsets))


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        arrival_count(rate, 10)


async def test_fires_each_arrival_at_its_due_time() -> None:
    clock = FakeClock()
    fired: list[tuple[int, float, float]] = []
    log = await run_arrivals(
        arrival_offsets(20, 1),
        1000.5,
        lambda index, due: fired.append((index, due, clock())),
        clock=clock,
        sleep=clock.sleep,
    )
    assert log.fired == 20
    assert [index for index, _, _ in fired] == list(range(20))
    assert [due for _, due, _ in fired] == pytest.approx([1000.5 + i / 20 for i in range(20)])
    assert all(at == pytest.approx(due) for _, due, at in fired)
    assert log.lags == pytest.approx([0.0] * 20)


async def test_late_wakeups_do_not_accumulate() -> None:
    clock = FakeClock(late=0.003)  # every sleep overshoots by 3 ms
    fired: list[tuple[float, float]] = []
    await run_arrivals(
        arrival_offsets(100, 10),
        1000.0,
        lambda _index, due: fired.append((due, clock())),
        clock=clock,
        sleep=clock.sleep,
    )
    assert len(fired) == 1000
    last_due, last_at = fired[-1]
    assert last_due == pytest.approx(1000.0 + 9.99)
    # Each arrival is at most one overshoot late, also the thousandth one.
    assert max(at - due for due, at in fired) <= 0.003 + 1e-9
    assert last_at - last_due <= 0.003 + 1e-9


async def test_a_stalled_loop_fires_the_missed_arrivals_at_once_and_skips_none() -> None:
    clock = FakeClock()
    fired: list[tuple[int, float]] = []

    def fire(index: int, due: float) -> None:
        fired.append((index, clock()))
        if index == 2:
            clock.now += 0.5  # the event loop was blocked for half a second

    log = await run_arrivals(arrival_offsets(10, 1.5), 1000.0, fire, clock=clock, sleep=clock.sleep)
    assert [index for index, _ in fired] == list(range(15))
    # Arrivals 3..7 fell due while stalled: fired immediately, back to back, not dropped.
    assert [at for _, at in fired[3:8]] == pytest.approx([1000.7] * 5)
    assert log.lags[3:8] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    # Then the schedule is back on its own times, unaffected by the stall.
    assert [at for _, at in fired[8:]] == pytest.approx([1000.0 + i / 10 for i in range(8, 15)])


async def test_does_not_wait_for_iterations_to_finish() -> None:
    """Open model: fire only starts an iteration; slow iterations do not delay arrivals."""
    started: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    def fire(_index: int, _due: float) -> None:
        started.append(time.monotonic())
        tasks.append(asyncio.create_task(asyncio.sleep(1.0)))  # a "slow server"

    began = time.monotonic()
    await run_arrivals(arrival_offsets(100, 0.2), began + 0.01, fire)
    elapsed = time.monotonic() - began
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(started) == 20
    assert elapsed < 0.5  # 20 arrivals in 0.2 s, although each iteration takes 1 s
