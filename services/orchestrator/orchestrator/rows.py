"""Storage rows to the domain model and back: the repository's only mapping.

A row is what asyncpg returns for `SELECT *`, or a table's row type inside another row (the
repository reads a payment's children as arrays of them): either way a Record read by column
name, its jsonb columns already decoded by the pool's codec. The domain objects are
`orchestrator.domain.payment`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.connectors.base import DetailsType
from orchestrator.domain.disputes import DisputeStatus
from orchestrator.domain.payment import (
    Dispute,
    FraudSignal,
    FraudVerdict,
    Merchant,
    MethodDetails,
    Payment,
    PaymentAttempt,
    Refund,
    StatusChange,
)
from orchestrator.domain.states import Status

Row = Mapping[str, Any]
# fraud_score, fraud_decision, fraud_signals
FraudColumns = tuple[int | None, str | None, list[dict[str, Any]]]

# The payments columns that the domain groups into one value, and the children it holds.
_PAYMENT_GROUPED = frozenset({"fraud", "history", "refunds", "disputes", "attempts"})


def merchant_from_row(row: Row) -> Merchant:
    return Merchant(**{name: row[name] for name in Merchant.__dataclass_fields__})


def status_change_from_row(row: Row) -> StatusChange:
    return StatusChange(
        from_status=Status(row["from_status"]) if row["from_status"] else None,
        to_status=Status(row["to_status"]),
        reason=row["reason"],
        created_at=row["created_at"],
    )


def attempt_from_row(row: Row) -> PaymentAttempt:
    return PaymentAttempt(**{name: row[name] for name in PaymentAttempt.__dataclass_fields__})


def refund_from_row(row: Row) -> Refund:
    values = {name: row[name] for name in Refund.__dataclass_fields__}
    values["currency"] = values["currency"].strip()  # char(3)
    return Refund(**values)


def dispute_from_row(row: Row) -> Dispute:
    values = {name: row[name] for name in Dispute.__dataclass_fields__}
    values["status"] = DisputeStatus(values["status"])
    values["currency"] = values["currency"].strip()
    return Dispute(**values)


def fraud_from_row(row: Row) -> FraudVerdict | None:
    """The payments row's three fraud columns (all NULL when the payment was never screened)."""
    if row["fraud_decision"] is None:
        return None
    return FraudVerdict(
        score=row["fraud_score"] or 0,
        decision=row["fraud_decision"],
        signals=tuple(
            FraudSignal(s["name"], s["points"], s.get("detail", "")) for s in row["fraud_signals"]
        ),
    )


def column_value(value: object) -> object:
    """A domain value as its column takes it: a method's details as their stored JSON (the
    pool's codec turns dicts into jsonb)."""
    return value.encode() if isinstance(value, MethodDetails) else value


def fraud_columns(
    verdict: FraudVerdict | None,
) -> tuple[int | None, str | None, list[dict[str, Any]]]:
    """fraud_score, fraud_decision and fraud_signals, as stored."""
    if verdict is None:
        return None, None, []
    signals = [{"name": s.name, "points": s.points, "detail": s.detail} for s in verdict.signals]
    return verdict.score, verdict.decision, signals


def payment_from_row(
    row: Row,
    details_type: DetailsType,
    *,
    history: Sequence[Row] = (),
    refunds: Sequence[Row] = (),
    disputes: Sequence[Row] = (),
    attempts: Sequence[Row] = (),
) -> Payment:
    """A payments row and the rows of its children, each list in its stored order;
    `details_type`: how the payment's method keeps its details."""
    values = {
        name: row[name] for name in Payment.__dataclass_fields__ if name not in _PAYMENT_GROUPED
    }
    values["status"] = Status(values["status"])
    values["currency"] = values["currency"].strip()
    values["payment_details"] = details_type.decode(row["payment_details"])
    return Payment(
        **values,
        fraud=fraud_from_row(row),
        history=tuple(status_change_from_row(r) for r in history),
        refunds=tuple(refund_from_row(r) for r in refunds),
        disputes=tuple(dispute_from_row(r) for r in disputes),
        attempts=tuple(attempt_from_row(r) for r in attempts),
    )
