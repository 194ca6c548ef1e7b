"""Card acquirers ("razorpay", "payu", "ccavenue"): their authorizations and rules.

`Acquirers` holds the authorizations and their rules (plain, synchronous, no gRPC: its face,
shared with the ACS, is sandbox.servicers.cards): authorize (with or without automatic
capture), capture, void, refund.

Outcomes are decided by the card number (sandbox.magic): the issuer approves, declines, or
wants a challenge first; FIRST_GATEWAY_DOWN cards find "razorpay" unreachable (UNAVAILABLE)
and the other two approving, so routing and failover can be seen. Fault cards make an
acquirer or the ACS slow, unreachable, or answer too late after doing the work (sandbox.faults),
or refuse a void. State lives in memory, keyed by (gateway, payment id): this is a simulator.

Every method of `Acquirers` runs without awaiting, so concurrent calls on the event loop cannot
interleave inside one: a refund cannot race another past the captured amount.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from gateway_core.errors import AlreadyExists, NotFound, Unavailable
from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from sandbox import magic, references
from sandbox.acs import Acs
from sandbox.books import BookPayment, BookRefund
from sandbox.cards import Card
from sandbox.magic import CardDecline, CardOutcome
from sandbox.refunds import Refund, RefundBook, RefundTerms, booked_refunds
from sandbox.settlements import CARD, Refunded, Settleable, money_moved

log = get_logger(__name__)

# EMI tenures the sandbox issuers lend over (0: a one-time payment).
EMI_TENURES = frozenset({0, 3, 6, 9, 12, 18, 24})
# Prefix of each acquirer's transaction ids.
_TXN_PREFIX = {"razorpay": "RZP", "payu": "PAYU", "ccavenue": "CCAV"}

Clock = Callable[[], float]


def refund_terms(gateway: str) -> RefundTerms:
    return RefundTerms(
        reference_prefix=_TXN_PREFIX[gateway] + "RF",
        not_paid="NOT_CAPTURED",
        exceeds_paid="REFUND_EXCEEDS_CAPTURE",
    )


class AuthorizationStatus(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    REQUIRES_CHALLENGE = "REQUIRES_CHALLENGE"


class CaptureStatus(StrEnum):
    CAPTURED = "CAPTURED"
    FAILED = "FAILED"


class VoidStatus(StrEnum):
    VOIDED = "VOIDED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ThreeDsData:
    """What the orchestrator passes on from the ACS; empty without 3-D Secure."""

    eci: str = ""
    authentication_value: str = ""
    three_ds_transaction_id: str = ""

    def __bool__(self) -> bool:
        return bool(self.eci or self.authentication_value or self.three_ds_transaction_id)


@dataclass(frozen=True)
class CaptureResult:
    status: CaptureStatus
    captured_paisa: int = 0
    failure_code: str = ""
    # This call captured (rather than replayed an earlier capture or failed).
    applied: bool = False


@dataclass(frozen=True)
class VoidResult:
    status: VoidStatus
    failure_code: str = ""
    # This call voided (rather than replayed an earlier void or failed).
    applied: bool = False


@dataclass
class Authorization:
    gateway: str
    payment_id: str
    merchant_id: str
    card: Card
    amount_paisa: int
    currency: str
    capture_requested: bool
    emi_tenure_months: int
    acquirer_txn_id: str
    authorized_at: float
    status: AuthorizationStatus
    decline: CardDecline | None = None
    auth_code: str = ""
    rrn: str = ""
    eci: str = ""
    three_ds_transaction_id: str = ""
    captured_paisa: int = 0
    captured_at: float | None = None
    voided: bool = False
    # The merchant's notes on the payment (its metadata, passed on by the gateway).
    notes: dict[str, str] = field(default_factory=dict)

    def to_book(self, refunded_paisa: int) -> BookPayment:
        approved = self.status is AuthorizationStatus.APPROVED
        return BookPayment(
            provider=self.gateway,
            payment_id=self.payment_id,
            status=self.status.value,
            amount_paisa=self.amount_paisa,
            # A voided authorization was never captured: it charges nothing.
            charged_paisa=self.captured_paisa,
            authorized_paisa=self.amount_paisa if approved else 0,
            captured_paisa=self.captured_paisa,
            voided=self.voided,
            refunded_paisa=refunded_paisa,
        )

    def settleable(self, refunds: Iterable[Refunded]) -> list[Settleable]:
        """The money the acquirer moved: the capture, and each processed refund."""
        if not self.captured_paisa or self.captured_at is None:
            return []
        return money_moved(
            provider=self.gateway,
            method=CARD,
            payment_id=self.payment_id,
            provider_reference=self.acquirer_txn_id,
            amount_paisa=self.captured_paisa,
            at=self.captured_at,
            notes=self.notes,
            refunds=refunds,
        )

    def same_request(
        self,
        card: Card,
        amount_paisa: int,
        currency: str,
        capture: bool,
        emi_tenure_months: int,
    ) -> bool:
        """A retry of the request that made this authorization (the CVV may be gone by then)."""
        return (
            self.card.fingerprint,
            self.amount_paisa,
            self.currency,
            self.capture_requested,
            self.emi_tenure_months,
        ) == (card.fingerprint, amount_paisa, currency, capture, emi_tenure_months)


class Acquirers:
    """Authorizations by (gateway, payment id) and refunds by (gateway, refund id)."""

    def __init__(self, acs: Acs, clock: Clock = time.time) -> None:
        self._acs = acs
        self._clock = clock
        self._authorizations: dict[tuple[str, str], Authorization] = {}
        self._refunds = {
            gateway: RefundBook(gateway, refund_terms(gateway), clock)
            for gateway in magic.CARD_GATEWAYS
        }

    def authorize(
        self,
        gateway: str,
        payment_id: str,
        merchant_id: str,
        card: Card,
        amount_paisa: int,
        currency: str,
        *,
        capture: bool = False,
        three_ds: ThreeDsData = ThreeDsData(),
        emi_tenure_months: int = 0,
        notes: dict[str, str] | None = None,
    ) -> tuple[Authorization, bool]:
        """Authorize once per payment at a gateway: a repeated call answers the first outcome,
        except after REQUIRES_CHALLENGE, which asks for another call with 3-D Secure data.
        Returns the authorization and whether this call made it."""
        if gateway in magic.DOWN_ACQUIRERS.get(card.outcome, frozenset()):
            log.warning(
                "acquirer unreachable (sandbox fault card)",
                gateway=gateway,
                payment_id=payment_id,
                card=card.masked,
            )
            raise Unavailable(
                f"card gateway {gateway} is unavailable; try another gateway",
                reason="ACQUIRER_UNAVAILABLE",
            )
        key = (gateway, payment_id)
        known = self._authorizations.get(key)
        if known is not None and known.status is not AuthorizationStatus.REQUIRES_CHALLENGE:
            if not known.same_request(card, amount_paisa, currency, capture, emi_tenure_months):
                raise AlreadyExists(
                    f"payment {payment_id} was authorized at {gateway} with other details",
                    reason="DUPLICATE_PAYMENT_ID",
                )
            return known, False
        now = self._clock()
        authorization = Authorization(
            gateway=gateway,
            payment_id=payment_id,
            merchant_id=merchant_id,
            card=card,
            amount_paisa=amount_paisa,
            currency=currency,
            capture_requested=capture,
            emi_tenure_months=emi_tenure_months,
            acquirer_txn_id=known.acquirer_txn_id if known else new_id(_TXN_PREFIX[gateway]),
            authorized_at=now,
            status=AuthorizationStatus.DECLINED,
            eci=three_ds.eci,
            three_ds_transaction_id=three_ds.three_ds_transaction_id,
            notes=dict(notes or {}),
        )
        verdict = self._issuer_verdict(authorization, three_ds, now)
        if isinstance(verdict, CardDecline):
            authorization.decline = verdict
        elif verdict is AuthorizationStatus.REQUIRES_CHALLENGE:
            authorization.status = verdict
        else:
            authorization.status = AuthorizationStatus.APPROVED
            authorization.auth_code = references.digits(6)
            authorization.rrn = references.digits(12)
            if capture:
                authorization.captured_paisa = amount_paisa
                authorization.captured_at = now
        self._authorizations[key] = authorization
        log.info(
            "card authorization",
            gateway=gateway,
            payment_id=payment_id,
            acquirer_txn_id=authorization.acquirer_txn_id,
            card=card.masked,
            brand=card.brand,
            status=authorization.status.value,
            decline_code=authorization.decline.code if authorization.decline else "",
            captured=authorization.captured_paisa > 0,
        )
        return authorization, True

    def get(self, gateway: str, payment_id: str) -> Authorization:
        authorization = self._authorizations.get((gateway, payment_id))
        if authorization is None:
            raise NotFound(
                f"no authorization of payment {payment_id} at {gateway}",
                reason="AUTHORIZATION_NOT_FOUND",
            )
        return authorization

    def capture(
        self, gateway: str, acquirer_txn_id: str, payment_id: str, amount_paisa: int
    ) -> CaptureResult:
        """Capture once, at most the authorized amount; repeating the same capture replays it."""
        authorization = self._find(gateway, acquirer_txn_id, payment_id)
        if authorization.status is not AuthorizationStatus.APPROVED:
            return CaptureResult(CaptureStatus.FAILED, failure_code="NOT_AUTHORIZED")
        if authorization.voided:
            return CaptureResult(CaptureStatus.FAILED, failure_code="AUTHORIZATION_VOIDED")
        if authorization.captured_paisa:
            if authorization.captured_paisa == amount_paisa:
                return CaptureResult(CaptureStatus.CAPTURED, authorization.captured_paisa)
            return CaptureResult(
                CaptureStatus.FAILED, authorization.captured_paisa, "ALREADY_CAPTURED"
            )
        if self._clock() > authorization.authorized_at + magic.CARD_AUTHORIZATION_HOLD_SECONDS:
            return CaptureResult(CaptureStatus.FAILED, failure_code="AUTHORIZATION_EXPIRED")
        if amount_paisa > authorization.amount_paisa:
            return CaptureResult(CaptureStatus.FAILED, failure_code="AMOUNT_EXCEEDS_AUTHORIZATION")
        authorization.captured_paisa = amount_paisa
        authorization.captured_at = self._clock()
        log.info(
            "card capture",
            gateway=gateway,
            payment_id=payment_id,
            acquirer_txn_id=acquirer_txn_id,
            amount_paisa=amount_paisa,
        )
        return CaptureResult(CaptureStatus.CAPTURED, amount_paisa, applied=True)

    def void(self, gateway: str, acquirer_txn_id: str, payment_id: str) -> VoidResult:
        """Release an uncaptured authorization; voiding it again answers VOIDED again."""
        authorization = self._find(gateway, acquirer_txn_id, payment_id)
        if authorization.status is not AuthorizationStatus.APPROVED:
            return VoidResult(VoidStatus.FAILED, "NOT_AUTHORIZED")
        if authorization.captured_paisa:
            return VoidResult(VoidStatus.FAILED, "ALREADY_CAPTURED")
        if authorization.voided:
            return VoidResult(VoidStatus.VOIDED)
        if authorization.card.outcome is CardOutcome.VOID_REFUSED:
            return VoidResult(VoidStatus.FAILED, magic.VOID_NOT_ALLOWED)
        authorization.voided = True
        log.info(
            "card authorization voided",
            gateway=gateway,
            payment_id=payment_id,
            acquirer_txn_id=acquirer_txn_id,
        )
        return VoidResult(VoidStatus.VOIDED, applied=True)

    def refund(
        self,
        gateway: str,
        acquirer_txn_id: str,
        payment_id: str,
        refund_id: str,
        amount_paisa: int,
    ) -> Refund:
        """Refund by the sandbox's refund rules (sandbox.refunds): only what was captured."""
        authorization = self._find(gateway, acquirer_txn_id, payment_id)
        refund, created = self._refunds[gateway].refund(
            payment_id, refund_id, amount_paisa, paid_paisa=authorization.captured_paisa
        )
        if created:
            log.info(
                "card refund",
                gateway=gateway,
                payment_id=payment_id,
                refund_id=refund_id,
                amount_paisa=amount_paisa,
                status=refund.status.value,
                failure_code=refund.failure_code,
            )
        return refund

    def refunded_paisa(self, gateway: str, payment_id: str) -> int:
        return self._refunds[gateway].refunded_paisa(payment_id)

    def booked_payments(self) -> list[BookPayment]:
        return [
            authorization.to_book(self.refunded_paisa(gateway, payment_id))
            for (gateway, payment_id), authorization in self._authorizations.items()
        ]

    def booked_refunds(self) -> list[BookRefund]:
        return booked_refunds(self._refunds.values())

    def settleable(self) -> list[Settleable]:
        return [
            entry
            for (gateway, payment_id), authorization in self._authorizations.items()
            for entry in authorization.settleable(self._refunds[gateway].settleable(payment_id))
        ]

    def _find(self, gateway: str, acquirer_txn_id: str, payment_id: str) -> Authorization:
        authorization = self._authorizations.get((gateway, payment_id))
        if authorization is None or authorization.acquirer_txn_id != acquirer_txn_id:
            raise NotFound(
                f"no transaction {acquirer_txn_id} of payment {payment_id} at {gateway}",
                reason="AUTHORIZATION_NOT_FOUND",
            )
        return authorization

    def _issuer_verdict(
        self, authorization: Authorization, three_ds: ThreeDsData, now: float
    ) -> CardDecline | AuthorizationStatus:
        card = authorization.card
        if card.expired(now):
            return magic.DECLINE_EXPIRED_CARD
        if not card.cvv_ok:
            return magic.DECLINE_INCORRECT_CVC
        authenticated = False
        if three_ds:
            authenticated = self._acs.verify(
                authorization.payment_id,
                three_ds.three_ds_transaction_id,
                card,
                authorization.amount_paisa,
                three_ds.eci,
                three_ds.authentication_value,
            )
            if not authenticated:
                return magic.DECLINE_AUTHENTICATION_FAILED
        if magic.requires_challenge(card.outcome) and not authenticated:
            return AuthorizationStatus.REQUIRES_CHALLENGE
        if card.outcome in (CardOutcome.DECLINE, CardOutcome.CHALLENGE_THEN_DECLINE):
            return magic.DECLINE_DO_NOT_HONOUR
        if card.outcome is CardOutcome.INSUFFICIENT_FUNDS:
            return magic.DECLINE_INSUFFICIENT_FUNDS
        return AuthorizationStatus.APPROVED
