"""The dashboard's charts: the analytics API's answer (reconciliation's MerchantReportingService)
as the series the page plots, volume and success rate over time by method."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from paygate.reconciliation.v1 import merchant_reporting_pb2, reconciliation_pb2

# range name -> (how far back, bucket)
RANGES: dict[str, tuple[timedelta, str]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
}
DEFAULT_RANGE = "24h"


def analytics_request(
    range_name: str, now: datetime | None = None
) -> merchant_reporting_pb2.GetMerchantPaymentAnalyticsRequest:
    back, granularity = RANGES.get(range_name, RANGES[DEFAULT_RANGE])
    end = (now or datetime.now(UTC)).replace(microsecond=0)
    # The end of the current bucket, so the newest payments are in the last one.
    end = end.replace(minute=0, second=0) + timedelta(hours=1)
    return merchant_reporting_pb2.GetMerchantPaymentAnalyticsRequest(
        from_date=_rfc3339(end - back),
        to_date=_rfc3339(end),
        granularity=granularity,
        group_by=["payment_method"],
    )


def chart_series(analytics: reconciliation_pb2.PaymentAnalytics) -> dict[str, Any]:
    """{"times": [unix seconds], "methods": [...], "volume_paisa": {method: [...]},
    "success_rate": {method: [rate or None]}, "totals": {method: {...}}}: what uPlot plots.
    A bucket where nothing reached a provider has no success rate (a gap, not a zero)."""
    methods = sorted({g.dimensions.payment_method for g in analytics.groups})
    times: list[int] = []
    volume: dict[str, list[int]] = {m: [] for m in methods}
    rate: dict[str, list[float | None]] = {m: [] for m in methods}
    for bucket in analytics.time_series:
        times.append(int(datetime.fromisoformat(bucket.start_time).timestamp()))
        by_method = {g.dimensions.payment_method: g.metrics for g in bucket.groups}
        for method in methods:
            metrics = by_method.get(method)
            volume[method].append(metrics.processed_amount_paisa if metrics else 0)
            reached = metrics.reached_provider_count if metrics else 0
            rate[method].append(round(metrics.success_rate, 4) if metrics and reached else None)
    totals = {
        g.dimensions.payment_method: {
            "payment_count": g.metrics.payment_count,
            "success_count": g.metrics.success_count,
            "success_rate": round(g.metrics.success_rate, 4),
            "processed_amount_paisa": g.metrics.processed_amount_paisa,
        }
        for g in analytics.groups
    }
    return {
        "granularity": analytics.granularity,
        "times": times,
        "methods": methods,
        "volume_paisa": volume,
        "success_rate": rate,
        "totals": totals,
    }


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
