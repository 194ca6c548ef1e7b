"""The daily run: every provider's file for the previous IST day, at RECON_SCHEDULE.

Safe with several replicas: each firing of the schedule is one row in `schedule_claims`, and
only the replica whose INSERT creates it runs that firing; the others see the row and skip.
A replica that was down at the firing time does not run it late (the next firing comes).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
from croniter import croniter

from gateway_core.logging import get_logger
from reconciliation.matching import IST
from reconciliation.service import Reconciler
from reconciliation.sources import ReportSource

log = get_logger(__name__)


def next_firing(expression: str, after: datetime) -> datetime:
    """The first time after `after` that the cron expression (read in IST) names, in UTC."""
    local = after.astimezone(IST)
    nxt: datetime = croniter(expression, local).get_next(datetime)
    return nxt.astimezone(UTC)


def day_reconciled_at(firing: datetime) -> date:
    """A firing reconciles the IST day before the one it fires on."""
    return firing.astimezone(IST).date() - timedelta(days=1)


class DailyRun:
    def __init__(
        self,
        pool: asyncpg.Pool,
        reconciler: Reconciler,
        source: ReportSource,
        expression: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._reconciler = reconciler
        self._source = source
        self._expression = expression
        self._clock = clock
        self._me = f"{socket.gethostname()}:{id(self):x}"

    async def run(self) -> None:
        while True:
            firing = next_firing(self._expression, self._clock())
            await asyncio.sleep(max(0.0, (firing - self._clock()).total_seconds()))
            await self.fire(firing)

    async def fire(self, firing: datetime) -> bool:
        """Run the firing if this replica claims it; False when another replica has."""
        claimed = await self._pool.fetchval(
            "INSERT INTO schedule_claims (slot_at, claimed_by) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING true",
            firing,
            self._me,
        )
        if not claimed:
            return False
        day = day_reconciled_at(firing)
        for provider in await self._source.providers():
            try:
                await self._reconciler.run(
                    provider.name, day, source="SCHEDULED", started_by="schedule"
                )
            except Exception:  # one provider's failure must not stop the others
                log.exception(
                    "scheduled reconciliation failed", provider=provider.name, day=day.isoformat()
                )
        return True
