"""One simulated provider's refunds, and every refund rule of the sandbox in one place.

Every provider (the UPI switch, each card acquirer, each wallet, the banks) keeps its refunds in
a `RefundBook` and refunds by the same rules:

- idempotent by refund id: asking again with the same payment and amount answers the first
  refund (processed or failed) and changes nothing; the same id with another amount (or, where
  ids are unique across the provider's payments, another payment) is refused (AlreadyExists);
- only money that was paid (captured, debited) can be refunded;
- the processed refunds of a payment never add up to more than was paid;
- a provider may refuse for its own reason (a magic wallet that refuses every refund).

What differs between providers is only their words (`RefundTerms`): their failure codes, the
prefix of their refund references, whether a refund id is unique across the provider (cards,
wallets) or only within its payment (UPI, net banking), and whether a refusal is recorded as a
FAILED refund (cards, wallets, banks) or answered with an error and not recorded (the UPI switch,
whose API has no failed refund). The book knows nothing of gRPC or HTTP: the provider's state
class looks the payment up and calls `refund`; its servicer turns the result into the wire
answer.

Every method runs without awaiting, so concurrent calls on the event loop cannot interleave
inside one: two refunds cannot race each other past the amount paid.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from gateway_core.errors import AlreadyExists, FailedPrecondition
from gateway_core.ids import new_id
from sandbox.books import BookRefund
from sandbox.settlements import Refunded

# Orders refunds across books: a state class that keeps several providers' books (the three
# acquirers, the four wallets) lists their refunds as they were made.
_MADE = itertools.count()


class RefundStatus(StrEnum):
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RefundTerms:
    """How one provider words its refunds."""

    # Prefix of the provider's own refund references (new_id(prefix)).
    reference_prefix: str
    # Failure code (or error reason): the payment holds no money to refund.
    not_paid: str
    # Failure code (or error reason): the refunds would add up to more than was paid.
    exceeds_paid: str
    # Error reason: a refund id asked for again with another payment or amount.
    duplicate: str = "DUPLICATE_REFUND_ID"
    # A refund id is unique within its payment only (else across all the provider's payments).
    ids_per_payment: bool = False
    # Refuse with FailedPrecondition and record nothing, rather than record a FAILED refund.
    refusal_is_error: bool = False


@dataclass(frozen=True)
class Refund:
    provider: str
    refund_id: str  # the gateway's refund id
    payment_id: str  # the gateway's payment id
    amount_paisa: int
    status: RefundStatus
    # The provider's own reference for a processed refund ("" for a failed one).
    provider_refund_id: str = ""
    failure_code: str = ""
    processed_at: float = 0.0
    made: int = field(default_factory=lambda: next(_MADE), compare=False, repr=False)

    def to_book(self) -> BookRefund:
        return BookRefund(
            self.provider, self.payment_id, self.refund_id, self.amount_paisa, self.status.value
        )


class RefundBook:
    """The refunds of one provider, by refund id (and payment, if `ids_per_payment`), in the
    order they were made."""

    def __init__(
        self, provider: str, terms: RefundTerms, clock: Callable[[], float] = time.time
    ) -> None:
        self.provider = provider
        self._terms = terms
        self._clock = clock
        self._refunds: dict[tuple[str, str], Refund] = {}
        self._by_payment: dict[str, list[Refund]] = {}

    def refund(
        self,
        payment_id: str,
        refund_id: str,
        amount_paisa: int,
        *,
        paid_paisa: int,
        refusal: str = "",
    ) -> tuple[Refund, bool]:
        """Refund `amount_paisa` of a payment of which `paid_paisa` was paid (0: nothing was),
        unless the provider refuses for its own `refusal` code. Returns the refund and whether
        this call made it (False: it answers an earlier call with the same refund id)."""
        key = (payment_id if self._terms.ids_per_payment else "", refund_id)
        known = self._refunds.get(key)
        if known is not None:
            if (known.payment_id, known.amount_paisa) != (payment_id, amount_paisa):
                raise AlreadyExists(
                    f"refund {refund_id} was requested with other details (payment"
                    f" {known.payment_id}, {known.amount_paisa} paisa)",
                    reason=self._terms.duplicate,
                )
            return known, False
        failure, why = self._failure(payment_id, amount_paisa, paid_paisa, refusal)
        if failure and self._terms.refusal_is_error:
            raise FailedPrecondition(why, reason=failure)
        if failure:
            refund = Refund(
                self.provider,
                refund_id,
                payment_id,
                amount_paisa,
                RefundStatus.FAILED,
                failure_code=failure,
            )
        else:
            refund = Refund(
                self.provider,
                refund_id,
                payment_id,
                amount_paisa,
                RefundStatus.PROCESSED,
                provider_refund_id=new_id(self._terms.reference_prefix),
                processed_at=self._clock(),
            )
        self._refunds[key] = refund
        self._by_payment.setdefault(payment_id, []).append(refund)
        return refund, True

    def refunded_paisa(self, payment_id: str) -> int:
        """What the payment's processed refunds gave back."""
        return sum(refund.amount_paisa for refund in self.processed(payment_id))

    def processed(self, payment_id: str) -> list[Refund]:
        return [
            refund
            for refund in self._by_payment.get(payment_id, ())
            if refund.status is RefundStatus.PROCESSED
        ]

    def settleable(self, payment_id: str) -> list[Refunded]:
        """The payment's processed refunds, as its settlement lists them."""
        return [
            Refunded(r.provider_refund_id, r.refund_id, r.amount_paisa, r.processed_at)
            for r in self.processed(payment_id)
        ]

    def refunds(self) -> list[Refund]:
        """Every refund of the provider, processed or failed, in the order they were made."""
        return list(self._refunds.values())

    def booked_refunds(self) -> list[BookRefund]:
        return [refund.to_book() for refund in self._refunds.values()]

    def _failure(
        self, payment_id: str, amount_paisa: int, paid_paisa: int, refusal: str
    ) -> tuple[str, str]:
        """The failure code and its explanation, or ("", "") when the refund may go ahead."""
        if paid_paisa <= 0:
            return self._terms.not_paid, f"payment {payment_id} was not paid: nothing to refund"
        total = self.refunded_paisa(payment_id) + amount_paisa
        if total > paid_paisa:
            return (
                self._terms.exceeds_paid,
                f"refunds would total {total} paisa, more than the {paid_paisa} paid",
            )
        if refusal:
            return refusal, f"{self.provider} refuses to refund payment {payment_id}"
        return "", ""


def booked_refunds(books: Iterable[RefundBook]) -> list[BookRefund]:
    """The refunds of several providers' books, in the order they were made."""
    made = sorted((refund for book in books for refund in book.refunds()), key=lambda r: r.made)
    return [refund.to_book() for refund in made]
