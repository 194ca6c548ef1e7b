"""The card acquirers' gRPC face (paygate.sandbox.v1.CardAcquirerService) over their state
(sandbox.acquirers) and the issuers' ACS (sandbox.acs).

It checks each request, calls the acquirers or the ACS, and adds what takes time: the timers
that expire abandoned 3DS challenges, and the fault cards' slow, hanging or unreachable
acquirers and ACS (sandbox.faults).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway_core.auth import RpcContext
from gateway_core.errors import Unavailable, invalid_field
from gateway_core.logging import get_logger
from paygate.sandbox.v1 import cards_pb2, cards_pb2_grpc
from sandbox import magic
from sandbox.acquirers import EMI_TENURES, Acquirers, Authorization, ThreeDsData
from sandbox.acs import Acs, Authentication, AuthenticationStatus, page_path
from sandbox.cards import card_number_problem, read_card
from sandbox.faults import answer_late
from sandbox.magic import CardOutcome
from sandbox.tasks import BackgroundTasks, sleep_until
from sandbox.validation import Violations, one_of

log = get_logger(__name__)

Auth = cards_pb2.CardAuthorization
Tds = cards_pb2.ThreeDsAuthentication


class CardAcquirerServicer(cards_pb2_grpc.CardAcquirerServiceServicer):
    def __init__(
        self,
        acquirers: Acquirers,
        acs: Acs,
        sandbox_public_url: str,
        on_chargeback_capture: Callable[[str, str], None] | None = None,
    ) -> None:
        self._acquirers = acquirers
        self._acs = acs
        self._public_url = sandbox_public_url.rstrip("/")
        self._timers = BackgroundTasks()
        # Called with (gateway, payment id) when a CHARGEBACK card's payment is captured.
        self._on_chargeback_capture = on_chargeback_capture

    async def Authorize(
        self, request: cards_pb2.AuthorizeRequest, context: RpcContext
    ) -> cards_pb2.CardAuthorization:
        gateway = _gateway(request.gateway)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        card = read_card(problems, request.card, "card")
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        if request.emi_tenure_months not in EMI_TENURES:
            problems.add(
                "emi_tenure_months",
                f"must be 0 or one of {', '.join(str(t) for t in sorted(EMI_TENURES) if t)}",
            )
        problems.raise_if_any()
        assert card is not None
        authorization, created = self._acquirers.authorize(
            gateway,
            request.payment_id,
            request.merchant_id,
            card,
            request.amount_paisa,
            request.currency,
            capture=request.capture,
            three_ds=ThreeDsData(
                request.eci, request.authentication_value, request.three_ds_transaction_id
            ),
            emi_tenure_months=request.emi_tenure_months,
            notes=dict(request.notes),
        )
        if created and authorization.captured_paisa:
            self._captured(gateway, authorization)
        late = 0.0
        if card.outcome is CardOutcome.SLOW_AUTHORIZATION:
            late = magic.CARD_SLOW_AUTHORIZATION_SECONDS
        elif created and card.outcome is CardOutcome.AUTHORIZATION_TIMEOUT:
            late = magic.CARD_HANG_SECONDS
        if late:
            await answer_late(late, "Authorize", gateway=gateway, payment_id=request.payment_id)
        return _authorization_proto(authorization)

    async def GetAuthorization(
        self, request: cards_pb2.GetAuthorizationRequest, context: RpcContext
    ) -> cards_pb2.CardAuthorization:
        gateway = _gateway(request.gateway)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        return _authorization_proto(self._acquirers.get(gateway, request.payment_id))

    async def Capture(
        self, request: cards_pb2.CaptureRequest, context: RpcContext
    ) -> cards_pb2.CaptureResponse:
        gateway = _gateway(request.gateway)
        problems = Violations()
        problems.required("acquirer_txn_id", request.acquirer_txn_id)
        problems.required("payment_id", request.payment_id)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        problems.raise_if_any()
        result = self._acquirers.capture(
            gateway, request.acquirer_txn_id, request.payment_id, request.amount_paisa
        )
        if result.applied:
            self._captured(gateway, self._acquirers.get(gateway, request.payment_id))
        if result.applied and self._outcome(gateway, request) is CardOutcome.CAPTURE_TIMEOUT:
            await answer_late(
                magic.CARD_HANG_SECONDS, "Capture", gateway=gateway, payment_id=request.payment_id
            )
        return cards_pb2.CaptureResponse(
            status=result.status.value,
            captured_amount_paisa=result.captured_paisa,
            failure_code=result.failure_code,
        )

    async def Void(
        self, request: cards_pb2.VoidRequest, context: RpcContext
    ) -> cards_pb2.VoidResponse:
        gateway = _gateway(request.gateway)
        problems = Violations()
        problems.required("acquirer_txn_id", request.acquirer_txn_id)
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        result = self._acquirers.void(gateway, request.acquirer_txn_id, request.payment_id)
        if result.applied and self._outcome(gateway, request) is CardOutcome.VOID_TIMEOUT:
            await answer_late(
                magic.CARD_HANG_SECONDS, "Void", gateway=gateway, payment_id=request.payment_id
            )
        return cards_pb2.VoidResponse(status=result.status.value, failure_code=result.failure_code)

    async def RefundCardPayment(
        self, request: cards_pb2.RefundCardPaymentRequest, context: RpcContext
    ) -> cards_pb2.RefundCardPaymentResponse:
        gateway = _gateway(request.gateway)
        problems = Violations()
        problems.required("acquirer_txn_id", request.acquirer_txn_id)
        problems.required("payment_id", request.payment_id)
        problems.required("refund_id", request.refund_id)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        problems.raise_if_any()
        refund = self._acquirers.refund(
            gateway,
            request.acquirer_txn_id,
            request.payment_id,
            request.refund_id,
            request.amount_paisa,
        )
        return cards_pb2.RefundCardPaymentResponse(
            status=refund.status.value,
            acquirer_refund_id=refund.provider_refund_id,
            failure_code=refund.failure_code,
        )

    async def Enroll3ds(
        self, request: cards_pb2.Enroll3dsRequest, context: RpcContext
    ) -> cards_pb2.Enroll3dsResponse:
        _gateway(request.gateway)
        problem = card_number_problem(request.card_number)
        if problem:
            raise invalid_field("card_number", problem)
        # Every sandbox issuer takes part in 3-D Secure 2.
        return cards_pb2.Enroll3dsResponse(
            enrolled=True, protocol_version=magic.THREE_DS_PROTOCOL_VERSION
        )

    async def Authenticate3ds(
        self, request: cards_pb2.Authenticate3dsRequest, context: RpcContext
    ) -> cards_pb2.ThreeDsAuthentication:
        gateway = _gateway(request.gateway)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        card = read_card(problems, request.card, "card")
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        problems.http_url("return_url", request.return_url)
        problems.http_url("callback_url", request.callback_url)
        problems.raise_if_any()
        assert card is not None
        if card.outcome is CardOutcome.THREE_DS_DOWN:
            log.warning(
                "acs unreachable (sandbox fault card)",
                payment_id=request.payment_id,
                card=card.masked,
            )
            raise Unavailable(
                "the 3-D Secure server is unavailable; retry shortly", reason="ACS_UNAVAILABLE"
            )
        authentication, created = self._acs.authenticate(
            gateway,
            request.payment_id,
            request.merchant_id,
            card,
            request.amount_paisa,
            request.currency,
            challenge_requested=request.challenge_requested,
            return_url=request.return_url,
            callback_url=request.callback_url,
        )
        if created and authentication.expires_at is not None:
            self._timers.spawn(
                self._expire_when_due(authentication),
                name=f"acs {authentication.authentication_id}",
            )
        if created and card.outcome is CardOutcome.THREE_DS_TIMEOUT:
            await answer_late(
                magic.CARD_HANG_SECONDS, "Authenticate3ds", payment_id=request.payment_id
            )
        return self._authentication_proto(authentication)

    async def Get3dsAuthentication(
        self, request: cards_pb2.Get3dsAuthenticationRequest, context: RpcContext
    ) -> cards_pb2.ThreeDsAuthentication:
        _gateway(request.gateway)
        problems = Violations()
        problems.required("three_ds_transaction_id", request.three_ds_transaction_id)
        problems.raise_if_any()
        authentication = self._acs.get(request.three_ds_transaction_id)
        return self._authentication_proto(authentication)

    async def aclose(self) -> None:
        await self._timers.aclose()

    def _captured(self, gateway: str, authorization: Authorization) -> None:
        if (
            authorization.card.outcome is CardOutcome.CHARGEBACK
            and self._on_chargeback_capture is not None
        ):
            self._on_chargeback_capture(gateway, authorization.payment_id)

    def _outcome(
        self, gateway: str, request: cards_pb2.CaptureRequest | cards_pb2.VoidRequest
    ) -> CardOutcome:
        """The card outcome of the authorization a Capture or Void acted on."""
        return self._acquirers.get(gateway, request.payment_id).card.outcome

    def challenge_url(self, authentication: Authentication) -> str:
        return f"{self._public_url}{page_path(authentication.authentication_id)}"

    def _authentication_proto(
        self, authentication: Authentication
    ) -> cards_pb2.ThreeDsAuthentication:
        pending = authentication.status is AuthenticationStatus.CHALLENGE_REQUIRED
        return Tds(
            three_ds_transaction_id=authentication.authentication_id,
            payment_id=authentication.payment_id,
            status=authentication.status.value,
            eci=authentication.eci,
            authentication_value=authentication.authentication_value,
            challenge_url=self.challenge_url(authentication) if pending else "",
            protocol_version=magic.THREE_DS_PROTOCOL_VERSION,
        )

    async def _expire_when_due(self, authentication: Authentication) -> None:
        assert authentication.expires_at is not None
        due = authentication.expires_at
        await sleep_until(due, self._acs.now)
        self._acs.settle(authentication, as_of=due)


def _gateway(value: str) -> str:
    return one_of("gateway", value.strip().lower(), magic.CARD_GATEWAYS)


def _authorization_proto(authorization: Authorization) -> cards_pb2.CardAuthorization:
    decline = authorization.decline
    return Auth(
        payment_id=authorization.payment_id,
        gateway=authorization.gateway,
        status=authorization.status.value,
        captured=authorization.captured_paisa > 0,
        decline_code=decline.code if decline else "",
        decline_reason=decline.reason if decline else "",
        auth_code=authorization.auth_code,
        rrn=authorization.rrn,
        acquirer_txn_id=authorization.acquirer_txn_id,
        amount_paisa=authorization.amount_paisa,
        currency=authorization.currency,
    )
