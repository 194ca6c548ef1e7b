"""The simulated providers' own books: what each one did with every payment and refund.

Tests compare them with the gateway's records one for one (GET /books on the sandbox's HTTP
server, sandbox.web), the way a merchant reconciles a gateway against its bank. Each provider
reports its entries in its own words (`status` is the provider's own status string); the money
columns mean the same everywhere:

- charged_paisa: what the customer was actually debited and not released: a UPI, wallet or
  bank payment's amount once SUCCESS, a card's captured amount (a voided or uncaptured
  authorization charges nothing).
- authorized_paisa, captured_paisa, voided: the card authorization's story; 0 / False for the
  instant methods, whose debit is the charge.
- refunded_paisa: the sum of the payment's PROCESSED refunds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class BookPayment:
    provider: str  # upi_core, paytm, phonepe, google_pay, amazon_pay, netbanking, razorpay, ...
    payment_id: str  # the gateway's payment id
    status: str
    amount_paisa: int
    charged_paisa: int
    authorized_paisa: int = 0
    captured_paisa: int = 0
    voided: bool = False
    refunded_paisa: int = 0


@dataclass(frozen=True)
class BookRefund:
    provider: str
    payment_id: str
    refund_id: str  # the gateway's refund id
    amount_paisa: int
    status: str  # PROCESSED or FAILED


class KeepsBooks(Protocol):
    """A simulated provider whose entries appear in the books."""

    def booked_payments(self) -> Iterable[BookPayment]: ...

    def booked_refunds(self) -> Iterable[BookRefund]: ...


def books_document(providers: Iterable[KeepsBooks], payment_id: str = "") -> dict[str, Any]:
    """Every provider's payments and refunds as JSON-ready dicts, in the order the providers
    are given and, within one, the order the entries were made; only `payment_id`'s if set."""
    payments: list[dict[str, Any]] = []
    refunds: list[dict[str, Any]] = []
    for provider in providers:
        payments += [
            asdict(entry)
            for entry in provider.booked_payments()
            if not payment_id or entry.payment_id == payment_id
        ]
        refunds += [
            asdict(entry)
            for entry in provider.booked_refunds()
            if not payment_id or entry.payment_id == payment_id
        ]
    return {"payments": payments, "refunds": refunds}
