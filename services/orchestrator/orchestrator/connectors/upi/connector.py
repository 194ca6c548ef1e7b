"""UPI: the customer approves a request in their UPI app; the switch calls back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from gateway_core.errors import Unavailable, invalid_field
from orchestrator.connectors.base import (
    Apply,
    AwaitCustomer,
    DetailsInput,
    DetailsType,
    Fail,
    Prepared,
    Reporter,
    StartRequest,
    Step,
    never_held,
    result_from_callback,
)
from orchestrator.connectors.upi.client import PROVIDER_NAME, UpiCoreClient
from orchestrator.connectors.upi.details import UpiDetails
from orchestrator.connectors.upi.link import is_valid_vpa, pay_link
from orchestrator.providers.base import Outcome, ProviderResult, ProviderTimeout

if TYPE_CHECKING:
    from orchestrator.domain.payment import Payment

FLOWS = frozenset({"", "INTENT", "COLLECT"})
# The switch may or may not have a transaction it did not answer about: ask again soon.
INQUIRY_AFTER_TIMEOUT = timedelta(seconds=1)
# The customer has the request in their app; the switch's callback normally comes first.
INQUIRY_AFTER_START = timedelta(seconds=10)


class UpiConnector:
    method: ClassVar[str] = "UPI"
    details_type: ClassVar[DetailsType] = UpiDetails
    manual_capture: ClassVar[bool] = False
    offers_emi: ClassVar[bool] = False

    def __init__(self, client: UpiCoreClient, *, callback_url: str) -> None:
        self._upi = client
        self._callback_url = callback_url

    @staticmethod
    def validate_details(given: DetailsInput, bad: Reporter) -> None:
        if not given.vpa:
            bad("payment_details.vpa", "is required for UPI payments")
        elif not is_valid_vpa(given.vpa):
            bad("payment_details.vpa", "must look like name@handle (e.g. user@okbank)")
        if given.upi_flow not in FLOWS:
            bad("payment_details.upi_flow", "must be INTENT or COLLECT")

    @staticmethod
    def read_details(given: DetailsInput) -> UpiDetails:
        return UpiDetails(vpa=given.vpa, flow=given.upi_flow or "INTENT")

    async def prepare(self, request: StartRequest) -> Prepared:
        details = request.details
        assert isinstance(details, UpiDetails)
        lookup = await self._upi.validate_vpa(details.vpa)
        if not lookup.exists:
            raise invalid_field(
                "payment_details.vpa", "is not registered with any UPI app", reason="VPA_NOT_FOUND"
            )
        link = pay_link(
            payee_vpa=request.merchant.vpa,
            payee_name=request.merchant.name,
            amount_paisa=request.amount_paisa,
            currency=request.currency,
            note=request.description,
            transaction_ref=request.payment_id,
        )
        return Prepared(
            provider=PROVIDER_NAME,
            details=details,
            payment_url=link,
            fraud_facts={"vpa": details.vpa},
        )

    async def initiate(
        self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
    ) -> Step:
        details = request.details
        assert isinstance(details, UpiDetails)
        assert payment.expires_at is not None
        try:
            result = await self._upi.initiate(
                payment_id=payment.payment_id,
                payer_vpa=details.vpa,
                payee_vpa=request.merchant.vpa,
                payee_name=request.merchant.name,
                amount_paisa=payment.amount_paisa,
                currency=payment.currency,
                note=payment.description,
                flow=details.flow,
                callback_url=self._callback_url,
                expires_at=payment.expires_at,
                notes=payment.metadata,
            )
        except ProviderTimeout:
            return AwaitCustomer(
                "the UPI switch did not answer; status inquiry scheduled", INQUIRY_AFTER_TIMEOUT
            )
        except Unavailable:
            return Fail("provider_unavailable")
        if result.outcome != Outcome.PENDING:
            return Apply(result, "UPI switch answer")
        return AwaitCustomer(
            "awaiting the customer's approval in their UPI app",
            INQUIRY_AFTER_START,
            result.external_txn_id,
        )

    async def status(self, payment: Payment) -> ProviderResult:
        return await self._upi.status(payment.payment_id)

    async def withdraw(self, payment: Payment) -> ProviderResult:
        return await self._upi.cancel(payment.payment_id)

    async def capture(self, payment: Payment) -> ProviderResult:
        raise never_held(self.method)

    async def void(self, payment: Payment) -> ProviderResult:
        raise never_held(self.method)

    async def refund(self, payment: Payment, refund_id: str, amount_paisa: int) -> ProviderResult:
        return await self._upi.refund(
            payment_id=payment.payment_id, refund_id=refund_id, amount_paisa=amount_paisa
        )

    def late_success_is_hold(self, payment: Payment) -> bool:
        return False

    async def on_callback(self, payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
        return result_from_callback(payment, provider, doc)


__all__ = ["UpiConnector"]
