"""The reconciliation service's parts, put together: the gRPC service with its background work,
and the command-line tool that reconciles a day by hand."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway_core.config import ConfigError, load_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.errors import GatewayError
from gateway_core.kafka import EventConsumer, check_kafka
from gateway_core.server import ServiceApp
from gateway_core.service_auth import ServiceIdentity, service_channel
from paygate.ledger.v1 import settlement_pb2_grpc
from paygate.reconciliation.v1 import merchant_reporting_pb2_grpc, reconciliation_pb2_grpc
from reconciliation import repository
from reconciliation.events import EventIngestor
from reconciliation.ingest import FileOrigin, IngestResult, bulk_settings
from reconciliation.ledger import LedgerPoster
from reconciliation.reporting import MerchantReportingServicer, Reporting
from reconciliation.schedule import DailyRun
from reconciliation.service import Reconciler, check_provider_name, parse_day
from reconciliation.servicer import ReconciliationServicer
from reconciliation.settings import Settings, get_settings
from reconciliation.sources import ReportSource

SCHEMA = "reconciliation"
SERVICE_NAME = "paygate.reconciliation.v1.ReconciliationService"
MERCHANT_REPORTING_SERVICE_NAME = "paygate.reconciliation.v1.MerchantReportingService"
# The identity reconciliation calls the orchestrator's settlement ledger with, and its audience.
IDENTITY = "reconciliation"
LEDGER_AUDIENCE = "orchestrator"


def consumer_group(settings: Settings) -> str:
    """Reconciliation's own consumer group: every service that consumes payments.events reads
    all of it, so each needs a group of its own (KAFKA_GROUP_ID is the common prefix)."""
    return f"{settings.kafka_group_id}.reconciliation"


async def build_app(settings: Settings) -> ServiceApp:
    """The reconciliation service, ready to run, with its background work."""
    app = ServiceApp("reconciliation", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))
    bulk_pool = await create_pool(bulk_settings(settings), SCHEMA, "paygate-reconciliation-ingest")
    app.on_shutdown(bulk_pool.close)
    app.add_dependency_check("kafka", lambda: check_kafka(settings.kafka_bootstrap_servers))

    identity = ServiceIdentity(
        IDENTITY, settings.secret("reconciliation_service_key"), audience=LEDGER_AUDIENCE
    )
    channel = service_channel(settings.orchestrator_addr, identity)
    app.on_shutdown(lambda: channel.close(None))
    poster = LedgerPoster(pool, settlement_pb2_grpc.SettlementLedgerServiceStub(channel))

    source = ReportSource(settings.settlement_reports_url, settings.report_keys())

    async def post_now() -> int:
        poster.wake()
        return 0

    reconciler = Reconciler(
        bulk_pool, source, sla_days=settings.recon_settlement_sla_days, post_pending=post_now
    )
    reporting = Reporting(pool)
    app.add_service(
        SERVICE_NAME,
        reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server,
        ReconciliationServicer(pool, reconciler, reporting),
    )
    app.add_service(
        MERCHANT_REPORTING_SERVICE_NAME,
        merchant_reporting_pb2_grpc.add_MerchantReportingServiceServicer_to_server,
        MerchantReportingServicer(reporting),
    )
    consumer = EventConsumer(
        settings.kafka_bootstrap_servers,
        [settings.kafka_topic_payments],
        consumer_group(settings),
        EventIngestor(pool),
        client_id="reconciliation",
    )
    app.add_background_task("events", consumer.run)
    app.add_background_task("ledger-posting", poster.run)
    app.add_background_task(
        "daily-run", DailyRun(pool, reconciler, source, settings.recon_schedule).run
    )
    return app


async def main() -> None:
    app = await build_app(get_settings())
    await app.run()


# -- the command-line tool -----------------------------------------------------------------


def _count_lines(stream: IO[bytes]) -> int:
    lines = 0
    while block := stream.read(1 << 20):
        lines += block.count(b"\n")
    stream.seek(0)
    return max(0, lines - 1)


async def _reconcile(
    reconciler: Reconciler, stream: IO[bytes], origin: FileOrigin, console: Console
) -> IngestResult:
    total = _count_lines(stream)
    columns = (
        TextColumn(f"{origin.provider} {origin.settlement_date}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("lines", total=total)
        return await reconciler.ingest(
            stream, origin, progress=lambda n: progress.update(task, completed=n)
        )


async def _command(settings: Settings, args: argparse.Namespace, console: Console) -> None:
    day = parse_day(args.date, "--date")
    pool = await create_pool(bulk_settings(settings), SCHEMA, "paygate-reconciliation-cli")
    try:
        source = ReportSource(settings.settlement_reports_url, _report_keys(settings, args))
        reconciler = Reconciler(pool, source, sla_days=settings.recon_settlement_sla_days)
        results: list[tuple[IngestResult, float]] = []
        if args.file:
            origin = FileOrigin(
                check_provider_name(args.provider, "--provider"),
                day,
                "COMMAND_LINE",
                "command-line",
            )
            with Path(args.file).open("rb") as stream:  # noqa: ASYNC230 - read in chunks, once
                started = time.perf_counter()
                result = await _reconcile(reconciler, stream, origin, console)
                results.append((result, time.perf_counter() - started))
        else:
            for provider in await source.resolve(args.provider):
                with await source.fetch(provider.name, day) as stream:
                    origin = FileOrigin(provider.name, day, "COMMAND_LINE", "command-line")
                    started = time.perf_counter()
                    result = await _reconcile(reconciler, stream, origin, console)
                    results.append((result, time.perf_counter() - started))
        async with pool.acquire() as conn:
            for result, seconds in results:
                _print_run(console, await repository.get_run(conn, result.run_id), result, seconds)
    finally:
        await pool.close()


def _report_keys(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    return {} if args.file else settings.report_keys()


def _print_run(console: Console, run: asyncpg.Record, result: IngestResult, seconds: float) -> None:
    if result.already_ingested:
        console.print(f"[yellow]already ingested[/]: this file's run is {run['run_id']}")
    rate = run["line_count"] / seconds if seconds > 0 and not result.already_ingested else 0
    console.print(
        f"run {run['run_id']}: {run['provider']} {run['settlement_date']}, "
        f"{run['line_count']} lines, settlement {run['settlement_id'] or '-'} "
        f"UTR {run['utr'] or '-'}, net {run['net_paisa']} paisa, "
        f"{run['exception_count']} exception(s)" + (f", {rate:,.0f} lines/s" if rate else "")
    )
    for outcome, entry in sorted(run["outcomes"].items()):
        console.print(f"  {outcome:<20} {entry['count']:>10}  {entry['amount_paisa']:>16} paisa")


def cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m reconciliation")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="reconcile one provider's settlement file for a day")
    run.add_argument("--provider", required=True, help="a provider (upi_core) or a method (UPI)")
    run.add_argument("--date", required=True, help="settlement day, YYYY-MM-DD (IST)")
    run.add_argument("--file", help="a local CSV instead of fetching it from the provider")
    args = parser.parse_args(list(argv))
    console = Console(stderr=False)
    try:
        # A tool for the local stack unless APP_ENV says otherwise, like `make db-migrate`.
        settings = load_settings(Settings, local_unless_set=True)
        asyncio.run(_command(settings, args, console))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 78
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
