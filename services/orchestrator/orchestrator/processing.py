"""Payment processing: starting payments at providers and applying what providers report.

Every provider outcome, whether it comes back synchronously, in a signed callback or from a
status inquiry, goes through `apply_result`, so a payment reaches the same state whichever
way the news arrives, and late or repeated news never overwrites a final status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway_core.config import Settings
from gateway_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    invalid_field,
)
from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from gateway_core.signing import verify_callback
from orchestrator.card_payments import CardPayments, RawCard
from orchestrator.domain import emi
from orchestrator.domain.fees import Pricing, compute_fee
from orchestrator.domain.states import Status
from orchestrator.domain.upi import pay_link
from orchestrator.providers import netbanking, upi_core, wallets
from orchestrator.providers.base import Outcome, ProviderResult, ProviderTimeout
from orchestrator.providers.cards import ACS_PROVIDER
from orchestrator.providers.fraud import FraudClient, FraudQuery
from orchestrator.providers.netbanking import NetBankingClient
from orchestrator.providers.upi_core import UpiCoreClient
from orchestrator.providers.wallets import WalletClient
from orchestrator.records import MerchantRecord, PaymentRecord, RefundRecord
from orchestrator.repository import NewPayment, Repository

log = get_logger(__name__)

# How long to wait before asking a provider about a payment whose outcome is unknown. A
# callback normally arrives first; the inquiry is the safety net for a lost one.
FIRST_INQUIRY_AFTER_TIMEOUT = timedelta(seconds=1)
FIRST_INQUIRY_AFTER_START = timedelta(seconds=10)
MAX_INQUIRY_INTERVAL = timedelta(seconds=30)
CALLBACK_STATUSES = frozenset({"SUCCESS", "FAILED", "EXPIRED", "PENDING"})
# Methods whose authorization can be held for a later capture.
MANUAL_CAPTURE = frozenset({"WALLET", "CARD"})


@dataclass(frozen=True)
class PaymentStart:
    """A validated request to take a payment, in domain terms."""

    merchant: MerchantRecord
    user_id: str
    amount_paisa: int
    currency: str
    method: str
    details: dict[str, str]
    description: str
    callback_url: str
    metadata: dict[str, str]
    capture_method: str
    expire_after: timedelta
    raw_card: RawCard | None = None  # CARD only; handed to the vault, never stored
    device: dict[str, str] = field(default_factory=dict)  # fingerprint_id, user_agent, ip_address


@dataclass(frozen=True)
class CallbackResult:
    applied: bool
    payment: PaymentRecord


class PaymentProcessor:
    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        *,
        upi: UpiCoreClient,
        wallet: WalletClient,
        bank: NetBankingClient,
        pricing: dict[str, Pricing],
        cards: CardPayments,
        fraud: FraudClient,
    ) -> None:
        self._repo = repo
        self._settings = settings
        self._upi = upi
        self._wallet = wallet
        self._bank = bank
        self._pricing = pricing
        self._cards = cards
        self._fraud = fraud
        # Each provider's own key, resolved now so a pod without one fails at start, not on
        # the first callback.
        self._callback_secrets = settings.callback_secrets()

    def callback_url(self, provider: str) -> str:
        base = self._settings.gateway_public_url.rstrip("/")
        return f"{base}/api/v1/provider-callbacks/{provider}"

    # Starting payments

    async def start(self, start: PaymentStart) -> PaymentRecord:
        if start.method == "UPI":
            return await self._start_upi(start)
        if start.method == "WALLET":
            return await self._start_wallet(start)
        if start.method == "NET_BANKING":
            return await self._start_net_banking(start)
        if start.method == "CARD":
            return await self._start_card(start)
        raise InvalidArgument(f"{start.method} payments are not available", reason="BAD_METHOD")

    def _new(self, start: PaymentStart, *, provider: str, payment_url: str = "") -> NewPayment:
        payment_id = new_id("PAY")
        return NewPayment(
            payment_id=payment_id,
            merchant_id=start.merchant.merchant_id,
            user_id=start.user_id,
            amount_paisa=start.amount_paisa,
            currency=start.currency,
            payment_method=start.method,
            description=start.description,
            callback_url=start.callback_url,
            metadata=start.metadata,
            payment_details=start.details,
            capture_method=start.capture_method,
            payment_url=payment_url,
            provider=provider,
            expires_at=datetime.now(UTC) + start.expire_after,
            fee=compute_fee(start.amount_paisa, self._pricing[start.method]),
        )

    async def _screen(self, start: PaymentStart, new: NewPayment, **facts: str) -> NewPayment:
        """Score the payment before any provider sees it; the verdict is stored with it."""
        assessment = await self._fraud.check(
            FraudQuery(
                payment_id=new.payment_id,
                merchant_id=new.merchant_id,
                user_id=new.user_id,
                amount_paisa=new.amount_paisa,
                currency=new.currency,
                payment_method=new.payment_method,
                email=start.metadata.get("customer_email", ""),
                merchant_category=start.merchant.category,
                device_fingerprint=start.device.get("fingerprint_id", ""),
                user_agent=start.device.get("user_agent", ""),
                ip_address=start.device.get("ip_address", ""),
                **facts,
            )
        )
        return replace(new, fraud=assessment)

    async def _create_screened(self, new: NewPayment) -> tuple[PaymentRecord, bool]:
        """Store the payment; True when fraud screening blocked it (it is FAILED already)."""
        record = await self._repo.create_payment(new)
        if new.fraud is not None and new.fraud.blocks:
            return await self._fail(record, "fraud_blocked"), True
        return record, False

    async def _start_upi(self, start: PaymentStart) -> PaymentRecord:
        vpa = start.details["vpa"]
        lookup = await self._upi.validate_vpa(vpa)
        if not lookup.exists:
            raise invalid_field(
                "payment_details.vpa", "is not registered with any UPI app", reason="VPA_NOT_FOUND"
            )
        new = self._new(start, provider=upi_core.PROVIDER_NAME)
        link = pay_link(
            payee_vpa=start.merchant.vpa,
            payee_name=start.merchant.name,
            amount_paisa=start.amount_paisa,
            currency=start.currency,
            note=start.description,
            transaction_ref=new.payment_id,
        )
        new = await self._screen(start, replace(new, payment_url=link), vpa=vpa)
        record, blocked = await self._create_screened(new)
        if blocked:
            return record
        assert new.expires_at is not None
        try:
            result = await self._upi.initiate(
                payment_id=new.payment_id,
                payer_vpa=vpa,
                payee_vpa=start.merchant.vpa,
                payee_name=start.merchant.name,
                amount_paisa=start.amount_paisa,
                currency=start.currency,
                note=start.description,
                flow=start.details.get("upi_flow", "INTENT"),
                callback_url=self.callback_url(upi_core.PROVIDER_NAME),
                expires_at=new.expires_at,
            )
        except ProviderTimeout:
            # The switch may or may not have the transaction: never fail it, ask again soon.
            return await self._await_customer(
                record,
                "the UPI switch did not answer; status inquiry scheduled",
                "",
                FIRST_INQUIRY_AFTER_TIMEOUT,
            )
        except Unavailable:
            return await self._fail(record, "provider_unavailable")
        if result.outcome != Outcome.PENDING:
            return await self.apply_result(record.payment_id, result, "UPI switch answer")
        return await self._await_customer(
            record,
            "awaiting the customer's approval in their UPI app",
            result.external_txn_id,
            FIRST_INQUIRY_AFTER_START,
        )

    async def _start_wallet(self, start: PaymentStart) -> PaymentRecord:
        wallet, phone = start.details["wallet"], start.details["phone"]
        # Balance first: an empty wallet fails cleanly, with no debit attempted.
        balance = await self._wallet.balance(wallet, phone)
        new = await self._screen(start, self._new(start, provider=wallets.provider_name(wallet)))
        record, blocked = await self._create_screened(new)
        if blocked:
            return record
        if balance < start.amount_paisa:
            return await self._fail(record, "insufficient_balance")
        offer_id = await self._wallet.best_offer(
            wallet, start.merchant.merchant_id, start.amount_paisa
        )
        try:
            result = await self._wallet.debit(
                wallet=wallet,
                phone=phone,
                payment_id=record.payment_id,
                merchant_id=start.merchant.merchant_id,
                amount_paisa=start.amount_paisa,
                currency=start.currency,
                offer_id=offer_id,
            )
        except ProviderTimeout:
            return await self._await_customer(
                record,
                "the wallet did not answer; status inquiry scheduled",
                "",
                FIRST_INQUIRY_AFTER_TIMEOUT,
            )
        return await self.apply_result(record.payment_id, result, f"{wallet} debit")

    async def _start_net_banking(self, start: PaymentStart) -> PaymentRecord:
        new = await self._screen(start, self._new(start, provider=netbanking.PROVIDER_NAME))
        record, blocked = await self._create_screened(new)
        if blocked:
            return record
        return_url = start.callback_url or f"{self._settings.gateway_public_url}/health"
        try:
            redirect = await self._bank.initiate(
                bank_code=start.details["bank_code"],
                payment_id=record.payment_id,
                merchant_id=start.merchant.merchant_id,
                amount_paisa=start.amount_paisa,
                currency=start.currency,
                return_url=return_url,
                callback_url=self.callback_url(netbanking.PROVIDER_NAME),
            )
        except (ProviderTimeout, Unavailable):
            return await self._fail(record, "provider_unavailable")
        moved = await self._repo.transition(
            record.payment_id,
            Status.REQUIRES_ACTION,
            "the customer must authorise the payment on the bank's page",
            strict=False,
            changes={
                "payment_details": {
                    **record.payment_details,
                    "redirect_url": redirect.redirect_url,
                },
                "next_inquiry_at": datetime.now(UTC) + FIRST_INQUIRY_AFTER_START,
            },
        )
        return moved.record

    async def _start_card(self, start: PaymentStart) -> PaymentRecord:
        card = await self._cards.card_for(
            merchant_id=start.merchant.merchant_id,
            user_id=start.user_id,
            token=start.details.get("card_token", ""),
            raw=start.raw_card,
        )
        emi_plan_id = start.details.get("emi_plan_id", "")
        if emi_plan_id:
            emi.choose(emi_plan_id, start.amount_paisa, card.brand, "payment_details.emi_plan_id")
        new = self._new(start, provider=self._cards.first_gateway(card, start.amount_paisa))
        new = replace(new, payment_details=self._cards.details(card, emi_plan_id))
        new = await self._screen(start, new, card_fingerprint=card.fingerprint)
        record, blocked = await self._create_screened(new)
        if blocked:
            return record
        assert new.fraud is not None
        return await self._cards.start(
            record, self.apply_result, force_challenge=new.fraud.wants_step_up
        )

    async def _await_customer(
        self, record: PaymentRecord, reason: str, external_txn_id: str, inquire_after: timedelta
    ) -> PaymentRecord:
        changes: dict[str, Any] = {"next_inquiry_at": datetime.now(UTC) + inquire_after}
        if external_txn_id:
            changes["external_txn_id"] = external_txn_id
        moved = await self._repo.transition(
            record.payment_id, Status.PENDING, reason, strict=False, changes=changes
        )
        return moved.record

    async def _fail(self, record: PaymentRecord, failure_reason: str) -> PaymentRecord:
        moved = await self._repo.transition(
            record.payment_id,
            Status.FAILED,
            failure_reason,
            strict=False,
            changes={"failure_reason": failure_reason},
        )
        return moved.record

    # Applying outcomes

    async def apply_result(
        self,
        payment_id: str,
        result: ProviderResult,
        source: str,
        extra_changes: dict[str, Any] | None = None,
    ) -> PaymentRecord:
        current = await self._repo.get_payment(payment_id, None)
        if result.outcome == Outcome.PENDING:
            return current
        changes: dict[str, Any] = {
            "gateway_response": {**current.gateway_response, **result.gateway_response},
            **(extra_changes or {}),
        }
        if result.external_txn_id:
            changes["external_txn_id"] = result.external_txn_id
        if result.outcome == Outcome.SUCCESS:
            target = (
                Status.AUTHORIZED
                if current.capture_method == "MANUAL" and current.payment_method in MANUAL_CAPTURE
                else Status.SUCCESS
            )
            changes["processed_at"] = datetime.now(UTC)
        elif result.outcome == Outcome.FAILED:
            target = Status.FAILED
            changes["failure_reason"] = result.failure_reason or "declined"
        else:
            target = Status.EXPIRED
            changes["failure_reason"] = "expired"
        moved = await self._repo.transition(
            payment_id, target, source, strict=False, changes=changes
        )
        if (
            not moved.applied
            and result.outcome == Outcome.SUCCESS
            and moved.record.status in (Status.FAILED, Status.EXPIRED, Status.CANCELLED)
        ):
            await self._reverse_late_success(moved.record)
        return moved.record

    async def _reverse_late_success(self, payment: PaymentRecord) -> None:
        """The customer paid after we gave up on the payment: send the money back."""
        log.warning(
            "late success on a closed payment; reversing",
            payment_id=payment.payment_id,
            status=payment.status,
        )
        try:
            await self._provider_refund(payment, f"REV_{payment.payment_id}", payment.amount_paisa)
        except (ProviderTimeout, Unavailable, FailedPrecondition, InvalidArgument) as exc:
            log.error("late success reversal failed", payment_id=payment.payment_id, error=str(exc))

    async def handle_callback(self, provider: str, body: bytes, signature: str) -> CallbackResult:
        """A provider's signed report, checked against the key of the provider in the path (so
        one provider's key cannot vouch for another's callbacks) and bound to the payment's
        provider and amount before anything changes."""
        secret = self._callback_secrets.get(provider)
        if secret is None:
            raise NotFound(f"no provider {provider!r} sends callbacks", reason="UNKNOWN_PROVIDER")
        verify_callback(secret, body, signature)
        doc = _parse_callback(body)
        if doc["provider"] != provider:
            raise FailedPrecondition(
                f"the callback names provider {doc['provider']!r} but came to {provider!r}'s path",
                reason="PROVIDER_MISMATCH",
            )
        payment = await self._repo.get_payment(doc["transaction_ref"], None)
        if doc["amount_paisa"] != payment.amount_paisa:
            raise FailedPrecondition(
                "the callback's amount differs from the payment's", reason="AMOUNT_MISMATCH"
            )
        if provider == ACS_PROVIDER and payment.payment_method == "CARD":
            before = payment.status
            after = await self._cards.on_authentication(payment, doc, self.apply_result)
            await self._repo.remember_callback(
                provider, str(doc["event_id"]), payment.payment_id, str(doc["status"])
            )
            return CallbackResult(applied=after.status != before, payment=after)
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
        before = payment.status
        after = await self.apply_result(payment.payment_id, result, f"{provider} callback")
        await self._repo.remember_callback(
            provider, str(doc["event_id"]), payment.payment_id, str(doc["status"])
        )
        return CallbackResult(applied=after.status != before, payment=after)

    # Status inquiry and expiry (run by the background jobs)

    async def inquire(self, payment: PaymentRecord) -> PaymentRecord:
        """Ask the provider where a payment stands; apply a final answer or ask again later."""
        try:
            result = await self._provider_status(payment)
        except (ProviderTimeout, Unavailable) as exc:
            log.info(
                "status inquiry failed; will retry", payment_id=payment.payment_id, error=str(exc)
            )
            result = ProviderResult(Outcome.PENDING)
        if result.outcome != Outcome.PENDING:
            return await self.apply_result(payment.payment_id, result, "status inquiry")
        attempts = await self._repo.inquiry_attempts(payment.payment_id)
        delay = min(timedelta(seconds=2**attempts), MAX_INQUIRY_INTERVAL)
        await self._repo.schedule_inquiry(payment.payment_id, delay)
        return payment

    async def expire(self, payment: PaymentRecord) -> PaymentRecord:
        """Close a payment past its expiry, unless the provider says it was paid after all."""
        try:
            result = await self._provider_status(payment)
        except (ProviderTimeout, Unavailable):
            result = ProviderResult(Outcome.PENDING)
        if result.outcome in (Outcome.SUCCESS, Outcome.FAILED):
            return await self.apply_result(payment.payment_id, result, "status inquiry at expiry")
        return await self.apply_result(
            payment.payment_id, ProviderResult(Outcome.EXPIRED), "expired"
        )

    async def _provider_status(self, payment: PaymentRecord) -> ProviderResult:
        details = payment.payment_details
        if payment.payment_method == "UPI":
            return await self._upi.status(payment.payment_id)
        if payment.payment_method == "WALLET":
            return await self._wallet.status(details["wallet"], payment.payment_id)
        if payment.payment_method == "NET_BANKING":
            return await self._bank.status(details["bank_code"], payment.payment_id)
        if payment.payment_method == "CARD" and payment.status != Status.REQUIRES_ACTION:
            return await self._cards.status(payment)
        return ProviderResult(Outcome.PENDING)

    # Merchant actions

    async def capture(
        self, payment_id: str, merchant_id: str | None, amount_paisa: int
    ) -> PaymentRecord:
        payment = await self._repo.get_payment(payment_id, merchant_id)
        if payment.status != Status.AUTHORIZED:
            raise FailedPrecondition(
                f"only AUTHORIZED payments can be captured; this one is {payment.status}",
                reason="PAYMENT_NOT_AUTHORIZED",
            )
        if amount_paisa and amount_paisa != payment.amount_paisa:
            raise invalid_field(
                "amount_paisa",
                f"must equal the authorized {payment.amount_paisa} paisa (no partial capture)",
            )
        if payment.payment_method == "CARD":
            await self._cards.capture(payment)
        moved = await self._repo.transition(
            payment_id,
            Status.SUCCESS,
            "captured by the merchant",
            strict=True,
            merchant_id=merchant_id,
            changes={"processed_at": datetime.now(UTC)},
        )
        return moved.record

    async def cancel(self, payment_id: str, merchant_id: str | None, reason: str) -> PaymentRecord:
        payment = await self._repo.get_payment(payment_id, merchant_id)
        if payment.status == Status.AUTHORIZED and payment.payment_method == "CARD":
            await self._cards.void(payment)
        elif payment.status == Status.AUTHORIZED:
            # The wallet holds the customer's money: give it back before closing.
            await self._provider_refund(payment, f"VOID_{payment_id}", payment.amount_paisa)
        moved = await self._repo.transition(
            payment_id,
            Status.CANCELLED,
            reason or "cancelled by the merchant",
            strict=True,
            merchant_id=merchant_id,
            changes={"next_inquiry_at": None},
        )
        if not moved.applied:
            raise FailedPrecondition("the payment is already cancelled", reason="ALREADY_CANCELLED")
        return moved.record

    async def refund(
        self,
        payment_id: str,
        merchant_id: str | None,
        *,
        amount_paisa: int | None,
        reason: str,
        metadata: dict[str, str],
    ) -> RefundRecord:
        payment, refund = await self._repo.reserve_refund(
            refund_id=new_id("RFD"),
            payment_id=payment_id,
            merchant_id=merchant_id,
            amount_paisa=amount_paisa,
            reason=reason,
            metadata=metadata,
        )
        return await self.settle_refund(payment, refund)

    async def settle_refund(self, payment: PaymentRecord, refund: RefundRecord) -> RefundRecord:
        """Ask the provider to pay a PENDING refund; providers dedupe by refund id, so a
        retry after a timeout is safe. A timeout leaves it PENDING for the retry job."""
        try:
            result = await self._provider_refund(payment, refund.refund_id, refund.amount_paisa)
        except (ProviderTimeout, Unavailable) as exc:
            log.info("refund pending at the provider", refund_id=refund.refund_id, error=str(exc))
            return refund
        except (FailedPrecondition, InvalidArgument) as exc:
            result = ProviderResult(Outcome.FAILED, failure_reason=exc.reason.lower())
        if result.outcome == Outcome.PENDING:
            return refund
        _, settled = await self._repo.finish_refund(
            refund.refund_id,
            processed=result.outcome == Outcome.SUCCESS,
            external_refund_id=result.external_txn_id,
            failure_reason=result.failure_reason,
        )
        return settled

    async def _provider_refund(
        self, payment: PaymentRecord, refund_id: str, amount_paisa: int
    ) -> ProviderResult:
        details = payment.payment_details
        if payment.payment_method == "CARD":
            return await self._cards.refund(payment, refund_id, amount_paisa)
        if payment.payment_method == "UPI":
            return await self._upi.refund(
                payment_id=payment.payment_id, refund_id=refund_id, amount_paisa=amount_paisa
            )
        if payment.payment_method == "WALLET":
            return await self._wallet.refund(
                wallet=details["wallet"],
                wallet_txn_id=payment.external_txn_id,
                payment_id=payment.payment_id,
                refund_id=refund_id,
                amount_paisa=amount_paisa,
                currency=payment.currency,
            )
        return await self._bank.refund(
            bank_code=details["bank_code"],
            payment_id=payment.payment_id,
            refund_id=refund_id,
            amount_paisa=amount_paisa,
            currency=payment.currency,
        )


def _parse_callback(body: bytes) -> dict[str, Any]:
    """The provider's document, checked for the fields we act on."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise invalid_field("body", "must be a JSON document") from exc
    if not isinstance(doc, dict):
        raise invalid_field("body", "must be a JSON object")
    for name in ("event_id", "provider", "transaction_ref", "status"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise invalid_field(f"body.{name}", "is required")
    if doc["status"] not in CALLBACK_STATUSES:
        raise invalid_field("body.status", f"must be one of {sorted(CALLBACK_STATUSES)}")
    # Every report is bound to the amount it is about: one without an amount proves nothing.
    amount = doc.get("amount_paisa")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise invalid_field("body.amount_paisa", "is required: a positive whole number of paisa")
    return doc
