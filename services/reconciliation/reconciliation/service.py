"""Runs: fetch a provider's file (or take an uploaded one), ingest and match it, post it.

The servicer, the scheduled job and the command-line tool all start runs here.
"""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import IO

import asyncpg

from gateway_core.errors import FieldViolation, InvalidArgument, invalid_field
from gateway_core.logging import get_logger
from reconciliation.ingest import FileOrigin, IngestResult, Progress, ingest_file
from reconciliation.settlement_file import METHODS, MalformedFile
from reconciliation.sources import ReportSource

log = get_logger(__name__)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PROVIDER = re.compile(r"[a-z][a-z0-9_]{0,39}")

# After a run: post its matched lines to the ledger now (the background poster retries).
PostPending = Callable[[], Awaitable[int]]


def parse_day(text: str, field: str = "date") -> date:
    if not _DATE.fullmatch(text):
        raise invalid_field(field, "must be a date written YYYY-MM-DD", reason="INVALID_DATE")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise invalid_field(
            field, f"{text} is not a calendar date", reason="INVALID_DATE"
        ) from None


def check_provider_name(name: str, field: str = "provider") -> str:
    """A provider's own name (upi_core, razorpay), as a file belongs to one provider."""
    if name in METHODS:
        raise invalid_field(
            field,
            f"{name} is a method: a file belongs to one provider (e.g. upi_core, razorpay)",
            reason="PROVIDER_IS_A_METHOD",
        )
    if not _PROVIDER.fullmatch(name):
        raise invalid_field(
            field,
            "must be a provider name: lower-case letters, digits and _ (e.g. upi_core)",
            reason="INVALID_PROVIDER",
        )
    return name


def malformed(exc: MalformedFile) -> InvalidArgument:
    """The API's error for a malformed file: 400, the line number and the reason."""
    return InvalidArgument(
        f"settlement file refused, nothing stored: line {exc.line_number}: {exc.reason}",
        reason="MALFORMED_SETTLEMENT_FILE",
        field_violations=[FieldViolation("file", f"line {exc.line_number}: {exc.reason}")],
        metadata={"line_number": str(exc.line_number)},
    )


class Reconciler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        source: ReportSource,
        *,
        sla_days: int,
        post_pending: PostPending | None = None,
    ) -> None:
        self._pool = pool
        self._source = source
        self._sla_days = sla_days
        self._post_pending = post_pending

    async def run(
        self, provider: str, day: date, *, source: str, started_by: str
    ) -> list[IngestResult]:
        """Fetch and reconcile `provider`'s file (every provider's, for a method name)."""
        results = []
        for found in await self._source.resolve(provider):
            stream = await self._source.fetch(found.name, day)
            with stream:
                origin = FileOrigin(found.name, day, source, started_by)
                results.append(await self.ingest(stream, origin))
        await self._post_now()
        return results

    async def upload(
        self, provider: str, day: date, content: bytes, *, source: str, started_by: str
    ) -> IngestResult:
        origin = FileOrigin(check_provider_name(provider), day, source, started_by)
        result = await self.ingest(io.BytesIO(content), origin)
        await self._post_now()
        return result

    async def ingest(
        self, stream: IO[bytes], origin: FileOrigin, progress: Progress | None = None
    ) -> IngestResult:
        try:
            result = await ingest_file(
                self._pool, stream, origin, sla_days=self._sla_days, progress=progress
            )
        except MalformedFile as exc:
            raise malformed(exc) from None
        log.info(
            "settlement file reconciled",
            provider=origin.provider,
            settlement_date=origin.settlement_date.isoformat(),
            run_id=result.run_id,
            already_ingested=result.already_ingested,
        )
        return result

    async def _post_now(self) -> None:
        if self._post_pending is None:
            return
        try:
            await self._post_pending()
        except Exception:  # the background poster tries again; the run itself stands
            log.warning("posting settled lines to the ledger failed; will retry", exc_info=True)
