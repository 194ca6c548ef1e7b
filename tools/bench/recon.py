"""`python -m bench.recon` (`make bench-recon`): how fast reconciliation ingests and matches.

On a throwaway PostgreSQL (the local stack's binaries, its own data directory, removed after):
1. loads `--payments` captured payments into reconciliation's books directly with COPY (not
   through the API or Kafka: the measurement is the matching, not the event pipeline);
2. writes a settlement file of `--lines` lines for them to a temporary file, streamed, with a
   discrepancy every `--discrepancy-every` lines (short amounts, higher fees, duplicates and
   unknown transactions, so every outcome's path runs);
3. ingests and matches it exactly as a run does (`reconciliation.ingest.ingest_file`: parse,
   look up, classify, COPY, in one transaction), timed, with a progress bar;
4. prints lines/s, the outcome counts, and the process's memory: resident set size sampled
   during the ingest (peak and growth over the baseline before it) and the lifetime peak.

The target is 50,000 lines/s (README, "Reconciliation"); the verdict is printed and the exit
status is 0 either way (it is a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from devstack import postgres
from devstack.postgres import ScratchServer
from devstack.process import Child, stop_together
from gateway_core.db import create_pool
from gateway_core.fees import DEFAULT_PRICING, compute_fee
from gateway_core.money import rupees_string
from reconciliation.ingest import FileOrigin, bulk_settings, ingest_file
from reconciliation.settlement_file import HEADER

TARGET_LINES_PER_SECOND = 50_000
PROVIDER = "bench_upi"
DAY = date(2026, 12, 5)
CAPTURED_AT = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
LOAD_BATCH = 50_000
START_SECONDS = 30
_BOOK_COLUMNS = (
    "payment_id",
    "merchant_id",
    "provider",
    "method",
    "provider_reference",
    "amount_paisa",
    "captured_paisa",
    "fees_paisa",
    "tax_paisa",
    "status",
    "captured_at",
    "settlement_date",
    "sequence",
)


def amount_of(n: int) -> int:
    return 100 + (n * 7919) % 500_000


def fee_of(amount: int) -> tuple[int, int]:
    fee = compute_fee(amount, DEFAULT_PRICING["WALLET"])
    return fee.fee_paisa, fee.tax_paisa


def book_rows(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    for n in range(start, stop):
        amount = amount_of(n)
        fee, tax = fee_of(amount)
        yield (
            f"PAY_{n:010d}",
            "MER_BENCH",
            PROVIDER,
            "WALLET",
            f"REF{n:012d}",
            amount,
            amount,
            fee,
            tax,
            "SUCCESS",
            CAPTURED_AT,
            DAY,
            3,
        )


def write_file(out: IO[str], lines: int, payments: int, every: int) -> None:
    """The settlement file: line k settles payment k (mod payments), with discrepancies."""
    out.write(",".join(HEADER) + "\n")
    settled_at = "2026-12-05T23:59:59+05:30"
    for k in range(lines):
        n = k % payments
        amount = amount_of(n)
        fee, tax = fee_of(amount)
        reference, ours = f"REF{n:012d}", f"PAY_{n:010d}"
        if every and k % every == every - 1:
            kind = (k // every) % 3
            if kind == 0:
                amount -= 100
            elif kind == 1:
                fee += 100
            else:
                reference, ours = f"XTR{k:012d}", f"pay_{k:010d}"
        out.write(
            f"{reference},{ours},payment,{rupees_string(amount)},{rupees_string(fee)},"
            f"{rupees_string(tax)},INR,{settled_at},setl_bench,UTRBENCH0001,WALLET\n"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def scratch_postgres(state: Path) -> Iterator[ScratchServer]:
    state.mkdir(parents=True, exist_ok=True)
    instance = postgres.prepare(state)

    def spawn(name: str, argv: list[str], stop_signal: int = signal.SIGTERM) -> Child:
        return Child.spawn(
            name,
            argv,
            log_path=state / "postgres.log",
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            cwd=instance.home,
            run_as=instance.run_as,
            append=True,
            stop_signal=stop_signal,
        )

    initdb = spawn("initdb", instance.initdb_argv(fast=True))
    if initdb.wait(START_SECONDS) != 0:
        instance.discard()
        raise RuntimeError(f"initdb failed:\n{initdb.log_tail()}")
    port = _free_port()
    server = spawn("postgres", instance.server_argv(port, fast=True), signal.SIGINT)
    try:
        yield ScratchServer(instance, port, server)
    finally:
        stop_together([server], timeout=10)
        instance.discard()


def _rss() -> int:
    """This process's resident set size in bytes (Linux: /proc/self/statm, in pages)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class BackendCpu:
    """CPU time of one PostgreSQL backend process (same machine), from /proc."""

    def __init__(self, pid: int) -> None:
        self._stat = Path(f"/proc/{pid}/stat")
        self._start = 0.0

    def _cpu(self) -> float:
        fields = self._stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._start = self._cpu()

    def used(self) -> float:
        return self._cpu() - self._start


class StatementTimes:
    """Where the ingest's time goes: each statement's elapsed time (asyncpg's query logger);
    what no statement accounts for is the COPY of the file and the Python around it."""

    def __init__(self) -> None:
        self.times: list[tuple[float, str]] = []

    def record(self, query: Any) -> None:
        self.times.append((query.elapsed, " ".join(query.query.split())))

    def print(self, console: Console, total: float) -> None:
        console.print("where the time goes (statements over 0.1 s; the rest is the COPY):")
        for elapsed, text in sorted(self.times, reverse=True):
            if elapsed >= 0.1:
                console.print(f"  {elapsed:6.2f} s  {text[:90]}")
        console.print(
            f"  {total - sum(t for t, _ in self.times):6.2f} s  COPY of the file and Python"
        )


class MemorySampler:
    """The process's resident set size, sampled every 50 ms while running."""

    def __init__(self) -> None:
        self.baseline = _rss()
        self.peak = self.baseline
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss())
            await asyncio.sleep(0.05)

    def __enter__(self) -> MemorySampler:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        self.peak = max(self.peak, _rss())
        if self._task is not None:
            self._task.cancel()


async def bench(args: argparse.Namespace, console: Console) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-recon-") as tmp,
        scratch_postgres(Path(tmp) / "pg") as server,
    ):
        settings = await server.database("bench_recon", "reconciliation")
        pool = await create_pool(bulk_settings(settings), "reconciliation", "bench-recon")
        try:
            started = time.perf_counter()
            async with pool.acquire() as conn:
                for start in range(0, args.payments, LOAD_BATCH):
                    stop = min(start + LOAD_BATCH, args.payments)
                    await conn.copy_records_to_table(
                        "book_payments", records=book_rows(start, stop), columns=_BOOK_COLUMNS
                    )
                await conn.execute("ANALYZE book_payments")
            console.print(
                f"loaded {args.payments:,} payments into the books in "
                f"{time.perf_counter() - started:.1f} s (COPY)"
            )
            path = Path(tmp) / "settlement.csv"
            started = time.perf_counter()
            with path.open("w", encoding="utf-8") as out:
                write_file(out, args.lines, args.payments, args.discrepancy_every)
            size = path.stat().st_size
            console.print(
                f"wrote a {args.lines:,}-line file ({size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s"
            )
            origin = FileOrigin(PROVIDER, DAY, "COMMAND_LINE", "bench")
            columns = (
                TextColumn("ingest + match"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            statements = StatementTimes()
            async with pool.acquire() as conn:
                # The ingest runs on this connection: nothing else uses the pool meanwhile.
                conn.add_query_logger(statements.record)
                backend = BackendCpu(await conn.fetchval("SELECT pg_backend_pid()"))
            with (
                path.open("rb") as stream,
                MemorySampler() as memory,
                Progress(*columns, console=console) as progress,
            ):
                task = progress.add_task("lines", total=args.lines)
                backend.start()
                own_cpu = time.process_time()
                started = time.perf_counter()
                result = await ingest_file(
                    pool,
                    stream,
                    origin,
                    sla_days=3,
                    progress=lambda n: progress.advance(task, n),
                )
                seconds = time.perf_counter() - started
                own_cpu = time.process_time() - own_cpu
                server_cpu = backend.used()
            outcomes = await pool.fetchval(
                "SELECT outcomes FROM reconciliation_runs WHERE run_id = $1", result.run_id
            )
        finally:
            await pool.close()
    rate = args.lines / seconds
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    console.print(f"ingest + match: {args.lines:,} lines in {seconds:.1f} s = {rate:,.0f} lines/s")
    for name, entry in sorted(outcomes.items()):
        console.print(f"  {name:<20} {entry['count']:>10,}")
    console.print(
        f"memory (RSS): {memory.baseline / 2**20:.0f} MiB before the ingest, "
        f"{memory.peak / 2**20:.0f} MiB peak during it "
        f"(+{(memory.peak - memory.baseline) / 2**20:.0f} MiB); "
        f"process lifetime peak {lifetime_peak / 2**20:.0f} MiB"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(
        f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the end: "
        "other work on the machine slows both this process and PostgreSQL"
    )
    console.print(
        f"CPU: PostgreSQL {server_cpu:.1f} s, this process {own_cpu:.1f} s "
        f"({args.lines / (server_cpu + own_cpu):,.0f} lines per CPU second: what a busy "
        "machine's wall clock hides)"
    )
    statements.print(console, seconds)
    verdict = "meets" if rate >= TARGET_LINES_PER_SECOND else "MISSES"
    console.print(f"{verdict} the target of {TARGET_LINES_PER_SECOND:,} lines/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recon", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--discrepancy-every", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.lines < 1 or args.payments < 1:
        parser.error("--lines and --payments must be positive")
    asyncio.run(bench(args, Console()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
