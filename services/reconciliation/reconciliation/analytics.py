"""Payment analytics over the fact tables (analytics_facts): the query's parameters, checked,
and its answer, computed by PostgreSQL in one pass per fact table.

Definitions (README "Analytics"):
- a payment counts at its creation, a refund at its creation, a dispute at its opening, in the
  range (and time bucket) holding that moment; their outcomes count there as soon as known;
- success: the money was captured (SUCCESS, PARTIALLY_REFUNDED, REFUNDED);
- reached a provider: left CREATED and was not blocked by the fraud check;
- success_rate = successful / reached a provider; conversion_rate = successful / created;
- time to success: creation to the first move to SUCCESS, whole milliseconds (rounded down);
  percentiles by nearest rank (PostgreSQL's percentile_disc).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from gateway_core.errors import FieldViolation, InvalidArgument, invalid_field
from paygate.payments.v1 import payments_pb2
from paygate.reconciliation.v1 import reconciliation_pb2 as pb
from reconciliation.analytics_facts import SUCCESSFUL
from reconciliation.matching import IST

TIME_ZONE = "Asia/Kolkata"
# The dimensions payments can be grouped and filtered by: each is a request field and a column
# of analytics_payments.
DIMENSIONS = (
    "payment_method",
    "provider",
    "status",
    "currency",
    "card_brand",
    "failure_reason",
    "merchant_id",
)
# Admins only: a merchant's analytics are its own.
MERCHANT_DIMENSION = "merchant_id"
GRANULARITIES = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
# A time series longer than this is refused (a week of minutes, a year of hours).
MAX_BUCKETS = 10_080
MAX_FILTER_VALUES = 50
MAX_FILTER_CHARS = 100
# Groups in one answer at most (the range's and every bucket's together).
MAX_GROUPS = 20_000

# The years a range may span: any payment's, and far from the calendar's ends.
EARLIEST_YEAR = 1970
LATEST_YEAR = 2200

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_METHODS = frozenset(
    name
    for name in payments_pb2.PaymentMethod.keys()  # noqa: SIM118 - an enum wrapper
    if not name.endswith("UNSPECIFIED")
)
_STATUSES = frozenset(
    name
    for name in payments_pb2.Payment.Status.keys()  # noqa: SIM118 - an enum wrapper
    if not name.endswith("UNSPECIFIED")
)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Query:
    """A checked analytics request."""

    range: TimeRange
    granularity: str = ""
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def parse_moment(text: str, field_name: str, *, end: bool) -> datetime:
    """A date (the start of that IST day; for an end, the start of the next) or an RFC 3339
    time with its offset."""
    text = text.strip()
    if not text:
        raise invalid_field(
            field_name, "is required: a date YYYY-MM-DD or an RFC 3339 time", reason="INVALID_TIME"
        )
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid_field(
                field_name, f"{text} is not a calendar date", reason="INVALID_TIME"
            ) from None
        _check_year(day.year, field_name)
        midnight = datetime(day.year, day.month, day.day, tzinfo=IST)
        return midnight + timedelta(days=1) if end else midnight
    try:
        moment = datetime.fromisoformat(text) if "T" in text.upper() else None
    except ValueError:
        moment = None
    if moment is None:
        raise invalid_field(
            field_name,
            "must be a date YYYY-MM-DD or an RFC 3339 time such as 2026-12-05T10:00:00+05:30",
            reason="INVALID_TIME",
        )
    if moment.tzinfo is None:
        raise invalid_field(
            field_name,
            "must carry its UTC offset (Z or +05:30): a time without one is ambiguous",
            reason="INVALID_TIME",
        )
    _check_year(moment.year, field_name)
    return moment


def _check_year(year: int, field_name: str) -> None:
    if not EARLIEST_YEAR <= year < LATEST_YEAR:
        raise invalid_field(
            field_name,
            f"must be in the years {EARLIEST_YEAR} to {LATEST_YEAR - 1}",
            reason="INVALID_TIME",
        )


def parse_range(from_text: str, to_text: str) -> TimeRange:
    start = parse_moment(from_text, "from", end=False)
    end = parse_moment(to_text, "to", end=True)
    if end <= start:
        raise invalid_field("to", "must be after from", reason="INVALID_TIME_RANGE")
    return TimeRange(start, end)


def _values(raw: Iterable[str]) -> tuple[str, ...]:
    """Repeated parameters and comma-separated lists, both; blanks dropped."""
    return tuple(v.strip() for item in raw for v in item.split(",") if v.strip())


def parse_query(request: pb.GetPaymentAnalyticsRequest, *, admin: bool) -> Query:
    """The request, checked: 400 naming the field and the rule for anything wrong."""
    violations: list[FieldViolation] = []
    time_range = parse_range(request.from_date, request.to_date)
    granularity = request.granularity.strip().lower()
    if granularity and granularity not in GRANULARITIES:
        violations.append(FieldViolation("granularity", "must be minute, hour or day"))
    elif granularity:
        buckets = _bucket_count(time_range, granularity)
        if buckets > MAX_BUCKETS:
            violations.append(
                FieldViolation(
                    "granularity",
                    f"{granularity} over this range makes {buckets} buckets, at most"
                    f" {MAX_BUCKETS}: choose a coarser granularity or a shorter range",
                )
            )
    group_by = _values(request.group_by)
    for name in group_by:
        if name not in DIMENSIONS or (name == MERCHANT_DIMENSION and not admin):
            allowed = [d for d in DIMENSIONS if admin or d != MERCHANT_DIMENSION]
            violations.append(
                FieldViolation("group_by", f"{name!r} is not one of {', '.join(allowed)}")
            )
    if len(set(group_by)) != len(group_by):
        violations.append(FieldViolation("group_by", "names a dimension twice"))
    filters: dict[str, tuple[str, ...]] = {}
    for name in DIMENSIONS:
        values = _values(getattr(request, name))
        if not values:
            continue
        if name == MERCHANT_DIMENSION and not admin:
            violations.append(
                FieldViolation(name, "is for admins: a merchant's analytics are its own")
            )
            continue
        problem = _filter_problem(name, values)
        if problem:
            violations.append(FieldViolation(name, problem))
        filters[name] = tuple(dict.fromkeys(values))
    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            reason="INVALID_ANALYTICS_QUERY",
            field_violations=violations,
        )
    return Query(time_range, granularity, group_by, filters)


def _filter_problem(name: str, values: Sequence[str]) -> str:
    if len(values) > MAX_FILTER_VALUES:
        return f"at most {MAX_FILTER_VALUES} values"
    for value in values:
        if len(value) > MAX_FILTER_CHARS:
            return f"each value at most {MAX_FILTER_CHARS} characters"
        if name == "payment_method" and value not in _METHODS:
            return f"{value!r} is not one of {', '.join(sorted(_METHODS))}"
        if name == "status" and value not in _STATUSES:
            return f"{value!r} is not a payment status ({', '.join(sorted(_STATUSES))})"
        if name == "currency" and not _CURRENCY.fullmatch(value):
            return f"{value!r} is not an ISO 4217 code (three capital letters)"
    return ""


def bucket_start(moment: datetime, granularity: str) -> datetime:
    """The start, in IST, of the bucket holding `moment`."""
    local = moment.astimezone(IST)
    if granularity == "minute":
        return local.replace(second=0, microsecond=0)
    if granularity == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_starts(time_range: TimeRange, granularity: str) -> list[datetime]:
    """Every bucket start of the range, in IST (India keeps no daylight saving: fixed steps)."""
    step = GRANULARITIES[granularity]
    current = bucket_start(time_range.start, granularity)
    starts = []
    while current < time_range.end:
        starts.append(current)
        current += step
    return starts


def _bucket_count(time_range: TimeRange, granularity: str) -> int:
    first = bucket_start(time_range.start, granularity)
    step = GRANULARITIES[granularity]
    return -(-(time_range.end - first) // step)


# -- the queries ------------------------------------------------------------------------------


def _where(query: Query, time_column: str, merchant_column: str) -> tuple[str, list[Any]]:
    """The range and the dimension filters, as SQL over the payment fact `p`."""
    args: list[Any] = [query.range.start, query.range.end]
    clauses = [f"{time_column} >= $1", f"{time_column} < $2"]
    for name, values in query.filters.items():
        args.append(list(values))
        column = merchant_column if name == MERCHANT_DIMENSION else f"p.{name}"
        clauses.append(f"{column} = ANY(${len(args)}::text[])")
    return " AND ".join(clauses), args


def _grouping(query: Query, time_column: str) -> tuple[str, str]:
    """The select list of keys, and the GROUP BY clause: the totals, the groups, and each
    bucket's totals and groups, in one pass (GROUPING SETS)."""
    dims = [f"p.{d}" for d in query.group_by]
    bucket = ""
    if query.granularity:
        # The granularity is one of GRANULARITIES' names, checked: safe to inline.
        bucket = f"date_trunc('{query.granularity}', {time_column} AT TIME ZONE '{TIME_ZONE}')"
    keys = [f"{bucket or 'NULL::timestamp'} AS bucket"]
    keys += [f"{dim} AS {name}" for dim, name in zip(dims, query.group_by, strict=True)]
    # Which set a row belongs to: bit 1 = the bucket is aggregated away, bit 0 = the dimensions.
    bucket_away = f"GROUPING({bucket})" if bucket else "1"
    dims_away = f"GROUPING({dims[0]})" if dims else "1"
    keys.append(f"{bucket_away} * 2 + {dims_away} AS level")
    sets = ["()"]
    if dims:
        sets.append(f"({', '.join(dims)})")
    if bucket:
        sets.append(f"({bucket})")
        if dims:
            sets.append(f"({bucket}, {', '.join(dims)})")
    return ", ".join(keys), f"GROUP BY GROUPING SETS ({', '.join(sets)})"


_SUCCESSFUL_SQL = "(" + ", ".join(f"'{s}'" for s in SUCCESSFUL) + ")"

_PAYMENT_METRICS = f"""
    count(*) AS payment_count,
    count(*) FILTER (WHERE p.status IN {_SUCCESSFUL_SQL}) AS success_count,
    count(*) FILTER (WHERE p.status = 'FAILED') AS failed_count,
    count(*) FILTER (WHERE p.status <> 'CREATED' AND p.fraud_decision <> 'BLOCK')
        AS reached_provider_count,
    coalesce(sum(p.captured_paisa) FILTER (WHERE p.status IN {_SUCCESSFUL_SQL}), 0)
        AS processed_amount_paisa,
    count(*) FILTER (WHERE p.fraud_decision = 'BLOCK') AS fraud_block_count,
    count(*) FILTER (WHERE p.fraud_decision = 'REVIEW') AS fraud_review_count,
    percentile_disc(0.5) WITHIN GROUP (ORDER BY p.success_ms)
        FILTER (WHERE p.status IN {_SUCCESSFUL_SQL}) AS p50,
    percentile_disc(0.95) WITHIN GROUP (ORDER BY p.success_ms)
        FILTER (WHERE p.status IN {_SUCCESSFUL_SQL}) AS p95
"""

_REFUND_METRICS = """
    count(*) AS refund_count,
    coalesce(sum(r.amount_paisa), 0) AS refund_amount_paisa
"""

_DISPUTE_METRICS = """
    count(*) AS dispute_opened_count,
    count(*) FILTER (WHERE d.status = 'WON') AS dispute_won_count,
    count(*) FILTER (WHERE d.status = 'LOST') AS dispute_lost_count,
    count(*) FILTER (WHERE d.status = 'ACCEPTED') AS dispute_accepted_count,
    coalesce(sum(d.amount_paisa), 0) AS dispute_amount_paisa
"""


def _payments_sql(query: Query) -> tuple[str, list[Any]]:
    where, args = _where(query, "p.created_at", "p.merchant_id")
    keys, group = _grouping(query, "p.created_at")
    sql = f"""
        SELECT {keys}, {_PAYMENT_METRICS}
        FROM (SELECT *, floor(extract(epoch FROM succeeded_at - created_at) * 1000)::bigint
                        AS success_ms
              FROM analytics_payments) p
        WHERE {where}
        {group}
    """  # noqa: S608 - only checked dimension names and constants; values are parameters
    return sql, args


def _refunds_sql(query: Query) -> tuple[str, list[Any]]:
    where, args = _where(query, "r.created_at", "r.merchant_id")
    keys, group = _grouping(query, "r.created_at")
    sql = f"""
        SELECT {keys}, {_REFUND_METRICS}
        FROM analytics_refunds r JOIN analytics_payments p USING (payment_id)
        WHERE {where} AND r.status = 'PROCESSED'
        {group}
    """  # noqa: S608 - only checked dimension names and constants; values are parameters
    return sql, args


def _disputes_sql(query: Query) -> tuple[str, list[Any]]:
    where, args = _where(query, "d.created_at", "d.merchant_id")
    keys, group = _grouping(query, "d.created_at")
    sql = f"""
        SELECT {keys}, {_DISPUTE_METRICS}
        FROM analytics_disputes d JOIN analytics_payments p USING (payment_id)
        WHERE {where}
        {group}
    """  # noqa: S608 - only checked dimension names and constants; values are parameters
    return sql, args


# A row's place in the answer: (bucket start or None, the group's dimension values or None).
Key = tuple[datetime | None, tuple[str, ...] | None]


def _key(row: asyncpg.Record, query: Query) -> Key:
    level = row["level"]
    bucket = row["bucket"].replace(tzinfo=IST) if not level & 2 and row["bucket"] else None
    dims = tuple(row[d] for d in query.group_by) if query.group_by and not level & 1 else None
    return bucket, dims


async def compute(conn: asyncpg.Connection, query: Query) -> pb.PaymentAnalytics:
    """The answer, from one query per fact table (call inside a read-only transaction, so the
    three see the same snapshot)."""
    metrics: dict[Key, dict[str, int]] = {}
    for build in (_payments_sql, _refunds_sql, _disputes_sql):
        sql, args = build(query)
        for row in await conn.fetch(sql, *args):
            values = metrics.setdefault(_key(row, query), {})
            for name, value in row.items():
                if name not in ("bucket", "level") and name not in query.group_by:
                    values[name] = int(value or 0)
    groups = sum(dims is not None for _, dims in metrics)
    if groups > MAX_GROUPS:
        raise invalid_field(
            "group_by",
            f"makes {groups} groups (over the range and its buckets), at most {MAX_GROUPS}:"
            " group by fewer dimensions, choose a coarser granularity or narrow the range",
            reason="TOO_MANY_GROUPS",
        )
    answer = pb.PaymentAnalytics(
        start_time=query.range.start.astimezone(IST).isoformat(),
        end_time=query.range.end.astimezone(IST).isoformat(),
        time_zone=TIME_ZONE,
        granularity=query.granularity,
        totals=metrics_message(metrics.get((None, None), {})),
        groups=_groups(metrics, None, query.group_by),
    )
    if query.granularity:
        for start in bucket_starts(query.range, query.granularity):
            answer.time_series.append(
                pb.AnalyticsBucket(
                    start_time=start.isoformat(),
                    metrics=metrics_message(metrics.get((start, None), {})),
                    groups=_groups(metrics, start, query.group_by),
                )
            )
    return answer


def _groups(
    metrics: Mapping[Key, Mapping[str, int]], bucket: datetime | None, group_by: Sequence[str]
) -> list[pb.AnalyticsGroup]:
    if not group_by:
        return []
    found = sorted(
        (dims, values)
        for (at, dims), values in metrics.items()
        if at == bucket and dims is not None
    )
    return [
        pb.AnalyticsGroup(
            dimensions=pb.AnalyticsDimensions(**dict(zip(group_by, dims, strict=True))),
            metrics=metrics_message(values),
        )
        for dims, values in found
    ]


def metrics_message(values: Mapping[str, int]) -> pb.PaymentMetrics:
    """The metrics message, with the rates and the average derived from the counts."""
    counts = {name: values.get(name, 0) for name in _COUNTS}
    success = counts["success_count"]
    processed = counts["processed_amount_paisa"]
    return pb.PaymentMetrics(
        **counts,
        success_rate=_ratio(success, counts["reached_provider_count"]),
        conversion_rate=_ratio(success, counts["payment_count"]),
        average_ticket_paisa=(2 * processed + success) // (2 * success) if success else 0,
        time_to_success_p50_ms=values.get("p50", 0),
        time_to_success_p95_ms=values.get("p95", 0),
    )


_COUNTS = (
    "payment_count",
    "success_count",
    "failed_count",
    "reached_provider_count",
    "processed_amount_paisa",
    "refund_count",
    "refund_amount_paisa",
    "fraud_block_count",
    "fraud_review_count",
    "dispute_opened_count",
    "dispute_won_count",
    "dispute_lost_count",
    "dispute_accepted_count",
    "dispute_amount_paisa",
)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
