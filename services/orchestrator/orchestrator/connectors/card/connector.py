"""Card payments: vault token → 3-D Secure → authorization at a routed acquirer.

The orchestrator never stores a card number: a raw card is tokenized by the vault first, and a
PAN exists here only inside one detokenize answer handed straight to an acquirer call.

Failover moves to the next acquirer only when one is *unavailable* (the request was never
processed). A timeout may have charged the card, so it is settled by status inquiry at that
same acquirer instead, never by trying another.

EMI is chosen once, when the payment is prepared: the plan's tenure and the merchant's
discount are kept in the payment's details, and the authorization and the capture use those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from gateway_core.cards import ValidCard, validate_card
from gateway_core.errors import FailedPrecondition, PermissionDenied, Unavailable
from gateway_core.logging import get_logger
from orchestrator.connectors.base import (
    Apply,
    DetailsInput,
    DetailsType,
    InquireLater,
    NoChange,
    PaymentBooks,
    Prepared,
    Reporter,
    RequireAction,
    StartRequest,
    Step,
    kept_details,
    required_detail,
    result_from_callback,
)
from orchestrator.connectors.card import emi
from orchestrator.connectors.card.client import ACS_PROVIDER, AcquirerClient, ThreeDs
from orchestrator.connectors.card.details import CardDetails, CardInput
from orchestrator.connectors.card.routing import CircuitBreaker, RoutingTable
from orchestrator.domain.states import Status
from orchestrator.providers.base import Outcome, ProviderResult, ProviderTimeout
from orchestrator.providers.vault import CardMeta, VaultClient

if TYPE_CHECKING:
    from orchestrator.domain.payment import Payment

log = get_logger(__name__)
CARD_FIELD = "payment_details.card."
INQUIRY_AFTER_TIMEOUT = timedelta(seconds=2)


class CardConnector:
    method: ClassVar[str] = "CARD"
    details_type: ClassVar[DetailsType] = CardDetails
    manual_capture: ClassVar[bool] = True
    offers_emi: ClassVar[bool] = True

    def __init__(
        self,
        vault: VaultClient,
        acquirer: AcquirerClient,
        routing: RoutingTable,
        breaker: CircuitBreaker,
        books: PaymentBooks,
        *,
        callback_url: str,
        default_return_url: str,
    ) -> None:
        self._vault = vault
        self._acquirer = acquirer
        self._routing = routing
        self._breaker = breaker
        self._books = books
        self._callback_url = callback_url
        self._default_return_url = default_return_url

    @staticmethod
    def validate_details(given: DetailsInput, bad: Reporter) -> None:
        # The card's own fields (Luhn, expiry, CVV) are checked by the vault, which alone may
        # look at them; here only which of the two ways to pay by card was chosen.
        has_card = bool(given.card.card_number)
        if has_card == bool(given.card_token):
            bad("payment_details", "give exactly one of card (card details) or card_token")

    @staticmethod
    def read_details(given: DetailsInput) -> CardInput:
        """Raises InvalidArgument naming `payment_details.card.*` for a card that fails the
        checks the vault makes too (Luhn, network, expiry, CVV)."""
        card = (
            validate_card(
                given.card.card_number,
                given.card.expiry_month,
                given.card.expiry_year,
                given.card.cvv,
                datetime.now(UTC),
                prefix=CARD_FIELD.rstrip("."),
            )
            if given.card.card_number
            else None
        )
        return CardInput(
            card=card,
            holder_name=given.card.holder_name,
            card_token=given.card_token,
            emi_plan_id=given.emi_plan_id,
        )

    # Starting a payment

    async def prepare(self, request: StartRequest) -> Prepared:
        details = request.details
        assert isinstance(details, CardInput)
        raw = details.card
        if raw is None:
            card = await self._saved_card(request, details)
            plan, provider = self._terms(request, details, card.brand)
        else:
            # Whatever may refuse the payment is decided before the vault keeps a new card.
            plan, provider = self._terms(request, details, raw.number.brand.value)
            card = await self._tokenize(request, raw, details.holder_name)
        stored = CardDetails(card_token=card.token, last4=card.last4, brand=card.brand)
        if plan is not None:
            stored = replace(
                stored,
                emi_plan_id=plan.plan_id,
                emi_tenure_months=plan.tenure_months,
                emi_merchant_discount_paisa=plan.merchant_discount_paisa,
            )
        return Prepared(
            provider=provider,
            details=stored,
            fraud_facts={"card_fingerprint": card.fingerprint},
            # A card tokenized for this request alone; a saved card is the merchant's to keep.
            undo=partial(self._vault.delete, card.token) if raw is not None else None,
        )

    def _terms(
        self, request: StartRequest, details: CardInput, brand: str
    ) -> tuple[emi.EmiPlan | None, str]:
        """The EMI plan asked for (refused if the card or amount cannot have it) and the
        acquirer the routing picks (refused if none serves the brand)."""
        plan = (
            emi.choose(
                details.emi_plan_id, request.amount_paisa, brand, f"payment_details.{emi.PLAN_ID}"
            )
            if details.emi_plan_id
            else None
        )
        return plan, self._routing.route(brand, request.amount_paisa)[0]

    async def _tokenize(self, request: StartRequest, card: ValidCard, holder_name: str) -> CardMeta:
        return await self._vault.tokenize(
            merchant_id=request.merchant.merchant_id,
            user_id=request.user_id,
            card_number=card.number.expose(),
            expiry_month=card.expiry_month,
            expiry_year=card.expiry_year,
            cvv=card.cvv.expose() if card.cvv is not None else "",
            holder_name=holder_name,
            field_prefix=CARD_FIELD,
        )

    async def _saved_card(self, request: StartRequest, details: CardInput) -> CardMeta:
        saved = await self._vault.card(details.card_token)
        if saved.merchant_id != request.merchant.merchant_id:
            raise PermissionDenied(
                "payment_details.card_token belongs to another merchant", reason="TOKEN_NOT_YOURS"
            )
        return saved

    async def initiate(
        self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
    ) -> Step:
        """3-D Secure first (`step_up`, a fraud REVIEW, forces a challenge); frictionless goes
        straight on to authorization."""
        details = kept_details(payment, CardDetails)
        token = required_detail(payment, "card_token", details.card_token)
        secret = await self._vault.detokenize(
            token, payment_id=payment.payment_id, reason="3ds_authentication"
        )
        try:
            three_ds = await self._acquirer.authenticate(
                gateway=payment.provider,
                payment_id=payment.payment_id,
                merchant_id=payment.merchant_id,
                card=secret,
                amount_paisa=payment.amount_paisa,
                currency=payment.currency,
                force_challenge=step_up,
                return_url=payment.callback_url or self._default_return_url,
                callback_url=self._callback_url,
            )
        except (ProviderTimeout, Unavailable):
            return Apply(
                ProviderResult(Outcome.FAILED, failure_reason="authentication_unavailable"),
                "3-D Secure unavailable",
            )
        finally:
            del secret
        if three_ds.challenge_url:
            return RequireAction(
                "the cardholder must complete a 3-D Secure challenge",
                replace(
                    details,
                    redirect_url=three_ds.challenge_url,
                    three_ds_transaction_id=three_ds.transaction_id,
                ),
            )
        if not three_ds.authenticated:
            return Apply(
                ProviderResult(Outcome.FAILED, failure_reason="authentication_failed"),
                "3-D Secure failed",
            )
        return await self._authorize(payment, three_ds)

    async def on_callback(self, payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
        if provider == ACS_PROVIDER:
            return await self._on_authentication(payment, doc)
        return result_from_callback(payment, provider, doc)

    async def _on_authentication(self, payment: Payment, doc: Mapping[str, Any]) -> Step:
        """The ACS's signed report of a challenge. Only the first report proceeds, and only one
        about this payment's own challenge: the 3-D Secure transaction id stored when the
        payment went to REQUIRES_ACTION (the provider and the amount are checked by the flow
        engine before)."""
        stored = kept_details(payment, CardDetails).three_ds_transaction_id
        if not stored or doc.get("three_ds_transaction_id") != stored:
            raise FailedPrecondition(
                "the callback's 3-D Secure transaction is not this payment's challenge",
                reason="THREE_DS_TRANSACTION_MISMATCH",
            )
        if payment.status != Status.REQUIRES_ACTION:
            return NoChange()
        if doc["status"] != "SUCCESS":
            return Apply(
                ProviderResult(Outcome.FAILED, failure_reason="authentication_failed"),
                "3-D Secure challenge failed",
            )
        # Claim the payment: a repeated callback finds it PENDING and stops here.
        claimed = await self._books.claim_for_authorization(
            payment.payment_id, "3-D Secure challenge passed; authorizing"
        )
        if claimed is None:
            return NoChange()
        three_ds = ThreeDs(
            transaction_id=stored,
            authenticated=True,
            eci=str(doc.get("eci", "")),
            authentication_value=str(doc.get("authentication_value", "")),
        )
        return await self._authorize(claimed, three_ds)

    async def _authorize(self, payment: Payment, three_ds: ThreeDs) -> Step:
        """Authorization at each routed acquirer in turn, past those that are unavailable."""
        details = kept_details(payment, CardDetails)
        token = required_detail(payment, "card_token", details.card_token)
        terms = details.emi_terms(payment.amount_paisa)
        for gateway in self._routing.route(details.brand, payment.amount_paisa):
            if not self._breaker.allow(gateway):
                await self._books.pass_over(payment.payment_id, gateway, "SKIPPED")
                continue
            if gateway != payment.provider:
                # Recorded before the call: if this process dies during it, the inquiries ask
                # the acquirer that may hold the authorization, not the one that was down.
                await self._books.switch_provider(payment.payment_id, gateway)
                payment = replace(payment, provider=gateway)
            secret = await self._vault.detokenize(
                token, payment_id=payment.payment_id, reason="authorization"
            )
            try:
                result = await self._acquirer.authorize(
                    gateway=gateway,
                    payment_id=payment.payment_id,
                    merchant_id=payment.merchant_id,
                    card=secret,
                    amount_paisa=payment.amount_paisa,
                    currency=payment.currency,
                    capture=payment.capture_method == "AUTOMATIC",
                    three_ds=three_ds,
                    emi_tenure_months=terms.tenure_months if terms else 0,
                    notes=payment.metadata,
                )
            except Unavailable:
                self._breaker.record_failure(gateway)
                await self._books.pass_over(payment.payment_id, gateway, "UNAVAILABLE")
                log.warning("acquirer unavailable; failing over", gateway=gateway)
                continue
            except ProviderTimeout:
                self._breaker.record_failure(gateway)
                return InquireLater(gateway, INQUIRY_AFTER_TIMEOUT)
            finally:
                del secret
            self._breaker.record_success(gateway)
            await self._release_cvv(token, payment.payment_id)
            return Apply(result, f"{gateway} authorization", provider=gateway)
        await self._release_cvv(token, payment.payment_id)
        return Apply(
            ProviderResult(Outcome.FAILED, failure_reason="gateways_unavailable"),
            "no acquirer available",
        )

    async def _release_cvv(self, token: str, payment_id: str) -> None:
        """The CVV served its one authorization; the vault's TTL is the backstop."""
        try:
            await self._vault.release_cvv(token, payment_id)
        except (ProviderTimeout, Unavailable) as exc:
            log.warning("could not release the CVV; its TTL will", error=str(exc))

    # A payment that exists

    async def status(self, payment: Payment) -> ProviderResult:
        if payment.status == Status.REQUIRES_ACTION:
            return ProviderResult(Outcome.PENDING)  # nothing is authorized before 3-D Secure
        return await self._acquirer.status(payment.provider, payment.payment_id)

    async def withdraw(self, payment: Payment) -> ProviderResult:
        # Nothing is authorized before 3-D Secure completes, and a challenge finished after the
        # cancel finds the payment no longer REQUIRES_ACTION.
        return await self._acquirer.status(payment.provider, payment.payment_id)

    async def capture(self, payment: Payment) -> ProviderResult:
        return await self._acquirer.capture(
            gateway=payment.provider,
            acquirer_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
            amount_paisa=payment.amount_paisa,
            currency=payment.currency,
        )

    async def void(self, payment: Payment) -> ProviderResult:
        return await self._acquirer.void(
            gateway=payment.provider,
            acquirer_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
        )

    async def refund(self, payment: Payment, refund_id: str, amount_paisa: int) -> ProviderResult:
        return await self._acquirer.refund(
            gateway=payment.provider,
            acquirer_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
            refund_id=refund_id,
            amount_paisa=amount_paisa,
            currency=payment.currency,
        )

    def late_success_is_hold(self, payment: Payment) -> bool:
        # A manual-capture card payment's success is an authorization: nothing was captured.
        return payment.capture_method == "MANUAL"
