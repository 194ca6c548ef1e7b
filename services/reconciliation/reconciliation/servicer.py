"""paygate.reconciliation.v1.ReconciliationService (DESIGN.md §8): settlement runs,
exceptions and reports, analytics and the transactions report across merchants. Every method
is admin-only (Envoy's RBAC, and checked again here); a merchant's own analytics and report are
reporting.MerchantReportingServicer's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date

import asyncpg
from google.api import httpbody_pb2
from google.protobuf import json_format

from gateway_core.auth import RpcContext, require_admin
from gateway_core.errors import invalid_field
from paygate.reconciliation.v1 import reconciliation_pb2 as pb
from paygate.reconciliation.v1 import reconciliation_pb2_grpc
from reconciliation import report, repository
from reconciliation.ingest import IngestResult
from reconciliation.matching import Outcome
from reconciliation.reporting import Reporting, admin_report_merchant
from reconciliation.service import Reconciler, parse_day
from reconciliation.settlement_file import METHODS

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_NOTE_CHARS = 1000
CSV = "text/csv"


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    """Reconciles provider settlements with our books and reports on them."""

    def __init__(self, pool: asyncpg.Pool, reconciler: Reconciler, reporting: Reporting) -> None:
        self._pool = pool
        self._reconciler = reconciler
        self._reporting = reporting

    async def CreateReconciliationRun(
        self, request: pb.CreateReconciliationRunRequest, context: RpcContext
    ) -> pb.CreateReconciliationRunResponse:
        caller = require_admin(context)
        if not request.provider:
            raise invalid_field("provider", "is required: a provider or a method name")
        day = parse_day(request.date)
        results = await self._reconciler.run(
            request.provider, day, source="FETCHED", started_by=caller.merchant_id
        )
        return pb.CreateReconciliationRunResponse(runs=[await self._run(r) for r in results])

    async def UploadSettlementFile(
        self, request: pb.UploadSettlementFileRequest, context: RpcContext
    ) -> pb.ReconciliationRun:
        caller = require_admin(context)
        day = parse_day(request.date)
        result = await self._reconciler.upload(
            request.provider,
            day,
            request.file.data,
            source="UPLOADED",
            started_by=caller.merchant_id,
        )
        return await self._run(result)

    async def IngestSettlementFile(
        self, request: pb.IngestSettlementFileRequest, context: RpcContext
    ) -> pb.IngestSettlementFileResponse:
        caller = require_admin(context)
        day = parse_day(request.date)
        result = await self._reconciler.upload(
            request.provider, day, request.content, source="UPLOADED", started_by=caller.merchant_id
        )
        run = await self._run(result)
        outcomes = {entry.outcome: entry.count for entry in run.outcomes}
        return pb.IngestSettlementFileResponse(
            settlement_file_id=run.settlement_file_id,
            checksum_sha256=run.checksum_sha256,
            already_ingested=result.already_ingested,
            line_count=run.line_count,
            matched_count=outcomes.get(pb.MATCHED, 0),
            discrepancy_count=run.exception_count,
            run=run,
        )

    async def GetReconciliationRun(
        self, request: pb.GetReconciliationRunRequest, context: RpcContext
    ) -> pb.ReconciliationRun:
        require_admin(context)
        async with self._pool.acquire() as conn:
            return run_message(await repository.get_run(conn, request.run_id))

    async def ListReconciliationRuns(
        self, request: pb.ListReconciliationRunsRequest, context: RpcContext
    ) -> pb.ListReconciliationRunsResponse:
        require_admin(context)
        limit = _page_size(request.page_size)
        day = parse_day(request.date) if request.date else None
        async with self._pool.acquire() as conn:
            providers = await _providers_filter(conn, request.provider)
            rows = await repository.list_runs(
                conn, providers=providers, day=day, after=request.page_token or None, limit=limit
            )
        return pb.ListReconciliationRunsResponse(
            runs=[run_message(row) for row in rows],
            next_page_token=rows[-1]["run_id"] if len(rows) == limit else "",
        )

    async def ListReconciliationExceptions(
        self, request: pb.ListReconciliationExceptionsRequest, context: RpcContext
    ) -> pb.ListReconciliationExceptionsResponse:
        require_admin(context)
        limit = _page_size(request.page_size)
        day = parse_day(request.date) if request.date else None
        outcome = pb.Outcome.Name(request.type) if request.type else None
        status = pb.ReconciliationException.Status.Name(request.status) if request.status else None
        async with self._pool.acquire() as conn:
            providers = await _providers_filter(conn, request.provider)
            rows = await repository.list_exceptions(
                conn,
                outcome=outcome,
                providers=providers,
                day=day,
                status=status,
                after=request.page_token or None,
                limit=limit,
            )
        return pb.ListReconciliationExceptionsResponse(
            exceptions=[exception_message(row) for row in rows],
            next_page_token=rows[-1]["exception_id"] if len(rows) == limit else "",
        )

    async def ResolveReconciliationException(
        self, request: pb.ResolveReconciliationExceptionRequest, context: RpcContext
    ) -> pb.ReconciliationException:
        caller = require_admin(context)
        note = request.note.strip()
        if not note or len(note) > MAX_NOTE_CHARS:
            raise invalid_field(
                "note", f"is required: 1 to {MAX_NOTE_CHARS} characters saying what was done"
            )
        async with self._pool.acquire() as conn:
            row = await repository.resolve_exception(
                conn, request.exception_id, note, caller.merchant_id
            )
        return exception_message(row)

    async def GetSettlementReport(
        self, request: pb.GetSettlementReportRequest, context: RpcContext
    ) -> pb.SettlementReport:
        require_admin(context)
        day = parse_day(request.date)
        async with self._pool.acquire() as conn:
            providers = await _report_providers(conn, request.provider, day)
            found = await report.build(conn, day, providers)
        found.provider = request.provider
        return found

    async def ExportSettlementReport(
        self, request: pb.ExportSettlementReportRequest, context: RpcContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        require_admin(context)
        day = parse_day(request.date)
        wants_csv = any(
            key.lower() == "accept" and isinstance(value, str) and CSV in value.lower()
            for key, value in context.invocation_metadata() or ()
        )
        async with self._pool.acquire() as conn:
            providers = await _report_providers(conn, request.provider, day)
            if not wants_csv:
                found = await report.build(conn, day, providers)
                found.provider = request.provider
                text = json_format.MessageToJson(
                    found,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                    indent=None,
                )
                yield httpbody_pb2.HttpBody(content_type="application/json", data=text.encode())
                return
            content_type = "text/csv; charset=utf-8"
            async with conn.transaction(readonly=True):
                async for chunk in report.csv_chunks(conn, day, providers):
                    yield httpbody_pb2.HttpBody(content_type=content_type, data=chunk)

    async def GetPaymentAnalytics(
        self, request: pb.GetPaymentAnalyticsRequest, context: RpcContext
    ) -> pb.PaymentAnalytics:
        require_admin(context)
        return await self._reporting.analytics(request, merchant_id=None)

    async def ExportTransactionsReport(
        self, request: pb.ExportTransactionsReportRequest, context: RpcContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        require_admin(context)
        merchant_id = admin_report_merchant(request)
        async for chunk in self._reporting.transactions(request, merchant_id=merchant_id):
            yield chunk

    async def _run(self, result: IngestResult) -> pb.ReconciliationRun:
        async with self._pool.acquire() as conn:
            run = run_message(await repository.get_run(conn, result.run_id))
        run.already_ingested = result.already_ingested
        return run


def run_message(row: asyncpg.Record) -> pb.ReconciliationRun:
    outcomes = {
        Outcome(name): (int(v["count"]), int(v["amount_paisa"]))
        for name, v in row["outcomes"].items()
    }
    run = pb.ReconciliationRun(
        run_id=row["run_id"],
        provider=row["provider"],
        date=row["settlement_date"].isoformat(),
        source=row["source"],
        settlement_file_id=row["settlement_file_id"],
        checksum_sha256=row["checksum_sha256"],
        settlement_id=row["settlement_id"],
        utr=row["utr"],
        line_count=row["line_count"],
        payments_paisa=row["payments_paisa"],
        refunds_paisa=row["refunds_paisa"],
        chargebacks_paisa=row["chargebacks_paisa"],
        adjustments_paisa=row["adjustments_paisa"],
        fees_paisa=row["fees_paisa"],
        tax_paisa=row["tax_paisa"],
        net_paisa=row["net_paisa"],
        outcomes=report.outcome_counts({o: v for o, v in outcomes.items()}),
        exception_count=row["exception_count"],
        posted_count=row["posted"],
        started_by=row["started_by"],
    )
    run.created_at.FromDatetime(row["created_at"])
    return run


def exception_message(row: asyncpg.Record) -> pb.ReconciliationException:
    found = pb.ReconciliationException(
        exception_id=row["exception_id"],
        type=row["type"],
        provider=row["provider"],
        date=row["settlement_date"].isoformat(),
        run_id=row["run_id"],
        payment_id=row["payment_id"] or "",
        refund_id=row["refund_id"] or "",
        provider_reference=row["provider_reference"],
        line_number=row["line_number"] or 0,
        expected=row["expected"],
        actual=row["actual"],
        amount_paisa=row["amount_paisa"],
        status=row["status"],
        resolution_note=row["resolution_note"] or "",
        resolved_by=row["resolved_by"] or "",
    )
    if row["resolved_at"] is not None:
        found.resolved_at.FromDatetime(row["resolved_at"])
    found.created_at.FromDatetime(row["created_at"])
    return found


def _page_size(requested: int) -> int:
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


async def _providers_filter(conn: asyncpg.Connection, provider: str) -> Sequence[str] | None:
    """None (no filter), the providers of a method name, or the one provider named."""
    if not provider:
        return None
    if provider in METHODS:
        return await repository.providers_of_method(conn, provider)
    return [provider]


async def _report_providers(conn: asyncpg.Connection, provider: str, day: date) -> list[str]:
    chosen = await _providers_filter(conn, provider)
    return list(chosen) if chosen is not None else await repository.providers_of_day(conn, day)
