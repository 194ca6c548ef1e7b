"""What a payment method's connector does for the flow engine, and what it may ask back.

A connector owns one payment method end to end: its typed details and their validation, its
provider client, and the provider's protocol (how a payment is started, asked about, captured,
voided, refunded, and what its callbacks say). The flow engine (`orchestrator.processing`)
knows no method: it stores, screens and moves payments, and does what a connector's `Step`
asks.

A connector never changes a payment's status itself. It answers with a `Step` (data), and the
engine applies it, so every provider outcome goes through the engine's one `apply_result`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, TypeVar

from gateway_core.errors import FailedPrecondition
from orchestrator.providers.base import Outcome, ProviderResult

if TYPE_CHECKING:
    from orchestrator.domain.payment import Merchant, MethodDetails, Payment

D = TypeVar("D")

# Records one violation of a request: (field, rule it breaks).
Reporter = Callable[[str, str], None]


@dataclass(frozen=True)
class CardFields:
    """A raw card as the request gave it (checked and tokenized before anything else sees it).
    The number and CVV are left out of the repr, so the object never prints them."""

    card_number: str = field(default="", repr=False)
    expiry_month: str = ""
    expiry_year: str = ""
    cvv: str = field(default="", repr=False)
    holder_name: str = ""


@dataclass(frozen=True)
class DetailsInput:
    """The request's `payment_details` as the servicer read them off the wire ("" when not
    given): what a connector validates and reads its typed details from."""

    vpa: str = ""
    upi_flow: str = ""
    wallet: str = ""
    phone: str = ""
    bank_code: str = ""
    card_token: str = ""
    card: CardFields = field(default_factory=CardFields)
    emi_plan_id: str = ""


# A method's typed payment details as the merchant sent them (validated): each connector
# defines its own frozen dataclass (UpiDetails, CardInput, ...) and reads only its own.
RequestDetails: TypeAlias = object


class DetailsType(Protocol):
    """A connector's stored details class (`MethodDetails`), read back from its stored form."""

    def decode(self, stored: Mapping[str, str]) -> MethodDetails: ...


def stored_fields(**fields: str) -> dict[str, str]:
    """A details' stored form: the fields that are set (an unset one is absent, not "", so the
    wire shows only what the payment has)."""
    return {name: value for name, value in fields.items() if value}


@dataclass(frozen=True)
class StartRequest:
    """A validated request to take a payment, as the connector sees it."""

    payment_id: str
    merchant: Merchant
    user_id: str
    amount_paisa: int
    currency: str
    details: RequestDetails
    description: str
    callback_url: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class Prepared:
    """What a connector settled before the payment exists: the provider that will serve it,
    the details it stores, its payment link, and the facts fraud screening should see.
    A connector may subclass it to carry what its `initiate` needs (a wallet's balance)."""

    provider: str
    details: MethodDetails
    payment_url: str = ""
    fraud_facts: Mapping[str, str] = field(default_factory=dict)
    # Undoes what preparing made outside the gateway's database for this request alone (a
    # card it put in the vault), when the payment is refused before it is stored.
    undo: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


# The steps a connector asks the engine to take on a payment.


@dataclass(frozen=True)
class Apply:
    """A provider outcome: the engine applies it (`apply_result`). `provider`: the acquirer
    that produced it, when it is not the one the payment names yet (a card's failover)."""

    result: ProviderResult
    source: str
    provider: str = ""


@dataclass(frozen=True)
class AwaitCustomer:
    """The provider has the payment (or may): PENDING, and inquire after `inquire_after`."""

    reason: str
    inquire_after: timedelta
    external_txn_id: str = ""


@dataclass(frozen=True)
class RequireAction:
    """The customer must act on a provider's page: REQUIRES_ACTION at `redirect_url`, with
    `details` (the stored details plus what the provider's page needs) kept on the payment."""

    reason: str
    details: MethodDetails
    inquire_after: timedelta | None = None


@dataclass(frozen=True)
class Fail:
    """Nothing was or can be taken: FAILED with this reason."""

    failure_reason: str


@dataclass(frozen=True)
class InquireLater:
    """The outcome at `provider` is unknown: the payment stays as it is, asked about soon."""

    provider: str
    after: timedelta


@dataclass(frozen=True)
class NoChange:
    """Nothing to do (a repeated report, a claim another request already holds)."""


Step = Apply | AwaitCustomer | RequireAction | Fail | InquireLater | NoChange


class PaymentBooks(Protocol):
    """The two writes a connector may make mid-flow, before it knows an outcome."""

    async def switch_provider(self, payment_id: str, provider: str) -> None:
        """Record the acquirer about to be called, as a new attempt, before the call (so a
        process that dies during it leaves inquiries asking the acquirer that may hold the
        money)."""
        ...

    async def pass_over(self, payment_id: str, provider: str, status: str) -> None:
        """The payment moves on from `provider`: UNAVAILABLE (it did not process the payment)
        or SKIPPED (not tried: its circuit breaker was open). A PaymentAttempt records it."""
        ...

    async def claim_for_authorization(self, payment_id: str, reason: str) -> Payment | None:
        """REQUIRES_ACTION -> PENDING, once: the payment, or None when another report did it."""
        ...


class PaymentConnector(Protocol):
    """One payment method at its provider(s). Class-level facts first, then the calls."""

    method: ClassVar[str]  # the PaymentMethod name: "UPI", "CARD", ...
    details_type: ClassVar[DetailsType]  # what its payments keep (connectors/<method>/details.py)
    manual_capture: ClassVar[bool]  # an authorization can be held for a later capture
    offers_emi: ClassVar[bool]

    @staticmethod
    def validate_details(given: DetailsInput, bad: Reporter) -> None:
        """Report every rule the request's details break."""
        ...

    @staticmethod
    def read_details(given: DetailsInput) -> RequestDetails:
        """The request's details, typed (after `validate_details` passed)."""
        ...

    async def prepare(self, request: StartRequest) -> Prepared:
        """Checks and lookups before the payment exists. Raising refuses the request and
        creates nothing."""
        ...

    async def initiate(
        self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
    ) -> Step:
        """Start the stored, screened payment at the provider. `step_up`: fraud screening asks
        for the strongest customer authentication the method has."""
        ...

    async def status(self, payment: Payment) -> ProviderResult:
        """Where the payment stands at the provider (PENDING when there is nothing to ask)."""
        ...

    async def withdraw(self, payment: Payment) -> ProviderResult:
        """Stop an open payment at its provider. SUCCESS: the customer had already paid;
        FAILED, EXPIRED or NOT_FOUND: nothing was or can be taken; PENDING: still open."""
        ...

    async def capture(self, payment: Payment) -> ProviderResult: ...

    async def void(self, payment: Payment) -> ProviderResult:
        """Release a held authorization. SUCCESS once the customer has their money back."""
        ...

    async def refund(
        self, payment: Payment, refund_id: str, amount_paisa: int
    ) -> ProviderResult: ...

    def late_success_is_hold(self, payment: Payment) -> bool:
        """A success reported after the payment closed only held the customer's money (an
        authorization): voiding it is the whole reversal, no refund is owed."""
        ...

    async def on_callback(self, payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
        """A provider's signed, parsed report about this payment."""
        ...


def kept_details(payment: Payment, kind: type[D]) -> D:
    """The payment's details, as the connector of its method keeps them."""
    details = payment.payment_details
    if not isinstance(details, kind):
        raise TypeError(
            f"payment {payment.payment_id} keeps {type(details).__name__}, not {kind.__name__}"
        )
    return details


class DetailMissing(ValueError):
    """A payment was stored without a detail its connector cannot act without (a bug, a hand
    edit): calls about that payment fail, and no other payment's."""


def required_detail(payment: Payment, name: str, value: str) -> str:
    if not value:
        raise DetailMissing(f"payment {payment.payment_id} has no stored {name}")
    return value


def result_from_callback(payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
    """The common callback: the payment's own provider reports its outcome."""
    if payment.provider != provider:
        raise FailedPrecondition(
            f"payment {payment.payment_id} is not served by {provider}",
            reason="PROVIDER_MISMATCH",
        )
    result = ProviderResult(
        Outcome(doc["status"]),
        str(doc.get("provider_txn_id", "")),
        {k: str(doc[k]) for k in ("rrn", "approval_code", "response_code") if doc.get(k)},
        failure_reason=str(doc.get("failure_code") or doc.get("response_code") or "").lower(),
    )
    return Apply(result, f"{provider} callback")


def never_held(method: str) -> FailedPrecondition:
    """A capture or void asked of a method whose payments are never AUTHORIZED."""
    return FailedPrecondition(
        f"{method} payments are never held for capture", reason="PAYMENT_NOT_AUTHORIZED"
    )


def provider_callback_url(gateway_public_url: str, provider: str) -> str:
    """Where `provider` posts its signed reports (Envoy routes it to ProviderCallbackService)."""
    return f"{gateway_public_url.rstrip('/')}/api/v1/provider-callbacks/{provider}"
