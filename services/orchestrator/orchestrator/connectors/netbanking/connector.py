"""Net banking: the customer authorises the payment on their bank's page; the bank calls back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from gateway_core.errors import Unavailable, invalid_field
from orchestrator.connectors.base import (
    AwaitCustomer,
    DetailsInput,
    DetailsType,
    Fail,
    Prepared,
    Reporter,
    RequireAction,
    StartRequest,
    Step,
    kept_details,
    never_held,
    required_detail,
    result_from_callback,
)
from orchestrator.connectors.netbanking.client import PROVIDER_NAME, NetBankingClient
from orchestrator.connectors.netbanking.details import NetBankingDetails
from orchestrator.providers.base import ProviderResult, ProviderTimeout

if TYPE_CHECKING:
    from orchestrator.domain.payment import Payment

_BANK_CODE = re.compile(r"[A-Z]{4}")
INQUIRY_AFTER_TIMEOUT = timedelta(seconds=1)
# The customer is on the bank's page; the bank's callback normally comes first.
INQUIRY_AFTER_REDIRECT = timedelta(seconds=10)


class NetBankingConnector:
    method: ClassVar[str] = "NET_BANKING"
    details_type: ClassVar[DetailsType] = NetBankingDetails
    manual_capture: ClassVar[bool] = False
    offers_emi: ClassVar[bool] = False

    def __init__(
        self, client: NetBankingClient, *, callback_url: str, default_return_url: str
    ) -> None:
        self._bank = client
        self._callback_url = callback_url
        self._default_return_url = default_return_url

    @staticmethod
    def validate_details(given: DetailsInput, bad: Reporter) -> None:
        if not _BANK_CODE.fullmatch(given.bank_code):
            bad("payment_details.bank_code", "must be a 4-letter bank code, e.g. HDFC, ICIC, SBIN")

    @staticmethod
    def read_details(given: DetailsInput) -> NetBankingDetails:
        return NetBankingDetails(bank_code=given.bank_code)

    async def prepare(self, request: StartRequest) -> Prepared:
        details = request.details
        assert isinstance(details, NetBankingDetails)
        # Refused up front: a payment for a bank the provider does not know could never be
        # paid, inquired about or expired.
        banks = await self._bank.banks()
        if details.bank_code not in banks:
            raise invalid_field(
                "payment_details.bank_code",
                f"is not a bank we take payments for; one of {', '.join(sorted(banks))}",
            )
        return Prepared(provider=PROVIDER_NAME, details=details)

    async def initiate(
        self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
    ) -> Step:
        details = request.details
        assert isinstance(details, NetBankingDetails)
        try:
            redirect = await self._bank.initiate(
                bank_code=details.bank_code,
                payment_id=payment.payment_id,
                merchant_id=payment.merchant_id,
                amount_paisa=payment.amount_paisa,
                currency=payment.currency,
                return_url=payment.callback_url or self._default_return_url,
                callback_url=self._callback_url,
                notes=payment.metadata,
            )
        except ProviderTimeout:
            # The bank may have registered the payment; the inquiry (or expiry) settles it.
            return AwaitCustomer(
                "the bank did not answer; status inquiry scheduled", INQUIRY_AFTER_TIMEOUT
            )
        except Unavailable:
            return Fail("provider_unavailable")
        return RequireAction(
            "the customer must authorise the payment on the bank's page",
            replace(kept_details(payment, NetBankingDetails), redirect_url=redirect.redirect_url),
            INQUIRY_AFTER_REDIRECT,
        )

    async def status(self, payment: Payment) -> ProviderResult:
        return await self._bank.status(_bank_code(payment), payment.payment_id)

    async def withdraw(self, payment: Payment) -> ProviderResult:
        return await self._bank.cancel(_bank_code(payment), payment.payment_id)

    async def capture(self, payment: Payment) -> ProviderResult:
        raise never_held(self.method)

    async def void(self, payment: Payment) -> ProviderResult:
        raise never_held(self.method)

    async def refund(self, payment: Payment, refund_id: str, amount_paisa: int) -> ProviderResult:
        return await self._bank.refund(
            bank_code=_bank_code(payment),
            payment_id=payment.payment_id,
            refund_id=refund_id,
            amount_paisa=amount_paisa,
            currency=payment.currency,
        )

    def late_success_is_hold(self, payment: Payment) -> bool:
        return False

    async def on_callback(self, payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
        return result_from_callback(payment, provider, doc)


def _bank_code(payment: Payment) -> str:
    return required_detail(payment, "bank_code", kept_details(payment, NetBankingDetails).bank_code)
