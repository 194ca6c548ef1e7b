"""Wallets (Paytm, PhonePe, Google Pay, Amazon Pay): an instant debit of the customer's
balance, so a held authorization has the money already and a void is a full refund."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from gateway_core.errors import Unavailable
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
    kept_details,
    required_detail,
    result_from_callback,
)
from orchestrator.connectors.wallet.client import WalletClient, provider_name
from orchestrator.connectors.wallet.details import WalletDetails
from orchestrator.providers.base import Outcome, ProviderResult, ProviderTimeout

if TYPE_CHECKING:
    from orchestrator.domain.payment import Payment

WALLETS = frozenset({"PAYTM", "PHONEPE", "GOOGLE_PAY", "AMAZON_PAY"})
_PHONE = re.compile(r"[6-9]\d{9}")
INQUIRY_AFTER_TIMEOUT = timedelta(seconds=1)


@dataclass(frozen=True)
class _Funded(Prepared):
    balance_paisa: int = 0


class WalletConnector:
    method: ClassVar[str] = "WALLET"
    details_type: ClassVar[DetailsType] = WalletDetails
    manual_capture: ClassVar[bool] = True
    offers_emi: ClassVar[bool] = False

    def __init__(self, client: WalletClient) -> None:
        self._wallet = client

    @staticmethod
    def validate_details(given: DetailsInput, bad: Reporter) -> None:
        if not given.wallet:
            bad("payment_details.wallet", f"is required: one of {', '.join(sorted(WALLETS))}")
        elif given.wallet not in WALLETS:
            bad("payment_details.wallet", f"unknown wallet; one of {', '.join(sorted(WALLETS))}")
        if not _PHONE.fullmatch(given.phone):
            bad("payment_details.phone", "must be a 10-digit Indian mobile number")

    @staticmethod
    def read_details(given: DetailsInput) -> WalletDetails:
        return WalletDetails(wallet=given.wallet, phone=given.phone)

    async def prepare(self, request: StartRequest) -> Prepared:
        details = request.details
        assert isinstance(details, WalletDetails)
        # Balance first: an empty wallet fails cleanly, with no debit attempted.
        try:
            balance = await self._wallet.balance(details.wallet, details.phone)
        except ProviderTimeout as exc:  # nothing exists yet: the merchant may simply retry
            raise Unavailable(
                f"{details.wallet} did not answer; retry shortly", reason="PROVIDER_UNAVAILABLE"
            ) from exc
        return _Funded(
            provider=provider_name(details.wallet),
            details=details,
            balance_paisa=balance,
        )

    async def initiate(
        self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
    ) -> Step:
        details = request.details
        assert isinstance(details, WalletDetails)
        assert isinstance(prepared, _Funded)
        if prepared.balance_paisa < payment.amount_paisa:
            return Fail("insufficient_balance")
        try:
            offer_id = await self._wallet.best_offer(
                details.wallet, payment.merchant_id, payment.amount_paisa
            )
            result = await self._wallet.debit(
                wallet=details.wallet,
                phone=details.phone,
                payment_id=payment.payment_id,
                merchant_id=payment.merchant_id,
                amount_paisa=payment.amount_paisa,
                currency=payment.currency,
                offer_id=offer_id,
                notes=payment.metadata,
            )
        except ProviderTimeout:
            return AwaitCustomer(
                "the wallet did not answer; status inquiry scheduled", INQUIRY_AFTER_TIMEOUT
            )
        return Apply(result, f"{details.wallet} debit")

    async def status(self, payment: Payment) -> ProviderResult:
        return await self._wallet.status(_wallet(payment), payment.payment_id)

    async def withdraw(self, payment: Payment) -> ProviderResult:
        # A debit is instant: it happened or it did not.
        return await self.status(payment)

    async def capture(self, payment: Payment) -> ProviderResult:
        # The debit took the money at authorization; capture is ours alone.
        return ProviderResult(Outcome.SUCCESS, payment.external_txn_id)

    async def void(self, payment: Payment) -> ProviderResult:
        # The wallet debited at authorization: the void is a full refund, deduped by its id.
        return await self.refund(payment, f"VOID_{payment.payment_id}", payment.amount_paisa)

    async def refund(self, payment: Payment, refund_id: str, amount_paisa: int) -> ProviderResult:
        return await self._wallet.refund(
            wallet=_wallet(payment),
            wallet_txn_id=payment.external_txn_id,
            payment_id=payment.payment_id,
            refund_id=refund_id,
            amount_paisa=amount_paisa,
            currency=payment.currency,
        )

    def late_success_is_hold(self, payment: Payment) -> bool:
        return False  # a debit took the money: it is refunded

    async def on_callback(self, payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
        return result_from_callback(payment, provider, doc)


def _wallet(payment: Payment) -> str:
    return required_detail(payment, "wallet", kept_details(payment, WalletDetails).wallet)
