"""The payment state machine: the one table of legal status changes.

The database's `payment_transitions`, which a trigger enforces on every status change, is
rendered from TRANSITIONS after every migration run (migrations/derived.py).
"""

from __future__ import annotations

from enum import StrEnum

from gateway_core.errors import FailedPrecondition


class Status(StrEnum):
    CREATED = "CREATED"
    PENDING = "PENDING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    AUTHORIZED = "AUTHORIZED"
    CAPTURING = "CAPTURING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


S = Status
TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (S.CREATED, S.PENDING),
        (S.CREATED, S.REQUIRES_ACTION),
        (S.CREATED, S.AUTHORIZED),
        (S.CREATED, S.SUCCESS),
        (S.CREATED, S.FAILED),
        (S.CREATED, S.EXPIRED),  # its handler died before the provider answered
        (S.CREATED, S.CANCELLING),
        (S.PENDING, S.REQUIRES_ACTION),
        (S.PENDING, S.AUTHORIZED),
        (S.PENDING, S.SUCCESS),
        (S.PENDING, S.FAILED),
        (S.PENDING, S.EXPIRED),
        (S.PENDING, S.CANCELLING),
        (S.REQUIRES_ACTION, S.PENDING),
        (S.REQUIRES_ACTION, S.AUTHORIZED),
        (S.REQUIRES_ACTION, S.SUCCESS),
        (S.REQUIRES_ACTION, S.FAILED),
        (S.REQUIRES_ACTION, S.EXPIRED),
        (S.REQUIRES_ACTION, S.CANCELLING),
        # A held authorization: captured, or cancelled/expired through a void at the provider.
        (S.AUTHORIZED, S.CAPTURING),
        (S.AUTHORIZED, S.CANCELLING),
        (S.CAPTURING, S.SUCCESS),
        (S.CAPTURING, S.AUTHORIZED),  # the provider refused the capture: still held
        (S.CANCELLING, S.CANCELLED),
        (S.CANCELLING, S.EXPIRED),  # an authorization voided because it was never captured
        (S.CANCELLING, S.AUTHORIZED),  # the provider refused the void: still held
        (S.SUCCESS, S.PARTIALLY_REFUNDED),
        (S.SUCCESS, S.REFUNDED),
        (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
        (S.PARTIALLY_REFUNDED, S.REFUNDED),
    }
)

TERMINAL: frozenset[Status] = frozenset({S.FAILED, S.EXPIRED, S.CANCELLED, S.REFUNDED})
CAPTURED: frozenset[Status] = frozenset({S.SUCCESS, S.PARTIALLY_REFUNDED, S.REFUNDED})
# Waiting for the customer or the provider: inquiries and expiry look after these.
OPEN: frozenset[Status] = frozenset({S.CREATED, S.PENDING, S.REQUIRES_ACTION})
# A capture, cancel or void is at the provider: the payment is held until it is resolved.
IN_OPERATION: frozenset[Status] = frozenset({S.CAPTURING, S.CANCELLING})
# Closed without the customer's money: a provider success reported now must be reversed.
CLOSED_UNPAID: frozenset[Status] = frozenset({S.FAILED, S.EXPIRED, S.CANCELLED})

# The event type announced when a payment enters each status.
EVENT_FOR_STATUS: dict[Status, str] = {
    S.CREATED: "payment.created",
    S.PENDING: "payment.pending",
    S.REQUIRES_ACTION: "payment.requires_action",
    S.AUTHORIZED: "payment.authorized",
    S.CAPTURING: "payment.capturing",
    S.SUCCESS: "payment.success",
    S.FAILED: "payment.failed",
    S.EXPIRED: "payment.expired",
    S.CANCELLING: "payment.cancelling",
    S.CANCELLED: "payment.cancelled",
    S.PARTIALLY_REFUNDED: "payment.partially_refunded",
    S.REFUNDED: "payment.refunded",
}


def can_transition(current: Status, target: Status) -> bool:
    return (current, target) in TRANSITIONS


def ensure_transition(current: Status, target: Status) -> None:
    """Raise a clear client error for an illegal move instead of overwriting the status."""
    if not can_transition(current, target):
        raise FailedPrecondition(
            f"a payment in status {current} cannot move to {target}",
            reason="ILLEGAL_TRANSITION",
            metadata={"from_status": current, "to_status": target},
        )
