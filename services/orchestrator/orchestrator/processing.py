"""Payment processing: starting payments at providers, applying what providers report, and
the merchant's operations on a payment (capture, cancel, refund).

Every provider outcome, whether it comes back synchronously, in a signed callback or from a
status inquiry, goes through `apply_result`, so a payment reaches the same state whichever
way the news arrives, and late or repeated news never overwrites a final status.

An operation that calls a provider on a payment that already exists (capture, cancel, void)
first holds the payment in CAPTURING or CANCELLING (`Repository.claim_operation`): of two
concurrent operations exactly one gets it. A provider that does not answer leaves the payment
held; the status inquiry repeats the operation (providers dedupe it) until the outcome is
known, so a payment is never capturable while its money may already be back with the customer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from gateway_core.admission import Admission
from gateway_core.errors import (
    Aborted,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    Unavailable,
    invalid_field,
)
from gateway_core.fees import Pricing, compute_fee
from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from gateway_core.signing import verify_callback
from orchestrator.connectors.base import (
    Apply,
    AwaitCustomer,
    Fail,
    InquireLater,
    NoChange,
    PaymentConnector,
    Prepared,
    RequestDetails,
    RequireAction,
    StartRequest,
    Step,
)
from orchestrator.connectors.registry import Connectors
from orchestrator.domain.payment import Merchant, Payment, Refund
from orchestrator.domain.states import CLOSED_UNPAID, IN_OPERATION, OPEN, Status
from orchestrator.providers.base import Outcome, ProviderNotFound, ProviderResult, ProviderTimeout
from orchestrator.providers.fraud import FraudClient, FraudQuery
from orchestrator.repository import NewPayment, Repository
from orchestrator.settings import Settings

log = get_logger(__name__)

# How long to wait before asking a provider about a payment whose outcome is unknown is the
# connector's to say (a callback normally arrives first; the inquiry is the safety net).
MAX_INQUIRY_INTERVAL = timedelta(seconds=30)
# A payment whose handler dies before any provider answered is found by the inquiry job.
INQUIRY_SAFETY_NET = timedelta(seconds=30)
# Undos run at once at most: a storm of refused card payments must not become one of vault calls.
UNDO_CONCURRENCY = 4
# An operation held at the provider is looked at again this soon if its caller goes away.
OPERATION_INQUIRY_AFTER = timedelta(seconds=5)
# Longer than any payment's first provider calls can take (3-D Secure, then authorization at
# each routed acquirer, each with its deadline). Until then a provider's "no such payment" may
# only mean our request has not reached it yet, so it closes nothing.
START_WINDOW = timedelta(seconds=60)
# A held authorization whose void the provider refuses at its deadline is tried again this much
# later (and an operator alerted), not every backoff round.
REFUSED_VOID_RETRY = timedelta(days=1)
CALLBACK_STATUSES = frozenset({"SUCCESS", "FAILED", "EXPIRED", "PENDING"})
REASON_NOT_AUTHORIZED = "PAYMENT_NOT_AUTHORIZED"
REASON_NOT_CANCELLABLE = "PAYMENT_NOT_CANCELLABLE"


VOIDS_REFUSED = Counter(
    "orchestrator_expired_authorization_voids_refused_total",
    "Authorizations past AUTHORIZATION_TTL whose void the provider refused (needs an operator)",
)
REVERSALS_FAILED = Counter(
    "orchestrator_reversals_failed_total",
    "Reversals the provider refused: money a closed payment took is still held (needs an operator)",
)


class ProviderRefused(Exception):
    """The provider answered no to an operation on a held authorization (capture, void)."""

    def __init__(self, operation: str, code: str) -> None:
        super().__init__(f"the provider refused the {operation}: {code}")
        self.operation = operation
        self.code = code


@dataclass(frozen=True)
class PaymentStart:
    """A validated request to take a payment, in domain terms."""

    merchant: Merchant
    user_id: str
    amount_paisa: int
    currency: str
    method: str  # the PaymentMethod name, which names its connector
    details: RequestDetails  # the connector's typed request details (a raw card is never stored)
    description: str
    callback_url: str
    metadata: dict[str, str]
    capture_method: str
    expire_after: timedelta
    device: dict[str, str] = field(default_factory=dict)  # fingerprint_id, user_agent, ip_address
    idempotency_key: str = ""  # the merchant's, when it sent one


@dataclass(frozen=True)
class CallbackResult:
    applied: bool
    payment: Payment


class RepositoryBooks:
    """What a connector may write mid-flow (connectors.base.PaymentBooks)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def switch_provider(self, payment_id: str, provider: str) -> None:
        await self._repo.switch_provider(payment_id, provider)

    async def pass_over(self, payment_id: str, provider: str, status: str) -> None:
        await self._repo.pass_over(payment_id, provider, status)

    async def claim_for_authorization(self, payment_id: str, reason: str) -> Payment | None:
        claimed = await self._repo.transition(payment_id, Status.PENDING, reason, strict=False)
        return claimed.record if claimed.applied else None


class PaymentProcessor:
    """The flow engine: method-agnostic. What differs by method is asked of the payment's
    connector (`orchestrator.connectors`), which answers in `Step`s this class applies."""

    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        *,
        connectors: Connectors,
        pricing: dict[str, Pricing],
        fraud: FraudClient,
        admission: Admission,
    ) -> None:
        self._repo = repo
        self._settings = settings
        self._connectors = connectors
        self._pricing = pricing
        self._fraud = fraud
        self._admission = admission
        # Each provider's own key, resolved now so a pod without one fails at start, not on
        # the first callback.
        self._callback_secrets = settings.callback_secrets()
        self._undoing: set[asyncio.Task[None]] = set()
        self._undo_slots = asyncio.Semaphore(UNDO_CONCURRENCY)

    @property
    def pricing(self) -> dict[str, Pricing]:
        return self._pricing

    # Starting payments

    async def start(self, start: PaymentStart) -> Payment:
        """Prepare at the connector (refusals create nothing), store the screened payment,
        then start it at the provider.

        Screening and storing, the gateway's own work, hold a place of the admission
        (gateway_core.admission): past saturation a new payment is refused here, Unavailable
        with reason OVERLOADED, before anything is stored, and what preparing made for it
        (a card put in the vault) is undone. Preparing (which may ask the provider to look up
        a VPA or a balance) and starting at the provider do not: a slow bank is not this
        process's load."""
        connector = self._connectors[start.method]
        request = StartRequest(
            payment_id=new_id("PAY"),
            merchant=start.merchant,
            user_id=start.user_id,
            amount_paisa=start.amount_paisa,
            currency=start.currency,
            details=start.details,
            description=start.description,
            callback_url=start.callback_url,
            metadata=start.metadata,
        )
        prepared = await connector.prepare(request)
        screened = False
        try:
            now = datetime.now(UTC)
            new = NewPayment(
                payment_id=request.payment_id,
                merchant_id=start.merchant.merchant_id,
                user_id=start.user_id,
                amount_paisa=start.amount_paisa,
                currency=start.currency,
                payment_method=start.method,
                description=start.description,
                callback_url=start.callback_url,
                metadata=start.metadata,
                payment_details=prepared.details,
                capture_method=start.capture_method,
                payment_url=prepared.payment_url,
                provider=prepared.provider,
                expires_at=now + start.expire_after,
                fee=compute_fee(start.amount_paisa, self._pricing[start.method]),
                next_inquiry_at=now + INQUIRY_SAFETY_NET,
            )
            with self._admission.admit():
                new = await self._screen(start, new, prepared.fraud_facts)
                screened = True
                record = await self._repo.create_payment(new)
        except BaseException:
            # Refused at the door or shed at the fraud check: the payment will never exist.
            # Not once screened: a failed insert may still have committed.
            if not screened:
                self._abandon(prepared)
            raise
        if new.fraud is not None and new.fraud.blocks:
            return await self._fail(record, "fraud_blocked")
        try:
            step = await connector.initiate(
                request,
                record,
                prepared,
                step_up=new.fraud is not None and new.fraud.wants_step_up,
            )
        except (InvalidArgument, FailedPrecondition) as exc:
            return await self._refused(record, exc)
        return await self._take(record, step)

    def _abandon(self, prepared: Prepared) -> None:
        """Undo what preparing made for a payment refused before it was stored, in the
        background: the refusal (a 503 past saturation) goes back at once, and its
        Idempotency-Key is free for the retry."""
        if prepared.undo is not None:
            task = asyncio.get_running_loop().create_task(self._undo(prepared.undo))
            self._undoing.add(task)
            task.add_done_callback(self._undoing.discard)

    async def _undo(self, undo: Callable[[], Awaitable[None]]) -> None:
        """Best effort: if it fails, what preparing made stays behind unused (a vault token no
        payment names)."""
        async with self._undo_slots:
            try:
                await undo()
            except Exception as exc:
                log.warning("could not undo a refused payment's preparation", error=str(exc))

    async def drain(self, grace_seconds: float = 10.0) -> None:
        """Let the undos under way finish (a shutdown hook)."""
        if self._undoing:
            await asyncio.wait(set(self._undoing), timeout=grace_seconds)

    async def _screen(
        self, start: PaymentStart, new: NewPayment, facts: Mapping[str, str]
    ) -> NewPayment:
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
                attempt_key=start.idempotency_key,
                **facts,
            )
        )
        return replace(new, fraud=assessment)

    async def _take(self, payment: Payment, step: Step) -> Payment:
        """Do what a connector asked."""
        if isinstance(step, Apply):
            extra = {"provider": step.provider} if step.provider else {}
            return await self.apply_result(payment.payment_id, step.result, step.source, extra)
        if isinstance(step, AwaitCustomer):
            changes = {"external_txn_id": step.external_txn_id} if step.external_txn_id else {}
            moved = await self._repo.transition(
                payment.payment_id,
                Status.PENDING,
                step.reason,
                strict=False,
                changes=changes,
                inquire_after=step.inquire_after,
            )
            return moved.record
        if isinstance(step, RequireAction):
            moved = await self._repo.transition(
                payment.payment_id,
                Status.REQUIRES_ACTION,
                step.reason,
                strict=False,
                changes={"payment_details": step.details},
                inquire_after=step.inquire_after,
            )
            return moved.record
        if isinstance(step, Fail):
            return await self._fail(payment, step.failure_reason)
        if isinstance(step, InquireLater):
            await self._repo.update_details(
                payment.payment_id,
                {"provider": step.provider, "next_inquiry_at": datetime.now(UTC) + step.after},
            )
        assert isinstance(step, InquireLater | NoChange)
        return await self._repo.get_payment(payment.payment_id, None)

    async def _fail(self, record: Payment, failure_reason: str) -> Payment:
        moved = await self._repo.transition(
            record.payment_id,
            Status.FAILED,
            failure_reason,
            strict=False,
            changes={"failure_reason": failure_reason},
            only_from=OPEN,
        )
        return moved.record

    async def _refused(self, record: Payment, error: GatewayError) -> Payment:
        """The provider refused to start the payment outright: nothing was taken."""
        log.warning(
            "provider refused the payment",
            payment_id=record.payment_id,
            reason=error.reason,
            error=error.message,
        )
        return await self._fail(record, "provider_rejected")

    # Applying outcomes

    async def apply_result(
        self,
        payment_id: str,
        result: ProviderResult,
        source: str,
        extra_changes: dict[str, Any] | None = None,
    ) -> Payment:
        """Apply a provider's outcome to an open payment. A success reported for a payment
        the gateway has closed (or is cancelling) is reversed: the customer gets it back."""
        current = await self._repo.get_payment(payment_id, None)
        if result.outcome in (Outcome.PENDING, Outcome.NOT_FOUND):
            return current
        changes: dict[str, Any] = {
            "gateway_response": {**current.gateway_response, **result.gateway_response},
            **(extra_changes or {}),
        }
        if result.external_txn_id:
            changes["external_txn_id"] = result.external_txn_id
        if result.outcome == Outcome.SUCCESS:
            connector = self._connectors[current.payment_method]
            if current.capture_method == "MANUAL" and connector.manual_capture:
                target = Status.AUTHORIZED
                # The capture deadline: past it the authorization is voided (jobs.expire).
                changes["expires_at"] = datetime.now(UTC) + self._settings.authorization_ttl
            else:
                target = Status.SUCCESS
            changes["processed_at"] = datetime.now(UTC)
        elif result.outcome == Outcome.FAILED:
            target = Status.FAILED
            changes["failure_reason"] = result.failure_reason or "declined"
        else:
            target = Status.EXPIRED
            changes["failure_reason"] = "expired"
        moved = await self._repo.transition(
            payment_id, target, source, strict=False, changes=changes, only_from=OPEN
        )
        if not moved.applied and result.outcome == Outcome.SUCCESS and _unpaid(moved.record):
            return await self._reverse(moved.record, result, source, extra_changes or {})
        return moved.record

    async def _reverse(
        self,
        payment: Payment,
        result: ProviderResult,
        source: str,
        extra_changes: dict[str, Any],
    ) -> Payment:
        """The customer paid after the gateway closed the payment: give the money back, and
        book it, so the gateway's books and the provider's agree."""
        log.warning(
            "late success on a closed payment; reversing",
            payment_id=payment.payment_id,
            status=payment.status,
            source=source,
        )
        changes: dict[str, Any] = {
            "gateway_response": {
                **payment.gateway_response,
                **result.gateway_response,
                "late_success": source,
            },
            **{k: v for k, v in extra_changes.items() if k == "provider"},
        }
        if result.external_txn_id:
            changes["external_txn_id"] = result.external_txn_id
        reason = f"{source}: the customer paid after the payment was closed; reversed"
        if self._connector(payment).late_success_is_hold(payment):
            return await self._release_late_authorization(payment, changes, reason)
        closed, refund = await self._repo.record_reversal(
            payment.payment_id, f"REV_{payment.payment_id}", reason, changes
        )
        if refund is not None:
            await self.settle_refund(closed, refund)
        return await self._repo.get_payment(payment.payment_id, None)

    async def _release_late_authorization(
        self, payment: Payment, changes: dict[str, Any], reason: str
    ) -> Payment:
        """An authorization only (nothing captured): voiding it is the whole reversal."""
        held = replace(
            payment,
            provider=changes.get("provider", payment.provider),
            external_txn_id=changes.get("external_txn_id", payment.external_txn_id),
        )
        try:
            result = await self._connector(payment).void(held)
        except (ProviderTimeout, Unavailable, ProviderNotFound) as exc:
            log.error(
                "late authorization not voided; the issuer's hold will lapse",
                payment_id=payment.payment_id,
                error=str(exc),
            )
        else:
            if result.outcome != Outcome.SUCCESS:
                log.error(
                    "late authorization void refused",
                    payment_id=payment.payment_id,
                    failure_reason=result.failure_reason,
                )
        if payment.status == Status.CANCELLING:
            await self._repo.transition(
                payment.payment_id,
                Status.CANCELLED,
                reason,
                strict=False,
                changes={"gateway_response": changes["gateway_response"]},
                only_from=frozenset({Status.CANCELLING}),
            )
        return await self._repo.get_payment(payment.payment_id, None)

    def authenticate_callback(self, provider: str, body: bytes, signature: str) -> dict[str, Any]:
        """A provider's signed document, checked against the key of the provider in the path
        (so one provider's key cannot vouch for another's callbacks), and naming that provider.
        Unauthenticated (401) for a forged or stale signature: nothing is read before it."""
        secret = self._callback_secrets.get(provider)
        if secret is None:
            raise NotFound(f"no provider {provider!r} sends callbacks", reason="UNKNOWN_PROVIDER")
        verify_callback(secret, body, signature)
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise invalid_field("body", "must be a JSON document") from exc
        if not isinstance(doc, dict):
            raise invalid_field("body", "must be a JSON object")
        for name in ("event_id", "provider"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise invalid_field(f"body.{name}", "is required")
        if doc["provider"] != provider:
            raise FailedPrecondition(
                f"the callback names provider {doc['provider']!r} but came to {provider!r}'s path",
                reason="PROVIDER_MISMATCH",
            )
        return doc

    async def handle_callback(self, provider: str, doc: dict[str, Any]) -> CallbackResult:
        """A provider's authenticated report about a payment (`authenticate_callback`), bound
        to the payment's provider and amount before anything changes."""
        doc = _parse_callback(doc)
        payment = await self._repo.get_payment(doc["transaction_ref"], None)
        if doc["amount_paisa"] != payment.amount_paisa:
            raise FailedPrecondition(
                "the callback's amount differs from the payment's", reason="AMOUNT_MISMATCH"
            )
        before = payment.status
        step = await self._connector(payment).on_callback(payment, provider, doc)
        after = await self._take(payment, step)
        await self._repo.remember_callback(
            provider, str(doc["event_id"]), payment.payment_id, str(doc["status"])
        )
        return CallbackResult(applied=after.status != before, payment=after)

    # Merchant actions

    async def capture(self, payment_id: str, merchant_id: str | None, amount_paisa: int) -> Payment:
        payment = await self._repo.get_payment(payment_id, merchant_id)
        if amount_paisa and amount_paisa != payment.amount_paisa:
            raise invalid_field(
                "amount_paisa",
                f"must equal the authorized {payment.amount_paisa} paisa (no partial capture)",
            )
        held = await self._repo.claim_operation(
            payment_id,
            merchant_id,
            operation="CAPTURE",
            allowed_from=frozenset({Status.AUTHORIZED}),
            refusal=lambda status: Aborted(
                f"only AUTHORIZED payments can be captured; this one is {status}",
                reason=REASON_NOT_AUTHORIZED,
                metadata={"status": status},
            ),
            reason="captured by the merchant",
            inquire_after=OPERATION_INQUIRY_AFTER,
        )
        try:
            return await self._finish_capture(held)
        except ProviderRefused as refused:
            raise FailedPrecondition(
                f"the provider refused the capture ({refused.code}); the payment is still "
                "AUTHORIZED",
                reason="CAPTURE_REFUSED",
                metadata={"provider_code": refused.code},
            ) from refused

    async def cancel(self, payment_id: str, merchant_id: str | None, reason: str) -> Payment:
        held = await self._repo.claim_operation(
            payment_id,
            merchant_id,
            operation="CANCEL",
            allowed_from=OPEN | {Status.AUTHORIZED},
            refusal=lambda status: Aborted(
                f"a payment in status {status} cannot be cancelled",
                reason=REASON_NOT_CANCELLABLE,
                metadata={"status": status},
            ),
            reason=reason or "cancelled by the merchant",
            inquire_after=OPERATION_INQUIRY_AFTER,
        )
        try:
            return await self._finish_cancel(held)
        except ProviderRefused as refused:
            raise FailedPrecondition(
                f"the provider refused to release the authorization ({refused.code}); the "
                "payment is still AUTHORIZED",
                reason="VOID_REFUSED",
                metadata={"provider_code": refused.code},
            ) from refused

    async def _finish_capture(self, payment: Payment) -> Payment:
        """Capture a CAPTURING payment at the provider (again, when resolving: providers
        dedupe). Unknown outcome: it stays CAPTURING. Refused: back to AUTHORIZED."""
        try:
            result = await self._connector(payment).capture(payment)
        except (ProviderTimeout, Unavailable) as exc:
            log.warning(
                "capture outcome unknown; held for inquiry",
                payment_id=payment.payment_id,
                error=str(exc),
            )
            return payment
        except ProviderNotFound:
            result = ProviderResult(Outcome.FAILED, failure_reason="not_found_at_provider")
        capturing = frozenset({Status.CAPTURING})
        if result.outcome == Outcome.SUCCESS:
            moved = await self._repo.transition(
                payment.payment_id,
                Status.SUCCESS,
                "captured at the provider",
                strict=False,
                changes={"processed_at": datetime.now(UTC)},
                only_from=capturing,
            )
            return moved.record
        await self._repo.transition(
            payment.payment_id,
            Status.AUTHORIZED,
            f"the provider refused the capture: {result.failure_reason}",
            strict=False,
            only_from=capturing,
        )
        raise ProviderRefused("capture", result.failure_reason)

    async def _finish_cancel(self, payment: Payment) -> Payment:
        """Cancel a CANCELLING payment at the provider, then close it. A held authorization is
        voided (refused: back to AUTHORIZED); an open payment is withdrawn, and if the customer
        had paid already the money is reversed. Unknown outcome: it stays CANCELLING."""
        target = Status.EXPIRED if payment.operation == "EXPIRE" else Status.CANCELLED
        cancelling = frozenset({Status.CANCELLING})
        held = payment.operation_from == Status.AUTHORIZED
        try:
            result = await (
                self._connector(payment).void(payment) if held else self._provider_cancel(payment)
            )
        except (ProviderTimeout, Unavailable) as exc:
            log.warning(
                "cancel outcome unknown; held for inquiry",
                payment_id=payment.payment_id,
                error=str(exc),
            )
            return payment
        except ProviderNotFound:
            # The provider holds no such authorization: nothing to release.
            result = ProviderResult(Outcome.SUCCESS)
        if held and result.outcome != Outcome.SUCCESS:
            await self._repo.transition(
                payment.payment_id,
                Status.AUTHORIZED,
                f"the provider refused the void: {result.failure_reason}",
                strict=False,
                only_from=cancelling,
            )
            raise ProviderRefused("void", result.failure_reason)
        if not held and result.outcome == Outcome.SUCCESS:
            return await self._reverse(payment, result, "cancel", {})
        if not held and (
            result.outcome == Outcome.PENDING
            or (result.outcome == Outcome.NOT_FOUND and _may_still_start(payment))
        ):
            return payment  # the provider has it open, or may yet receive it: ask again
        moved = await self._repo.transition(
            payment.payment_id,
            target,
            "voided at the provider" if held else "withdrawn at the provider",
            strict=False,
            changes={"failure_reason": "expired"} if target == Status.EXPIRED else {},
            only_from=cancelling,
        )
        return moved.record

    async def refund(
        self,
        payment_id: str,
        merchant_id: str | None,
        *,
        amount_paisa: int | None,
        reason: str,
        metadata: dict[str, str],
    ) -> Refund:
        payment, refund = await self._repo.reserve_refund(
            refund_id=new_id("RFD"),
            payment_id=payment_id,
            merchant_id=merchant_id,
            amount_paisa=amount_paisa,
            reason=reason,
            metadata=metadata,
        )
        return await self.settle_refund(payment, refund)

    async def settle_refund(self, payment: Payment, refund: Refund) -> Refund:
        """Ask the provider to pay a PENDING refund; providers dedupe by refund id, so a
        retry after a timeout is safe. A timeout leaves it PENDING for the retry job."""
        try:
            result = await self._connector(payment).refund(
                payment, refund.refund_id, refund.amount_paisa
            )
        except (ProviderTimeout, Unavailable) as exc:
            log.info("refund pending at the provider", refund_id=refund.refund_id, error=str(exc))
            return refund
        except ProviderNotFound:
            result = ProviderResult(Outcome.FAILED, failure_reason="not_found_at_provider")
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
        if settled.kind == "REVERSAL" and settled.status == "FAILED":
            REVERSALS_FAILED.inc()
            log.error(
                "reversal refused by the provider: the customer's money is still held",
                payment_id=payment.payment_id,
                refund_id=settled.refund_id,
                failure_reason=settled.failure_reason,
            )
        return settled

    # Status inquiry and expiry (run by the background jobs)

    async def inquire(self, payment: Payment) -> Payment:
        """Find out where a payment with an unknown outcome stands: ask the provider about an
        open one; repeat the operation a CAPTURING or CANCELLING one is waiting on."""
        if payment.status in IN_OPERATION:
            return await self._resolve_operation(payment)
        try:
            result = await self._provider_status(payment)
        except (ProviderTimeout, Unavailable) as exc:
            log.info(
                "status inquiry failed; will retry", payment_id=payment.payment_id, error=str(exc)
            )
            result = ProviderResult(Outcome.PENDING)
        if result.outcome not in (Outcome.PENDING, Outcome.NOT_FOUND):
            return await self.apply_result(payment.payment_id, result, "status inquiry")
        await self._ask_again(payment)
        return payment

    async def _resolve_operation(self, leased: Payment) -> Payment:
        # The payment as it stands now, not as it was leased: the operation may have finished
        # and another begun meanwhile, and only the current one may be repeated.
        payment = await self._repo.get_payment(leased.payment_id, None)
        if payment.status not in IN_OPERATION:
            return payment
        try:
            if payment.operation == "CAPTURE":
                settled = await self._finish_capture(payment)
            else:
                settled = await self._finish_cancel(payment)
        except ProviderRefused as refused:
            log.warning(
                "operation refused at the provider; the payment is AUTHORIZED again",
                payment_id=payment.payment_id,
                operation=refused.operation,
                code=refused.code,
            )
            return await self._repo.get_payment(payment.payment_id, None)
        if settled.status in IN_OPERATION:
            await self._ask_again(payment)
        return settled

    async def _ask_again(self, payment: Payment) -> None:
        attempts = await self._repo.inquiry_attempts(payment.payment_id)
        delay = min(timedelta(seconds=2**attempts), MAX_INQUIRY_INTERVAL)
        await self._repo.schedule_inquiry(payment.payment_id, delay)

    async def expire(self, payment: Payment) -> Payment:
        """Close a payment past its expires_at.

        An open payment is first withdrawn at the provider, so the customer can no longer pay
        it: it EXPIRES unless the provider says it was paid (SUCCESS) or declined (FAILED).
        A held authorization past its capture deadline (AUTHORIZATION_TTL) is voided at the
        provider and EXPIRES. A provider that cannot be reached raises (the job backs off and
        tries again): nothing is closed while the money's whereabouts are unknown.
        """
        if payment.status == Status.AUTHORIZED:
            return await self._expire_authorization(payment)
        # Asked first, so a decline is told apart from the FAILED our own withdrawal causes.
        result = await self._provider_status(payment)
        if result.outcome in (Outcome.SUCCESS, Outcome.FAILED, Outcome.EXPIRED):
            return await self.apply_result(payment.payment_id, result, "status inquiry at expiry")
        result = await self._provider_cancel(payment)
        if result.outcome == Outcome.SUCCESS:  # paid in the last moment: it counts
            return await self.apply_result(payment.payment_id, result, "status inquiry at expiry")
        if result.outcome == Outcome.PENDING:
            raise ProviderTimeout("the provider still has the payment open after the cancel")
        if result.outcome == Outcome.NOT_FOUND and _may_still_start(payment):
            raise ProviderTimeout("the payment's first provider call may still be on its way")
        moved = await self._repo.transition(
            payment.payment_id,
            Status.EXPIRED,
            "expired",
            strict=False,
            changes={"failure_reason": "expired"},
            only_from=OPEN,
        )
        return moved.record

    async def _expire_authorization(self, payment: Payment) -> Payment:
        try:
            held = await self._repo.claim_operation(
                payment.payment_id,
                None,
                operation="EXPIRE",
                allowed_from=frozenset({Status.AUTHORIZED}),
                refusal=lambda status: Aborted(f"payment is {status} now", reason="MOVED_ON"),
                reason="not captured within AUTHORIZATION_TTL; voiding the authorization",
                inquire_after=OPERATION_INQUIRY_AFTER,
            )
        except Aborted:
            # A capture or cancel got there first (or it was just captured): theirs stands.
            return await self._repo.get_payment(payment.payment_id, None)
        try:
            return await self._finish_cancel(held)
        except ProviderRefused as refused:
            VOIDS_REFUSED.inc()
            log.error(
                "the provider refused to void an expired authorization; tried again later",
                payment_id=payment.payment_id,
                code=refused.code,
                retry_in=str(REFUSED_VOID_RETRY),
            )
            await self._repo.update_details(
                payment.payment_id, {"expires_at": datetime.now(UTC) + REFUSED_VOID_RETRY}
            )
            return await self._repo.get_payment(payment.payment_id, None)

    # Provider calls, through the payment's connector

    def _connector(self, payment: Payment) -> PaymentConnector:
        return self._connectors[payment.payment_method]

    async def _provider_status(self, payment: Payment) -> ProviderResult:
        try:
            return await self._connector(payment).status(payment)
        except (InvalidArgument, FailedPrecondition) as exc:
            return _unknown_to_provider(payment, exc)

    async def _provider_cancel(self, payment: Payment) -> ProviderResult:
        """Stop an open payment at its provider. SUCCESS: the customer had already paid;
        FAILED, EXPIRED or NOT_FOUND: nothing was or can be taken; PENDING: still open."""
        try:
            return await self._connector(payment).withdraw(payment)
        except (InvalidArgument, FailedPrecondition) as exc:
            return _unknown_to_provider(payment, exc)


def _unknown_to_provider(payment: Payment, error: GatewayError) -> ProviderResult:
    """The provider cannot even read a question about the payment (an unknown bank, say): it
    holds no such payment."""
    log.warning(
        "provider refused a question about the payment; treating it as unknown there",
        payment_id=payment.payment_id,
        reason=error.reason,
    )
    return ProviderResult(Outcome.NOT_FOUND)


def _unpaid(payment: Payment) -> bool:
    """Closed (or being cancelled) before the customer's money arrived. A payment that was
    ever AUTHORIZED had its money, and a void gave it back: a success reported for it now
    repeats that authorization and must not be reversed a second time."""
    if any(step.to_status == Status.AUTHORIZED for step in payment.history):
        return False
    return payment.status in CLOSED_UNPAID or (
        payment.status == Status.CANCELLING and payment.operation_from in OPEN
    )


def _may_still_start(payment: Payment) -> bool:
    """True while the payment's first provider calls may still be under way: it is (or was,
    when its cancel began) CREATED or PENDING, and young. A REQUIRES_ACTION payment's start is
    over; it waits for the customer."""
    status = payment.operation_from if payment.status == Status.CANCELLING else payment.status
    return (
        status in (Status.CREATED, Status.PENDING)
        and datetime.now(UTC) - payment.created_at < START_WINDOW
    )


def _parse_callback(doc: dict[str, Any]) -> dict[str, Any]:
    """The provider's document, checked for the fields we act on."""
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
