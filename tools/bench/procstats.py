"""CPU and memory of every process of the benchmarked stack, read from /proc (Linux).

A component is a process the benchmark names (each part devstack started, and the generator,
the benchmark's own process) with every descendant that no nearer named process claims:
PostgreSQL's backends, a wrapper's child. (Not by session: PostgreSQL's backends call setsid.)
The stack's parts are children of the generator, and are counted as themselves, not in it.
Threads are part of their process's figures.

CPU is utime + stime of the live processes plus cutime + cstime (what each has reaped): a
PostgreSQL backend that exits hands its CPU to the postmaster's cumulative counters, so it is
neither lost nor counted twice. Memory is each process's private and file-backed resident
pages (RssAnon + RssFile from /proc/<pid>/status) summed over the component, plus its shared
memory once (the largest RssShmem of its processes): PostgreSQL's shared buffers appear in every
backend that touched them, and summing them per backend would count them many times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GENERATOR = "generator"
SAMPLE_EVERY_S = 1.0
CURVE_EVERY_S = 60.0
_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the report needs."""

    pid: int
    parent: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss_kib: int = 0  # RssAnon + RssFile
    shmem_kib: int = 0  # RssShmem


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line. The command name (field 2) is in parentheses and may
    itself hold spaces and parentheses, so fields are counted from the last ')'."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    # tail starts at field 3 (state): field n is tail's index n - 3.
    fields = tail.split()
    return ProcStat(
        pid=pid,
        parent=int(fields[4 - 3]),
        cpu_ticks=sum(int(fields[n - 3]) for n in (14, 15, 16, 17)),
    )


def parse_status(text: str) -> tuple[int, int]:
    """(RssAnon + RssFile, RssShmem) in KiB from /proc/<pid>/status (0 for a kernel thread)."""
    sizes = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem"):
            sizes[name] = int(value.split()[0])
    return sizes.get("RssAnon", 0) + sizes.get("RssFile", 0), sizes.get("RssShmem", 0)


@dataclass(frozen=True)
class Usage:
    """One component at one instant: CPU seconds used so far, bytes resident now."""

    cpu_s: float
    rss_bytes: int


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    usage: Mapping[str, Usage]


def owners(stats: Sequence[ProcStat], leaders: Mapping[str, int]) -> dict[int, str]:
    """pid -> name, for each process with a named ancestor (itself included): the nearest."""
    named = {pid: name for name, pid in leaders.items()}
    parent = {stat.pid: stat.parent for stat in stats}
    owned: dict[int, str] = {}
    for stat in stats:
        pid, seen = stat.pid, 0
        # `seen` bounds the walk: a view read while processes come and go may hold a cycle.
        while pid not in named and pid in parent and seen < len(parent):
            pid, seen = parent[pid], seen + 1
        if pid in named:
            owned[stat.pid] = named[pid]
    return owned


def group(stats: Sequence[ProcStat], leaders: Mapping[str, int]) -> dict[str, Usage]:
    """Sum each named process with its descendants (see `owners`)."""
    owned = owners(stats, leaders)
    cpu: dict[str, int] = {}
    rss: dict[str, int] = {}
    shmem: dict[str, int] = {}
    for stat in stats:
        name = owned.get(stat.pid)
        if name is None:
            continue
        cpu[name] = cpu.get(name, 0) + stat.cpu_ticks
        rss[name] = rss.get(name, 0) + stat.rss_kib
        shmem[name] = max(shmem.get(name, 0), stat.shmem_kib)
    return {
        name: Usage(cpu[name] / _TICKS_PER_S, (rss[name] + shmem[name]) * 1024)
        for name in leaders
        if name in cpu
    }


def read_all(leaders: Mapping[str, int]) -> list[ProcStat]:
    """The stat of every process `leaders` own, with its memory from status (processes come
    and go while we read: what cannot be read is left out). Only our own processes' status is
    read: a shared machine runs hundreds of others."""
    stats = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stats.append(parse_stat((entry / "stat").read_text()))
    owned = owners(stats, leaders)
    ours = []
    for stat in stats:
        if stat.pid in owned:
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss, shmem = parse_status((_PROC / str(stat.pid) / "status").read_text())
                ours.append(replace(stat, rss_kib=rss, shmem_kib=shmem))
    return ours


@dataclass
class Sampler:
    """Samples the components every `every` seconds while `running()` is open."""

    leaders: Mapping[str, int]
    every: float = SAMPLE_EVERY_S
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> None:
        self.samples.append(Sample(time.monotonic(), group(read_all(self.leaders), self.leaders)))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        async def loop() -> None:
            while True:
                # In a thread: reading /proc on a busy machine takes milliseconds that would
                # otherwise delay the generator's arrivals.
                await asyncio.to_thread(self.sample)
                await asyncio.sleep(self.every)

        task = asyncio.get_running_loop().create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sample()


def _span(samples: Sequence[Sample], begin: float, end: float) -> tuple[Sample, Sample] | None:
    """The first sample at or after `begin` and the last at or before `end`."""
    inside = [s for s in samples if begin - 1e-9 <= s.at <= end + 1e-9]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def summarize(
    samples: Sequence[Sample],
    window: tuple[float, float],
    requests_per_s: float,
    *,
    curve_every: float = CURVE_EVERY_S,
) -> dict[str, Any]:
    """Per component over the measured window: CPU as a share of one core, CPU milliseconds per
    HTTP request (CPU rate / request rate, both over the same window), peak RSS over every
    sample, and RSS at each `curve_every` seconds from the first sample."""
    span = _span(samples, *window)
    names = sorted({name for s in samples for name in s.usage})
    out: dict[str, Any] = {}
    origin = samples[0].at if samples else 0.0
    for name in names:
        entry: dict[str, Any] = {"cpu_percent_of_one_core": None, "cpu_ms_per_request": None}
        if span is not None:
            first, last = span
            if name in first.usage and name in last.usage:
                cpu_rate = (last.usage[name].cpu_s - first.usage[name].cpu_s) / (last.at - first.at)
                entry["cpu_percent_of_one_core"] = round(100 * cpu_rate, 1)
                if requests_per_s > 0:
                    entry["cpu_ms_per_request"] = round(1000 * cpu_rate / requests_per_s, 3)
        rss = [(s.at, s.usage[name].rss_bytes) for s in samples if name in s.usage]
        entry["peak_rss_mib"] = round(max(b for _, b in rss) / 2**20, 1) if rss else None
        entry["rss_mib_per_minute"] = _curve(rss, origin, curve_every)
        entry["rss_mib_at_end"] = round(rss[-1][1] / 2**20, 1) if rss else None
        out[name] = entry
    return out


def _curve(rss: Sequence[tuple[float, int]], origin: float, every: float) -> list[float]:
    """RSS (MiB) at origin, origin + every, origin + 2 every, …: the first sample at or after
    each mark (a mark the sampler overslept is skipped, not repeated)."""
    curve: list[float] = []
    mark = 0
    for at, size in rss:
        if at + 1e-9 >= origin + mark * every:
            curve.append(round(size / 2**20, 1))
            mark = int((at - origin + 1e-9) // every) + 1
    return curve


def total_cpu_ms_per_request(components: Mapping[str, Mapping[str, Any]]) -> float | None:
    values = [c["cpu_ms_per_request"] for c in components.values()]
    known = [v for v in values if v is not None]
    return round(sum(known), 3) if known else None
