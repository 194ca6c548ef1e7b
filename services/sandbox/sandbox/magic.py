"""Sandbox magic values: the customer data that decides each simulated outcome.

This is the one home of the table that the README's "Sandbox test values" section documents.
"""

from __future__ import annotations

from enum import StrEnum


class UpiOutcome(StrEnum):
    APPROVE = "approve"  # the customer approves in their app within a couple of seconds
    DECLINE = "decline"  # the customer (or their bank) declines
    TIMEOUT = "timeout"  # the switch times out; a later status inquiry finds it succeeded
    NO_SUCH_VPA = "no_such_vpa"  # the VPA is not registered with any UPI app


MAGIC_VPAS: dict[str, UpiOutcome] = {
    "success@upi": UpiOutcome.APPROVE,
    "failure@upi": UpiOutcome.DECLINE,
    "timeout@upi": UpiOutcome.TIMEOUT,
    "nouser@upi": UpiOutcome.NO_SUCH_VPA,
}


def upi_outcome(vpa: str) -> UpiOutcome:
    """Any VPA not in the table behaves like success@upi."""
    return MAGIC_VPAS.get(vpa.lower(), UpiOutcome.APPROVE)


def holder_name(vpa: str) -> str:
    """A masked display name, as PSPs return from a VPA lookup."""
    handle = vpa.split("@", 1)[0]
    return (handle[:1].upper() + "****") if handle else ""
