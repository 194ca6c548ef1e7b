"""The benchmark's per-process accounting: /proc parsing, grouping by session, per-request CPU."""

from __future__ import annotations

import os

import pytest
from bench import procstats
from bench.procstats import (
    ProcStat,
    Sample,
    Usage,
    group,
    parse_stat,
    parse_status,
    summarize,
)

TICKS = procstats._TICKS_PER_S
KIB = 1024


def _stat_line(pid: int, comm: str, parent: int, times: tuple[int, int, int, int], rss: int) -> str:
    # Fields 3..24 of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss.
    utime, stime, cutime, cstime = times
    times_text = f"{utime} {stime} {cutime} {cstime}"
    rest = f"S {parent} 7 7 0 -1 0 0 0 0 0 {times_text} 20 0 1 0 5 999 {rss}"
    return f"{pid} ({comm}) {rest} 0 0 0\n"


def test_parse_stat_reads_parent_cpu_and_rss_past_a_command_name_with_spaces_and_parens() -> None:
    stat = parse_stat(_stat_line(42, "postgres: a (b) c", 40, (10, 5, 3, 2), 1234))
    assert stat == ProcStat(pid=42, parent=40, cpu_ticks=20)


def test_parse_status_reads_private_and_shared_resident_memory() -> None:
    text = "Name:\tpostgres\nVmRSS:\t  900 kB\nRssAnon:\t  100 kB\nRssFile:\t  50 kB\n"
    assert parse_status(text + "RssShmem:\t  750 kB\nThreads:\t1\n") == (150, 750)
    assert parse_status("Name:\tkthreadd\nThreads:\t1\n") == (0, 0)


def test_parse_stat_reads_this_process() -> None:
    with open(f"/proc/{os.getpid()}/stat") as f:
        stat = parse_stat(f.read())
    assert stat.pid == os.getpid()
    assert stat.parent == os.getppid()
    assert stat.cpu_ticks >= 0
    with open(f"/proc/{os.getpid()}/status") as f:
        assert parse_status(f.read())[0] > 0


def test_group_gives_each_process_to_its_nearest_named_ancestor() -> None:
    stats = [
        ProcStat(pid=1, parent=0, cpu_ticks=99 * TICKS, rss_kib=99),  # not ours
        ProcStat(pid=400, parent=1, cpu_ticks=4 * TICKS, rss_kib=1),  # the generator
        ProcStat(pid=100, parent=400, cpu_ticks=TICKS, rss_kib=10, shmem_kib=300),  # postmaster
        ProcStat(pid=101, parent=100, cpu_ticks=2 * TICKS, rss_kib=5, shmem_kib=500),  # backend
        ProcStat(pid=102, parent=101, cpu_ticks=TICKS, rss_kib=1, shmem_kib=200),  # its child
        ProcStat(pid=200, parent=400, cpu_ticks=3 * TICKS, rss_kib=7),  # envoy
        ProcStat(pid=401, parent=400, cpu_ticks=TICKS, rss_kib=2),  # a helper of the generator
    ]
    usage = group(stats, {"postgres": 100, "envoy": 200, "generator": 400, "gone": 500})
    assert usage == {
        # Private memory summed, shared memory once (the largest view of it).
        "postgres": Usage(cpu_s=4.0, rss_bytes=(16 + 500) * KIB),
        "envoy": Usage(cpu_s=3.0, rss_bytes=7 * KIB),
        "generator": Usage(cpu_s=5.0, rss_bytes=3 * KIB),
    }


def test_read_all_reads_this_process_and_its_children_only() -> None:
    mine = procstats.read_all({"generator": os.getpid()})
    assert os.getpid() in {stat.pid for stat in mine}
    assert 1 not in {stat.pid for stat in mine}
    [me] = [stat for stat in mine if stat.pid == os.getpid()]
    assert me.rss_kib > 0


def test_group_survives_a_parent_cycle() -> None:
    # Processes come and go while /proc is read: a stale view must not loop forever.
    stats = [ProcStat(pid=5, parent=6, cpu_ticks=1), ProcStat(pid=6, parent=5, cpu_ticks=1)]
    assert group(stats, {"x": 9}) == {}


def _samples(points: list[tuple[float, float, int]]) -> list[Sample]:
    return [Sample(at, {"svc": Usage(cpu, rss * 2**20)}) for at, cpu, rss in points]


def test_cpu_per_request_is_the_cpu_rate_over_the_window_divided_by_the_request_rate() -> None:
    # 0.5 CPU seconds per second inside the window [10, 20]; before and after it, much more.
    samples = _samples(
        [(0, 0.0, 50), (10, 9.0, 60), (15, 11.5, 80), (20, 14.0, 70), (30, 30.0, 65)]
    )
    [(name, entry)] = summarize(samples, (10, 20), requests_per_s=250.0).items()
    assert name == "svc"
    assert entry["cpu_percent_of_one_core"] == pytest.approx(50.0)
    assert entry["cpu_ms_per_request"] == pytest.approx(2.0)  # 500 ms/s ÷ 250 req/s
    assert entry["peak_rss_mib"] == 80.0  # over every sample, not only the window's
    assert entry["rss_mib_at_end"] == 65.0


def test_no_cpu_figure_without_two_samples_in_the_window_or_without_requests() -> None:
    samples = _samples([(0, 0.0, 1), (10, 1.0, 1), (20, 2.0, 1)])
    assert summarize(samples, (11, 19), 100.0)["svc"]["cpu_ms_per_request"] is None
    entry = summarize(samples, (0, 20), 0.0)["svc"]
    assert entry["cpu_percent_of_one_core"] == pytest.approx(10.0)
    assert entry["cpu_ms_per_request"] is None


def test_rss_curve_takes_the_first_sample_at_or_after_each_minute() -> None:
    points = [(float(t), 0.0, t) for t in range(0, 181, 7)]  # a sample every 7 s
    curve = summarize(_samples(points), (0, 180), 1.0)["svc"]["rss_mib_per_minute"]
    assert curve == [0.0, 63.0, 126.0]


def test_rss_curve_skips_a_minute_the_sampler_slept_through() -> None:
    curve = summarize(_samples([(0, 0, 1), (130, 0, 2), (185, 0, 3)]), (0, 185), 1.0)
    assert curve["svc"]["rss_mib_per_minute"] == [1.0, 2.0, 3.0]


def test_total_adds_the_known_figures() -> None:
    components: dict[str, dict[str, float | None]] = {
        "a": {"cpu_ms_per_request": 1.5},
        "b": {"cpu_ms_per_request": None},
        "c": {"cpu_ms_per_request": 0.25},
    }
    assert procstats.total_cpu_ms_per_request(components) == 1.75
    assert procstats.total_cpu_ms_per_request({"b": {"cpu_ms_per_request": None}}) is None
