"""The dispute (chargeback) state machine, the merchant's evidence rules and the reason codes.

The database's `dispute_transitions`, which a trigger enforces, is rendered from TRANSITIONS
after every migration run (migrations/derived.py).

    NEEDS_RESPONSE → UNDER_REVIEW → WON | LOST   (the merchant answered; the provider decided)
    NEEDS_RESPONSE → ACCEPTED                    (the merchant conceded)
    NEEDS_RESPONSE → LOST                        (respond_by passed without an answer)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gateway_core.errors import FailedPrecondition
from gateway_core.limits import FieldProblems


class DisputeStatus(StrEnum):
    NEEDS_RESPONSE = "NEEDS_RESPONSE"
    UNDER_REVIEW = "UNDER_REVIEW"
    WON = "WON"
    LOST = "LOST"
    ACCEPTED = "ACCEPTED"


class Phase(StrEnum):
    CHARGEBACK = "CHARGEBACK"
    PRE_ARBITRATION = "PRE_ARBITRATION"
    ARBITRATION = "ARBITRATION"


D = DisputeStatus
TRANSITIONS: frozenset[tuple[DisputeStatus, DisputeStatus]] = frozenset(
    {
        (D.NEEDS_RESPONSE, D.UNDER_REVIEW),
        (D.NEEDS_RESPONSE, D.ACCEPTED),
        (D.NEEDS_RESPONSE, D.LOST),
        (D.UNDER_REVIEW, D.WON),
        (D.UNDER_REVIEW, D.LOST),
    }
)
RESOLVED: frozenset[DisputeStatus] = frozenset({D.WON, D.LOST, D.ACCEPTED})
# Disputes whose amount is (or may stay) with the customer: it cannot be refunded as well.
HOLDS_MONEY: frozenset[DisputeStatus] = frozenset(
    {D.NEEDS_RESPONSE, D.UNDER_REVIEW, D.LOST, D.ACCEPTED}
)

# The event announced when a dispute enters each status.
EVENT_FOR_STATUS: dict[DisputeStatus, str] = {
    D.NEEDS_RESPONSE: "dispute.created",
    D.UNDER_REVIEW: "dispute.under_review",
    D.WON: "dispute.won",
    D.LOST: "dispute.lost",
    D.ACCEPTED: "dispute.accepted",
}
EVENT_TYPES: frozenset[str] = frozenset(EVENT_FOR_STATUS.values())


def can_transition(current: DisputeStatus, target: DisputeStatus) -> bool:
    return (current, target) in TRANSITIONS


def ensure_transition(current: DisputeStatus, target: DisputeStatus) -> None:
    """A clear client error for an illegal move (FAILED_PRECONDITION: HTTP 400)."""
    if not can_transition(current, target):
        raise FailedPrecondition(
            f"a dispute in status {current} cannot move to {target}",
            reason="DISPUTE_ILLEGAL_TRANSITION",
            metadata={"from_status": current, "to_status": target},
        )


# Card network reason codes (Visa / Mastercard) and NPCI UDIR codes the sandbox raises, in words.
REASON_CODES: Mapping[str, str] = {
    "10.4": "fraud: card-absent environment",
    "13.1": "merchandise or services not received",
    "13.3": "not as described or defective",
    "4837": "no cardholder authorization",
    "4853": "cardholder dispute: not as described",
    "4855": "goods or services not provided",
    "U008": "customer debited but the merchant was not credited",
    "U021": "goods or services not provided",
    "U022": "duplicate payment",
    "U023": "customer debited twice or charged the wrong amount",
}


def reason_text(code: str) -> str:
    return REASON_CODES.get(code, "other")


# Evidence: the fields of paygate.disputes.v1.DisputeEvidence, each text at most this long.
EVIDENCE_FIELDS: tuple[str, ...] = (
    "summary",
    "shipping_proof",
    "billing_proof",
    "cancellation_proof",
    "customer_communication",
    "proof_of_service",
    "refund_confirmation",
    "access_activity_log",
    "explanation_letter",
    "others",
)
MAX_EVIDENCE_CHARS = 2_000
# What the sandbox providers look for in the summary to decide the dispute for the merchant.
WINNING_EVIDENCE = "winning_evidence"


@dataclass(frozen=True)
class Evidence:
    fields: dict[str, str]

    @property
    def summary(self) -> str:
        return self.fields.get("summary", "")


def check_evidence(given: Mapping[str, str]) -> Evidence:
    """The merchant's evidence, or INVALID_ARGUMENT naming every field that breaks a rule
    (a card number in any of them is refused too: evidence is stored outside the vault)."""
    problems = FieldProblems()
    if not given.get("summary", "").strip():
        problems.add("evidence.summary", "is required: the merchant's case in a few sentences")
    for name in EVIDENCE_FIELDS:
        problems.text(f"evidence.{name}", given.get(name, ""), MAX_EVIDENCE_CHARS)
    problems.raise_if_any()
    return Evidence({name: given[name] for name in EVIDENCE_FIELDS if given.get(name)})
