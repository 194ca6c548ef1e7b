"""Analytics and the transactions report, for admins (every merchant: ReconciliationService
under /api/v1/admin) and for a merchant over its own payments (MerchantReportingService, whose
merchant is always the caller's, as Envoy passed it from the verified token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
from google.api import httpbody_pb2

from gateway_core.auth import RpcContext, caller_from_context
from gateway_core.errors import invalid_field
from paygate.reconciliation.v1 import merchant_reporting_pb2 as merchant_pb
from paygate.reconciliation.v1 import merchant_reporting_pb2_grpc
from paygate.reconciliation.v1 import reconciliation_pb2 as pb
from reconciliation import analytics, transactions_report

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
MAX_MERCHANT_ID_CHARS = 100


class Reporting:
    """The queries both services answer, scoped by the caller's side."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def analytics(
        self, request: pb.GetPaymentAnalyticsRequest, *, merchant_id: str | None
    ) -> pb.PaymentAnalytics:
        """`merchant_id` None: an admin's query (any merchant, the merchant dimension);
        otherwise that merchant's payments only."""
        query = analytics.parse_query(request, admin=merchant_id is None)
        if merchant_id is not None:
            query = replace(
                query, filters={**query.filters, analytics.MERCHANT_DIMENSION: (merchant_id,)}
            )
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            answer = await analytics.compute(conn, query)
        answer.from_date = request.from_date
        answer.to_date = request.to_date
        return answer

    async def transactions(
        self, request: pb.ExportTransactionsReportRequest, *, merchant_id: str | None
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        time_range = analytics.parse_range(request.from_date, request.to_date)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            async for chunk in transactions_report.csv_chunks(conn, time_range, merchant_id):
                yield httpbody_pb2.HttpBody(content_type=CSV_CONTENT_TYPE, data=chunk)


def admin_report_merchant(request: pb.ExportTransactionsReportRequest) -> str | None:
    """The merchant an admin's report is limited to, if any."""
    merchant_id = request.merchant_id.strip()
    if len(merchant_id) > MAX_MERCHANT_ID_CHARS:
        raise invalid_field("merchant_id", f"at most {MAX_MERCHANT_ID_CHARS} characters")
    return merchant_id or None


class MerchantReportingServicer(merchant_reporting_pb2_grpc.MerchantReportingServiceServicer):
    """A merchant's own analytics and transactions report. Its requests are the admin's without
    merchant_id, field for field: read as the admin's, then scoped to the caller."""

    def __init__(self, reporting: Reporting) -> None:
        self._reporting = reporting

    async def GetMerchantPaymentAnalytics(
        self, request: merchant_pb.GetMerchantPaymentAnalyticsRequest, context: RpcContext
    ) -> pb.PaymentAnalytics:
        caller = caller_from_context(context)
        query = pb.GetPaymentAnalyticsRequest.FromString(request.SerializeToString())
        return await self._reporting.analytics(query, merchant_id=caller.merchant_id)

    async def ExportMerchantTransactionsReport(
        self, request: merchant_pb.ExportMerchantTransactionsReportRequest, context: RpcContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        caller = caller_from_context(context)
        query = pb.ExportTransactionsReportRequest.FromString(request.SerializeToString())
        async for chunk in self._reporting.transactions(query, merchant_id=caller.merchant_id):
            yield chunk
