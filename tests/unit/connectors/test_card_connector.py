"""The card connector with no server behind it: a vault and an acquirer that answer from
memory, the shipped routing table, a real circuit breaker. What it asks the flow engine to do
(its Steps) is the outcome under test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway_core.cards import validate_card
from gateway_core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from gateway_core.services import BY_NAME
from orchestrator.connectors.base import (
    Apply,
    CardFields,
    DetailsInput,
    InquireLater,
    NoChange,
    RequireAction,
    StartRequest,
)
from orchestrator.connectors.card import CardConnector, CardDetails, CardInput, emi
from orchestrator.connectors.card.client import ACS_PROVIDER, AcquirerClient, ThreeDs
from orchestrator.connectors.card.routing import CircuitBreaker, RoutingTable
from orchestrator.domain.payment import EmiTerms, Merchant, Payment
from orchestrator.domain.states import Status
from orchestrator.providers.base import Outcome, ProviderResult, ProviderTimeout
from orchestrator.providers.vault import CardMeta, VaultClient
from paygate.vault.v1 import vault_pb2

MakePayment = Callable[..., Payment]

ROUTING = RoutingTable.load(BY_NAME["orchestrator"].directory / "config" / "card-routing.yaml")
MERCHANT = Merchant(
    merchant_id="MER_TEST1",
    name="Test shop",
    email="",
    vpa="shop@paygate",
    category="5411",
    status="ACTIVE",
    created_at=datetime.now(UTC),
)


class Vault(VaultClient):
    def __init__(self, brand: str = "VISA", owner: str = "MER_TEST1") -> None:
        self.card_meta = CardMeta(
            token="tok_1",
            merchant_id=owner,
            last4="1111",
            brand=brand,
            issuer="HDFC",
            fingerprint="fp_1",
            expiry_month="12",
            expiry_year="2030",
            holder_name="Asha Rao",
        )
        self.tokenized: list[str] = []
        self.released: list[str] = []
        self.deleted: list[str] = []

    async def tokenize(self, **fields: Any) -> CardMeta:
        self.tokenized.append(fields["field_prefix"])
        return self.card_meta

    async def card(self, token: str) -> CardMeta:
        return self.card_meta

    async def detokenize(
        self, token: str, *, payment_id: str, reason: str
    ) -> vault_pb2.DetokenizeResponse:
        return vault_pb2.DetokenizeResponse(card_number="4111111111111111", cvv="123")

    async def release_cvv(self, token: str, payment_id: str) -> None:
        self.released.append(payment_id)

    async def delete(self, token: str) -> None:
        self.deleted.append(token)


@dataclass
class Acquirer(AcquirerClient):
    """Each gateway answers SUCCESS unless told to be unavailable or to time out."""

    unavailable: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    challenge: bool = False
    authorized: list[tuple[str, int]] = field(default_factory=list)

    async def authenticate(self, **call: Any) -> ThreeDs:
        if self.challenge or call["force_challenge"]:
            return ThreeDs("3ds_1", authenticated=False, challenge_url="https://acs/challenge")
        return ThreeDs("3ds_1", authenticated=True, eci="05")

    async def authorize(self, **call: Any) -> ProviderResult:
        gateway = call["gateway"]
        if gateway in self.unavailable:
            raise Unavailable(f"{gateway} is down", reason="PROVIDER_UNAVAILABLE")
        if gateway in self.silent:
            raise ProviderTimeout(f"{gateway} did not answer")
        self.authorized.append((gateway, call["emi_tenure_months"]))
        return ProviderResult(Outcome.SUCCESS, f"{gateway}_txn", {"auth_code": "A1"})


@dataclass
class Books:
    switched: list[str] = field(default_factory=list)
    passed_over: list[tuple[str, str]] = field(default_factory=list)
    claims: int = 0
    claimable: Payment | None = None

    async def switch_provider(self, payment_id: str, provider: str) -> None:
        self.switched.append(provider)

    async def pass_over(self, payment_id: str, provider: str, status: str) -> None:
        self.passed_over.append((provider, status))

    async def claim_for_authorization(self, payment_id: str, reason: str) -> Payment | None:
        self.claims += 1
        claimed, self.claimable = self.claimable, None
        return claimed


def connector(vault: Vault, acquirer: Acquirer, books: Books | None = None) -> CardConnector:
    return CardConnector(
        vault,
        acquirer,
        ROUTING,
        CircuitBreaker(),
        books or Books(),
        callback_url="https://gw/api/v1/provider-callbacks/acs",
        default_return_url="https://gw/health",
    )


def request(details: CardInput, amount: int = 20_000) -> StartRequest:
    return StartRequest(
        payment_id="PAY_TEST1",
        merchant=MERCHANT,
        user_id="user-1",
        amount_paisa=amount,
        currency="INR",
        details=details,
        description="",
        callback_url="",
        metadata={},
    )


RAW = validate_card("4111111111111111", "12", "2030", "123", datetime.now(UTC))


async def started(
    cards: CardConnector, make_payment: MakePayment, details: CardInput, amount: int = 20_000
) -> tuple[Payment, Any]:
    start = request(details, amount)
    prepared = await cards.prepare(start)
    payment = make_payment(
        amount_paisa=amount, provider=prepared.provider, payment_details=prepared.details
    )
    return payment, await cards.initiate(start, payment, prepared, step_up=False)


def test_exactly_one_way_to_pay_by_card_is_accepted() -> None:
    def problems(details: DetailsInput) -> list[str]:
        found: list[str] = []
        CardConnector.validate_details(details, lambda name, rule: found.append(name))
        return found

    raw = CardFields(card_number="4111111111111111")
    assert problems(DetailsInput()) == ["payment_details"]
    assert problems(DetailsInput(card=raw, card_token="tok_1")) == ["payment_details"]
    assert problems(DetailsInput(card=raw)) == []
    assert problems(DetailsInput(card_token="tok_1")) == []


def test_a_card_is_read_into_primitives_that_never_print_its_number_or_cvv() -> None:
    given = CardFields(
        card_number="4111 1111 1111 1111", expiry_month="12", expiry_year="2030", cvv="987"
    )
    assert "4111" not in repr(given)
    assert "987" not in repr(given)
    details = CardConnector.read_details(DetailsInput(card=given))
    assert details.card is not None
    assert details.card.number.last4 == "1111"
    assert "4111" not in repr(details)
    assert "987" not in repr(details)


def test_a_bad_card_is_refused_naming_its_field() -> None:
    given = CardFields(card_number="4111111111111112", expiry_month="12", expiry_year="2030")
    with pytest.raises(InvalidArgument) as info:
        CardConnector.read_details(DetailsInput(card=given))
    assert [v.field for v in info.value.field_violations] == ["payment_details.card.card_number"]


async def test_a_raw_card_is_tokenized_and_only_its_token_and_display_data_are_kept() -> None:
    vault = Vault()
    prepared = await connector(vault, Acquirer()).prepare(request(CardInput(card=RAW)))
    assert vault.tokenized == ["payment_details.card."]
    assert prepared.details == CardDetails(card_token="tok_1", last4="1111", brand="VISA")
    assert prepared.provider == "razorpay"
    assert prepared.fraud_facts == {"card_fingerprint": "fp_1"}


async def test_a_card_tokenized_for_a_refused_payment_is_deleted_a_saved_one_never() -> None:
    """The flow engine undoes the preparation of a payment refused before it is stored."""
    vault = Vault()
    cards = connector(vault, Acquirer())
    fresh = await cards.prepare(request(CardInput(card=RAW)))
    saved = await cards.prepare(request(CardInput(card_token="tok_1")))
    assert fresh.undo is not None
    await fresh.undo()
    assert vault.deleted == ["tok_1"]
    assert saved.undo is None  # the merchant's saved card, which other payments use


async def test_a_card_refused_by_its_emi_plan_never_reaches_the_vault() -> None:
    """Whatever may refuse the payment (the EMI plan, the routing) is decided before the vault
    keeps a new card, so a refusal leaves nothing behind; the refusal names the field."""
    vault = Vault()
    with pytest.raises(InvalidArgument) as refused:
        await connector(vault, Acquirer()).prepare(
            request(CardInput(card=RAW, emi_plan_id="no_such_plan"))
        )
    assert "emi_plan_id" in str(refused.value)
    assert vault.tokenized == []


async def test_another_merchants_saved_card_is_refused() -> None:
    cards = connector(Vault(owner="MER_OTHER"), Acquirer())
    with pytest.raises(PermissionDenied) as info:
        await cards.prepare(request(CardInput(card_token="tok_1")))
    assert info.value.reason == "TOKEN_NOT_YOURS"


async def test_a_frictionless_payment_is_authorized_at_the_first_routed_acquirer(
    make_payment: MakePayment,
) -> None:
    vault, acquirer, books = Vault(), Acquirer(), Books()
    _, step = await started(connector(vault, acquirer, books), make_payment, CardInput(card=RAW))
    assert isinstance(step, Apply)
    assert step.result.outcome == Outcome.SUCCESS
    assert step.provider == "razorpay"
    assert books.passed_over == []
    assert books.switched == []
    assert vault.released == ["PAY_TEST1"]  # the CVV served its one authorization


async def test_an_unavailable_acquirer_fails_over_and_the_next_is_recorded_before_its_call(
    make_payment: MakePayment,
) -> None:
    books, acquirer = Books(), Acquirer(unavailable={"razorpay"})
    _, step = await started(connector(Vault(), acquirer, books), make_payment, CardInput(RAW))
    assert isinstance(step, Apply)
    assert step.provider == "payu"
    assert books.passed_over == [("razorpay", "UNAVAILABLE")]
    assert books.switched == ["payu"]
    assert acquirer.authorized == [("payu", 0)]


async def test_a_silent_acquirer_is_asked_again_and_never_failed_over(
    make_payment: MakePayment,
) -> None:
    acquirer = Acquirer(silent={"razorpay"})
    _, step = await started(connector(Vault(), acquirer), make_payment, CardInput(RAW))
    assert isinstance(step, InquireLater)
    assert step.provider == "razorpay"
    assert acquirer.authorized == []


async def test_no_acquirer_available_fails_the_payment_naming_each(
    make_payment: MakePayment,
) -> None:
    acquirer, books = Acquirer(unavailable={"razorpay", "payu", "ccavenue"}), Books()
    _, step = await started(connector(Vault(), acquirer, books), make_payment, CardInput(RAW))
    assert isinstance(step, Apply)
    assert step.result.outcome == Outcome.FAILED
    assert step.result.failure_reason == "gateways_unavailable"
    assert books.passed_over == [
        ("razorpay", "UNAVAILABLE"),
        ("payu", "UNAVAILABLE"),
        ("ccavenue", "UNAVAILABLE"),
    ]


async def test_an_acquirer_whose_circuit_is_open_is_skipped_untried(
    make_payment: MakePayment,
) -> None:
    breaker, books, acquirer = CircuitBreaker(threshold=1), Books(), Acquirer()
    breaker.record_failure("razorpay")
    cards = CardConnector(
        Vault(),
        acquirer,
        ROUTING,
        breaker,
        books,
        callback_url="https://gw/api/v1/provider-callbacks/acs",
        default_return_url="https://gw/health",
    )
    _, step = await started(cards, make_payment, CardInput(RAW))
    assert isinstance(step, Apply)
    assert step.provider == "payu"
    assert books.passed_over == [("razorpay", "SKIPPED")]
    assert acquirer.authorized == [("payu", 0)]


async def test_a_challenge_sends_the_cardholder_to_the_acs_and_keeps_its_transaction(
    make_payment: MakePayment,
) -> None:
    _, step = await started(
        connector(Vault(), Acquirer(challenge=True)), make_payment, CardInput(RAW)
    )
    assert isinstance(step, RequireAction)
    assert isinstance(step.details, CardDetails)
    assert step.details.redirect_url == "https://acs/challenge"
    assert step.details.three_ds_transaction_id == "3ds_1"
    assert step.details.card_token == "tok_1"


async def test_the_acs_report_of_another_challenge_is_refused(make_payment: MakePayment) -> None:
    payment = make_payment(
        status=Status.REQUIRES_ACTION,
        payment_details=CardDetails(card_token="tok_1", three_ds_transaction_id="3ds_1"),
    )
    doc = {"status": "SUCCESS", "three_ds_transaction_id": "3ds_other"}
    with pytest.raises(FailedPrecondition) as info:
        await connector(Vault(), Acquirer()).on_callback(payment, ACS_PROVIDER, doc)
    assert info.value.reason == "THREE_DS_TRANSACTION_MISMATCH"


async def test_a_passed_challenge_authorizes_once(make_payment: MakePayment) -> None:
    details = CardDetails(card_token="tok_1", brand="VISA", three_ds_transaction_id="3ds_1")
    waiting = make_payment(status=Status.REQUIRES_ACTION, payment_details=details)
    books = Books(claimable=make_payment(status=Status.PENDING, payment_details=details))
    acquirer = Acquirer()
    cards = connector(Vault(), acquirer, books)
    doc = {"status": "SUCCESS", "three_ds_transaction_id": "3ds_1", "eci": "05"}
    first = await cards.on_callback(waiting, ACS_PROVIDER, doc)
    repeat = await cards.on_callback(waiting, ACS_PROVIDER, doc)
    assert isinstance(first, Apply)
    assert first.result.outcome == Outcome.SUCCESS
    assert isinstance(repeat, NoChange)
    assert acquirer.authorized == [("razorpay", 0)]


async def test_a_failed_challenge_fails_the_payment(make_payment: MakePayment) -> None:
    payment = make_payment(
        status=Status.REQUIRES_ACTION,
        payment_details=CardDetails(card_token="tok_1", three_ds_transaction_id="3ds_1"),
    )
    doc = {"status": "FAILED", "three_ds_transaction_id": "3ds_1"}
    step = await connector(Vault(), Acquirer()).on_callback(payment, ACS_PROVIDER, doc)
    assert isinstance(step, Apply)
    assert step.result.failure_reason == "authentication_failed"


async def test_an_acquirers_callback_for_another_acquirers_payment_is_refused(
    make_payment: MakePayment,
) -> None:
    payment = make_payment(status=Status.PENDING, provider="razorpay")
    with pytest.raises(FailedPrecondition) as info:
        await connector(Vault(), Acquirer()).on_callback(payment, "payu", {"status": "SUCCESS"})
    assert info.value.reason == "PROVIDER_MISMATCH"


async def test_emi_is_chosen_once_when_the_payment_is_prepared(
    make_payment: MakePayment, monkeypatch: pytest.MonkeyPatch
) -> None:
    amount = 600_000
    plan = next(p for p in emi.plans_for(amount) if p.merchant_discount_paisa)
    acquirer = Acquirer()
    cards = connector(Vault(), acquirer)
    start = request(CardInput(card=RAW, emi_plan_id=plan.plan_id), amount)
    prepared = await cards.prepare(start)
    assert isinstance(prepared.details, CardDetails)
    assert prepared.details.emi_tenure_months == plan.tenure_months
    assert prepared.details.emi_merchant_discount_paisa == plan.merchant_discount_paisa

    def chosen_again(*args: object) -> emi.EmiPlan:
        raise AssertionError("EMI chosen a second time")

    monkeypatch.setattr(emi, "choose", chosen_again)
    payment = make_payment(
        amount_paisa=amount, provider=prepared.provider, payment_details=prepared.details
    )
    step = await cards.initiate(start, payment, prepared, step_up=False)
    assert isinstance(step, Apply)
    assert step.result.outcome == Outcome.SUCCESS
    assert acquirer.authorized == [("razorpay", plan.tenure_months)]
    terms = payment.payment_details.emi_terms(amount)
    assert terms == EmiTerms(plan.tenure_months, plan.merchant_discount_paisa)


async def test_an_emi_plan_the_card_cannot_have_is_refused_before_anything_exists() -> None:
    vault = Vault(brand="DINERS")
    diners = validate_card("30569309025904", "12", "2030", "123", datetime.now(UTC))
    with pytest.raises(InvalidArgument, match="EMI is not available on DINERS"):
        await connector(vault, Acquirer()).prepare(
            request(CardInput(card=diners, emi_plan_id="emi_3m"), 600_000)
        )
    assert vault.tokenized == []


async def test_a_payment_awaiting_its_challenge_has_nothing_to_ask_the_acquirer(
    make_payment: MakePayment,
) -> None:
    result = await connector(Vault(), Acquirer()).status(
        make_payment(status=Status.REQUIRES_ACTION)
    )
    assert result.outcome == Outcome.PENDING


def test_only_a_manual_capture_success_is_a_hold(make_payment: MakePayment) -> None:
    cards = connector(Vault(), Acquirer())
    assert cards.late_success_is_hold(make_payment(capture_method="MANUAL"))
    assert not cards.late_success_is_hold(make_payment(capture_method="AUTOMATIC"))
