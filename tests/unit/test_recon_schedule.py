"""The daily run's timing and its one-replica claim; the command-line tool on a real file."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings, get_settings
from gateway_core.db import create_pool
from reconciliation.app import cli
from reconciliation.schedule import DailyRun, day_reconciled_at, next_firing
from reconciliation.service import Reconciler
from reconciliation.settings import Settings as ReconciliationSettings
from reconciliation.settlement_file import HEADER
from reconciliation.sources import Provider, ReportSource


def test_the_schedule_is_read_in_ist() -> None:
    # 00:29 UTC is 05:59 IST: the 06:00 IST firing is a minute away, at 00:30 UTC.
    after = datetime(2026, 12, 6, 0, 29, tzinfo=UTC)
    firing = next_firing("0 6 * * *", after)
    assert firing == datetime(2026, 12, 6, 0, 30, tzinfo=UTC)
    assert day_reconciled_at(firing) == date(2026, 12, 5)
    assert next_firing("0 6 * * *", firing) == datetime(2026, 12, 7, 0, 30, tzinfo=UTC)


def test_a_schedule_that_is_not_cron_is_refused() -> None:
    with pytest.raises(ValueError, match="5-field cron expression"):
        ReconciliationSettings(recon_schedule="every morning")
    with pytest.raises(ValueError, match="5-field cron expression"):
        ReconciliationSettings(recon_schedule="0 6 * * * *")


class NoProviders(ReportSource):
    """A report API that lists no providers, counting how often it was asked."""

    def __init__(self) -> None:
        super().__init__("http://unused.invalid", {})
        self.asked = 0

    async def providers(self) -> list[Provider]:
        self.asked += 1
        return []


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("recon_schedule", "reconciliation")


async def test_each_firing_runs_on_exactly_one_replica(database: Settings) -> None:
    pool = await create_pool(database, "reconciliation", "schedule-tests")
    try:
        sources = [NoProviders(), NoProviders()]
        replicas = [
            DailyRun(pool, Reconciler(pool, source, sla_days=3), source, "0 6 * * *")
            for source in sources
        ]
        firing = datetime(2026, 12, 6, 0, 30, tzinfo=UTC)
        assert [await replica.fire(firing) for replica in replicas] == [True, False]
        assert [source.asked for source in sources] == [1, 0]
        assert await replicas[1].fire(datetime(2026, 12, 7, 0, 30, tzinfo=UTC)) is True
    finally:
        await pool.close()


async def command_line_run(database: Settings) -> asyncpg.Record:
    conn = await asyncpg.connect(database.dsn, server_settings={"search_path": "reconciliation"})
    try:
        run: asyncpg.Record = await conn.fetchrow(
            "SELECT * FROM reconciliation_runs WHERE source = 'COMMAND_LINE'"
        )
        return run
    finally:
        await conn.close()


def test_a_day_is_reconciled_by_hand_from_a_file(
    database: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        "DB_HOST": database.db_host,
        "DB_PORT": str(database.db_port),
        "DB_USERNAME": database.db_username,
        "DB_PASSWORD": database.db_password,
        "DB_DATABASE": database.db_database,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    file = tmp_path / "upi.csv"
    file.write_text(
        ",".join(HEADER)
        + "\nRRN9,pay_unknown,payment,10.00,0.00,0.00,INR,2026-12-05T23:59:59+05:30,s1,U1,UPI\n"
    )

    assert cli(["run", "--provider", "upi_core", "--date", "2026-12-05", "--file", str(file)]) == 0

    printed = capsys.readouterr().out
    assert "upi_core 2026-12-05, 1 lines" in printed
    assert "MISSING_INTERNALLY" in printed
    run = asyncio.run(command_line_run(database))
    assert (run["provider"], run["line_count"], run["started_by"]) == (
        "upi_core",
        1,
        "command-line",
    )
    assert cli(["run", "--provider", "UPI", "--date", "2026-12-05", "--file", str(file)]) == 1
    assert "is a method" in capsys.readouterr().err
