"""Card payments: vault token → 3-D Secure → authorization at a routed acquirer.

The orchestrator never stores a card number: a raw card is tokenized by the vault first, and a
PAN exists here only inside one detokenize answer handed straight to an acquirer call.

Failover moves to the next acquirer only when one is *unavailable* (the request was never
processed). A timeout may have charged the card, so it is settled by status inquiry at that
same acquirer instead, never by trying another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway_core.errors import FailedPrecondition, PermissionDenied, Unavailable
from gateway_core.logging import get_logger
from orchestrator.domain import emi
from orchestrator.domain.routing import CircuitBreaker, RoutingTable
from orchestrator.domain.states import Status
from orchestrator.providers.base import Outcome, ProviderResult, ProviderTimeout
from orchestrator.providers.cards import ACS_PROVIDER, AcquirerClient, ThreeDs
from orchestrator.providers.vault import CardMeta, VaultClient
from orchestrator.records import PaymentRecord
from orchestrator.repository import Repository

log = get_logger(__name__)
CARD_FIELD = "payment_details.card."
INQUIRY_AFTER_TIMEOUT = timedelta(seconds=2)


@dataclass(frozen=True)
class RawCard:
    """A card as the merchant sent it. Lives only for the tokenize call; never stored."""

    card_number: str
    expiry_month: str
    expiry_year: str
    cvv: str
    holder_name: str

    def __repr__(self) -> str:  # a stray log line must not print the number
        return "RawCard(****)"


# Applies a provider's answer to a payment (PaymentProcessor.apply_result).
ApplyResult = Callable[[str, ProviderResult, str, dict[str, Any]], Awaitable[PaymentRecord]]


class CardPayments:
    def __init__(
        self,
        repo: Repository,
        vault: VaultClient,
        acquirer: AcquirerClient,
        routing: RoutingTable,
        breaker: CircuitBreaker,
        *,
        callback_url: str,
        default_return_url: str,
    ) -> None:
        self._repo = repo
        self._vault = vault
        self._acquirer = acquirer
        self._routing = routing
        self._breaker = breaker
        self._callback_url = callback_url
        self._default_return_url = default_return_url

    async def card_for(
        self, *, merchant_id: str, user_id: str, token: str, raw: RawCard | None
    ) -> CardMeta:
        """The vault card a payment uses: tokenize a raw card, or look up a saved token."""
        if raw is not None:
            return await self._vault.tokenize(
                merchant_id=merchant_id,
                user_id=user_id,
                card_number=raw.card_number,
                expiry_month=raw.expiry_month,
                expiry_year=raw.expiry_year,
                cvv=raw.cvv,
                holder_name=raw.holder_name,
                field_prefix=CARD_FIELD,
            )
        card = await self._vault.card(token)
        if card.merchant_id != merchant_id:
            raise PermissionDenied(
                "payment_details.card_token belongs to another merchant", reason="TOKEN_NOT_YOURS"
            )
        return card

    def details(self, card: CardMeta, emi_plan_id: str) -> dict[str, str]:
        """What the payment stores about its card: a token and display data only."""
        stored = {"card_token": card.token, "last4": card.last4, "brand": card.brand}
        if emi_plan_id:
            stored["emi_plan_id"] = emi_plan_id
        return stored

    def first_gateway(self, card: CardMeta, amount_paisa: int) -> str:
        return self._routing.route(card.brand, amount_paisa)[0]

    async def start(
        self, record: PaymentRecord, apply: ApplyResult, *, force_challenge: bool = False
    ) -> PaymentRecord:
        """3-D Secure first (a fraud REVIEW forces a challenge); frictionless goes straight on
        to authorization."""
        token = record.payment_details["card_token"]
        secret = await self._vault.detokenize(
            token, payment_id=record.payment_id, reason="3ds_authentication"
        )
        try:
            three_ds = await self._acquirer.authenticate(
                gateway=record.provider,
                payment_id=record.payment_id,
                merchant_id=record.merchant_id,
                card=secret,
                amount_paisa=record.amount_paisa,
                currency=record.currency,
                force_challenge=force_challenge,
                return_url=record.callback_url or self._default_return_url,
                callback_url=self._callback_url,
            )
        except (ProviderTimeout, Unavailable):
            return await apply(
                record.payment_id,
                ProviderResult(Outcome.FAILED, failure_reason="authentication_unavailable"),
                "3-D Secure unavailable",
                {},
            )
        finally:
            del secret
        if three_ds.challenge_url:
            moved = await self._repo.transition(
                record.payment_id,
                Status.REQUIRES_ACTION,
                "the cardholder must complete a 3-D Secure challenge",
                strict=False,
                changes={
                    "payment_details": {
                        **record.payment_details,
                        "redirect_url": three_ds.challenge_url,
                        "three_ds_transaction_id": three_ds.transaction_id,
                    }
                },
            )
            return moved.record
        if not three_ds.authenticated:
            return await apply(
                record.payment_id,
                ProviderResult(Outcome.FAILED, failure_reason="authentication_failed"),
                "3-D Secure failed",
                {},
            )
        return await self.authorize(record, three_ds, apply)

    async def on_authentication(
        self, payment: PaymentRecord, doc: dict[str, Any], apply: ApplyResult
    ) -> PaymentRecord:
        """The ACS's signed report of a challenge. Only the first report proceeds, and only one
        about this payment's own challenge: the 3-D Secure transaction id stored when the
        payment went to REQUIRES_ACTION (the provider and the amount are checked by the caller,
        PaymentProcessor.handle_callback)."""
        stored = payment.payment_details.get("three_ds_transaction_id", "")
        if not stored or doc.get("three_ds_transaction_id") != stored:
            raise FailedPrecondition(
                "the callback's 3-D Secure transaction is not this payment's challenge",
                reason="THREE_DS_TRANSACTION_MISMATCH",
            )
        if payment.status != Status.REQUIRES_ACTION:
            return payment
        if doc["status"] != "SUCCESS":
            return await apply(
                payment.payment_id,
                ProviderResult(Outcome.FAILED, failure_reason="authentication_failed"),
                "3-D Secure challenge failed",
                {},
            )
        # Claim the payment: a repeated callback finds it PENDING and stops here.
        claimed = await self._repo.transition(
            payment.payment_id,
            Status.PENDING,
            "3-D Secure challenge passed; authorizing",
            strict=False,
        )
        if not claimed.applied:
            return claimed.record
        three_ds = ThreeDs(
            transaction_id=stored,
            authenticated=True,
            eci=str(doc.get("eci", "")),
            authentication_value=str(doc.get("authentication_value", "")),
        )
        return await self.authorize(claimed.record, three_ds, apply)

    async def authorize(
        self, payment: PaymentRecord, three_ds: ThreeDs, apply: ApplyResult
    ) -> PaymentRecord:
        token = payment.payment_details["card_token"]
        brand = payment.payment_details.get("brand", "")
        tenure = 0
        if payment.payment_details.get("emi_plan_id"):
            plan = emi.choose(
                payment.payment_details["emi_plan_id"],
                payment.amount_paisa,
                brand,
                "payment_details.emi_plan_id",
            )
            tenure = plan.tenure_months
        unavailable: list[str] = []
        for gateway in self._routing.route(brand, payment.amount_paisa):
            if not self._breaker.allow(gateway):
                unavailable.append(f"{gateway}(circuit open)")
                continue
            if gateway != payment.provider:
                # Recorded before the call: if this process dies during it, the inquiries ask
                # the acquirer that may hold the authorization, not the one that was down.
                await self._repo.update_details(payment.payment_id, {"provider": gateway})
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
                    emi_tenure_months=tenure,
                    notes=payment.metadata,
                )
            except Unavailable:
                self._breaker.record_failure(gateway)
                unavailable.append(gateway)
                log.warning("acquirer unavailable; failing over", gateway=gateway)
                continue
            except ProviderTimeout:
                self._breaker.record_failure(gateway)
                await self._repo.update_details(
                    payment.payment_id,
                    {
                        "provider": gateway,
                        "next_inquiry_at": datetime.now(UTC) + INQUIRY_AFTER_TIMEOUT,
                    },
                )
                return await self._repo.get_payment(payment.payment_id, None)
            finally:
                del secret
            self._breaker.record_success(gateway)
            await self._release_cvv(token, payment.payment_id)
            extra: dict[str, Any] = {"provider": gateway}
            if unavailable:
                result.gateway_response["failed_over_from"] = ",".join(unavailable)
            return await apply(payment.payment_id, result, f"{gateway} authorization", extra)
        await self._release_cvv(token, payment.payment_id)
        return await apply(
            payment.payment_id,
            ProviderResult(
                Outcome.FAILED,
                gateway_response={"failed_over_from": ",".join(unavailable)},
                failure_reason="gateways_unavailable",
            ),
            "no acquirer available",
            {},
        )

    async def capture(self, payment: PaymentRecord) -> ProviderResult:
        return await self._acquirer.capture(
            gateway=payment.provider,
            acquirer_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
            amount_paisa=payment.amount_paisa,
            currency=payment.currency,
        )

    async def void(self, payment: PaymentRecord) -> ProviderResult:
        return await self._acquirer.void(
            gateway=payment.provider,
            acquirer_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
        )

    async def refund(
        self, payment: PaymentRecord, refund_id: str, amount_paisa: int
    ) -> ProviderResult:
        return await self._acquirer.refund(
            gateway=payment.provider,
            acquirer_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
            refund_id=refund_id,
            amount_paisa=amount_paisa,
            currency=payment.currency,
        )

    async def status(self, payment: PaymentRecord) -> ProviderResult:
        return await self._acquirer.status(payment.provider, payment.payment_id)

    async def _release_cvv(self, token: str, payment_id: str) -> None:
        """The CVV served its one authorization; the vault's TTL is the backstop."""
        try:
            await self._vault.release_cvv(token, payment_id)
        except (ProviderTimeout, Unavailable) as exc:
            log.warning("could not release the CVV; its TTL will", error=str(exc))


__all__ = ["ACS_PROVIDER", "CardPayments", "RawCard"]
