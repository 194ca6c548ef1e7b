"""Disputes (chargebacks) as the card acquirers and the UPI switch raise them.

A dispute is raised on a captured payment: by the acquirer itself a few seconds after it
captured a payment of the magic card 4000 0000 0000 0259 (SANDBOX_CHARGEBACK_DELAY_MS), or on
demand (`POST /disputes` on the sandbox's HTTP server) for any captured card or UPI payment.
Each reaches the gateway as a signed callback of type `dispute.opened` from the provider that
raised it. The gateway answers through DisputeNetworkService: evidence, decided
SANDBOX_DISPUTE_DECISION_DELAY_MS later (a summary containing `winning_evidence` wins,
anything else loses) and reported by a `dispute.decided` callback; or acceptance. The
disputed amount appears as a `chargeback` line in the provider's settlement file of the day the
dispute opened. State lives in memory: this is a simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from gateway_core.errors import FailedPrecondition, GatewayError, InvalidArgument, NotFound
from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from sandbox import magic, upi
from sandbox.acquirers import Acquirers
from sandbox.callbacks import CallbackSender, ProviderCallback, rfc3339
from sandbox.settlements import CARD, UPI, Settleable
from sandbox.tasks import BackgroundTasks
from sandbox.upi import UpiStatus, UpiSwitch

log = get_logger(__name__)

Clock = Callable[[], float]


class CaseStatus(StrEnum):
    OPEN = "OPEN"
    EVIDENCE_SUBMITTED = "EVIDENCE_SUBMITTED"
    WON = "WON"
    LOST = "LOST"
    ACCEPTED = "ACCEPTED"


@dataclass
class DisputeCase:
    provider: str
    case_reference: str
    payment_id: str
    method: str
    amount_paisa: int
    reason_code: str
    opened_at: float
    respond_by: float
    status: CaseStatus = CaseStatus.OPEN
    callback_url: str = ""

    def callback(self, kind: str, at: float, outcome: str = "") -> ProviderCallback:
        extra = {
            "type": kind,
            "case_reference": self.case_reference,
            "reason_code": self.reason_code,
            "phase": "CHARGEBACK",
            "respond_by": rfc3339(self.respond_by),
        }
        if outcome:
            extra["outcome"] = outcome
        return ProviderCallback(
            provider=self.provider,
            transaction_ref=self.payment_id,
            provider_txn_id=self.case_reference,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            occurred_at=datetime.fromtimestamp(at, UTC),
            extra=extra,
        )


class DisputeDesk:
    """Every provider's disputes, by (provider, case reference)."""

    def __init__(
        self,
        acquirers: Acquirers,
        switch: UpiSwitch,
        callbacks: CallbackSender,
        *,
        respond_within_seconds: float,
        decision_delay_seconds: float,
        clock: Clock = time.time,
    ) -> None:
        self._acquirers = acquirers
        self._switch = switch
        self._callbacks = callbacks
        self._respond_within = respond_within_seconds
        self._decision_delay = decision_delay_seconds
        self._clock = clock
        self._cases: dict[tuple[str, str], DisputeCase] = {}
        self._timers = BackgroundTasks()

    def raise_dispute(
        self,
        provider: str,
        payment_id: str,
        *,
        amount_paisa: int = 0,
        reason_code: str = "",
        respond_within_seconds: float | None = None,
        notify: bool = True,
    ) -> DisputeCase:
        """Open a dispute on a payment the provider captured and tell the gateway (unless
        `notify` is False: a test then delivers the callback itself). The amount defaults to
        what is still captured (less refunds and earlier disputes)."""
        method, disputable = self._disputable(provider, payment_id)
        amount = amount_paisa or disputable
        if amount <= 0 or amount > disputable:
            raise FailedPrecondition(
                f"amount_paisa must be between 1 and the {disputable} paisa of payment"
                f" {payment_id} still captured at {provider}",
                reason="DISPUTE_EXCEEDS_CAPTURED",
            )
        code = reason_code or (
            magic.UPI_DISPUTE_REASON if method == UPI else magic.CARD_CHARGEBACK_REASON
        )
        allowed = magic.UPI_DISPUTE_REASONS if method == UPI else magic.CARD_CHARGEBACK_REASONS
        if code not in allowed:
            raise InvalidArgument(
                f"reason_code must be one of {', '.join(allowed)} for a {method} payment",
                reason="INVALID_REASON_CODE",
            )
        now = self._clock()
        within = self._respond_within if respond_within_seconds is None else respond_within_seconds
        case = DisputeCase(
            provider=provider,
            case_reference=new_id("CB" if method == CARD else "UDIR"),
            payment_id=payment_id,
            method=method,
            amount_paisa=amount,
            reason_code=code,
            opened_at=now,
            respond_by=now + within,
        )
        self._cases[(provider, case.case_reference)] = case
        log.info(
            "dispute raised",
            provider=provider,
            case_reference=case.case_reference,
            payment_id=payment_id,
            amount_paisa=amount,
            reason_code=code,
        )
        if notify:
            self._callbacks.send(case.callback("dispute.opened", now))
        return case

    def raise_later(self, provider: str, payment_id: str, delay_seconds: float) -> None:
        """A chargeback `delay_seconds` from now (the magic chargeback card's)."""
        self._timers.spawn(
            self._raise_after(provider, payment_id, delay_seconds), name=f"chargeback {payment_id}"
        )

    def submit_evidence(
        self, provider: str, case_reference: str, payment_id: str, summary: str, callback_url: str
    ) -> DisputeCase:
        case = self._case(provider, case_reference, payment_id)
        if case.status is CaseStatus.OPEN:
            if self._clock() > case.respond_by:
                raise FailedPrecondition(
                    f"case {case_reference} had to be answered by {rfc3339(case.respond_by)}",
                    reason="RESPONSE_OVERDUE",
                )
            case.status = CaseStatus.EVIDENCE_SUBMITTED
            case.callback_url = callback_url
            outcome = CaseStatus.WON if magic.WINNING_EVIDENCE in summary else CaseStatus.LOST
            self._timers.spawn(self._decide_after(case, outcome), name=f"decide {case_reference}")
        return case

    def accept(self, provider: str, case_reference: str, payment_id: str) -> DisputeCase:
        case = self._case(provider, case_reference, payment_id)
        if case.status is CaseStatus.OPEN:
            case.status = CaseStatus.ACCEPTED
        return case

    def settleable(self) -> list[Settleable]:
        """Each dispute is a chargeback line on the day it opened."""
        return [
            Settleable(
                provider=case.provider,
                method=case.method,
                type="chargeback",
                provider_reference=case.case_reference,
                merchant_reference=case.payment_id,
                payment_id=case.payment_id,
                amount_paisa=case.amount_paisa,
                at=case.opened_at,
            )
            for case in self._cases.values()
        ]

    async def aclose(self) -> None:
        await self._timers.aclose()

    def _disputable(self, provider: str, payment_id: str) -> tuple[str, int]:
        """The payment's method and what the provider still holds of it for a dispute."""
        taken = sum(
            c.amount_paisa
            for c in self._cases.values()
            if c.provider == provider and c.payment_id == payment_id and c.status != "WON"
        )
        if provider == upi.PROVIDER:
            txn = self._switch.get(payment_id)
            if txn.status is not UpiStatus.SUCCESS:
                raise FailedPrecondition(
                    f"UPI transaction {payment_id} is {txn.status}: only a successful one can be"
                    " disputed",
                    reason="NOT_CAPTURED",
                )
            return UPI, txn.amount_paisa - self._switch.refunded_paisa(payment_id) - taken
        if provider not in magic.CARD_GATEWAYS:
            raise InvalidArgument(
                f"provider must be {upi.PROVIDER} or one of {', '.join(magic.CARD_GATEWAYS)}",
                reason="UNKNOWN_PROVIDER",
            )
        authorization = self._acquirers.get(provider, payment_id)
        if not authorization.captured_paisa:
            raise FailedPrecondition(
                f"payment {payment_id} was not captured at {provider}", reason="NOT_CAPTURED"
            )
        refunded = self._acquirers.refunded_paisa(provider, payment_id)
        return CARD, authorization.captured_paisa - refunded - taken

    def _case(self, provider: str, case_reference: str, payment_id: str) -> DisputeCase:
        case = self._cases.get((provider, case_reference))
        if case is None or case.payment_id != payment_id:
            raise NotFound(
                f"{provider} has no dispute {case_reference} on payment {payment_id}",
                reason="DISPUTE_NOT_FOUND",
            )
        return case

    async def _raise_after(self, provider: str, payment_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            self.raise_dispute(provider, payment_id)
        except GatewayError as exc:
            # Refunded in full meanwhile, say: nothing is left to charge back.
            log.info("no chargeback raised", provider=provider, payment_id=payment_id, why=str(exc))

    async def _decide_after(self, case: DisputeCase, outcome: CaseStatus) -> None:
        await asyncio.sleep(self._decision_delay)
        case.status = outcome
        log.info(
            "dispute decided",
            provider=case.provider,
            case_reference=case.case_reference,
            outcome=outcome.value,
        )
        self._callbacks.send(
            case.callback("dispute.decided", self._clock(), outcome.value), case.callback_url
        )
