"""A card payment's details: what the request gave (`CardInput`, which may hold a card number
and is never stored) and what the payment keeps (`CardDetails`: the vault's token, never the
card)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from gateway_core.cards import ValidCard
from orchestrator.connectors.base import stored_fields
from orchestrator.connectors.card import emi
from orchestrator.domain.payment import EmiTerms

# The stored keys of the EMI plan chosen at creation, so the authorization and the capture's
# discount journal use that choice and never choose again.
TENURE_MONTHS = "emi_tenure_months"
MERCHANT_DISCOUNT = "emi_merchant_discount_paisa"


@dataclass(frozen=True)
class CardInput:
    """Exactly one of a card (tokenized by the vault first, never stored; its number and CVV
    are gateway_core.cards primitives that never print themselves) or a saved card's token."""

    card: ValidCard | None = None
    holder_name: str = ""
    card_token: str = ""
    emi_plan_id: str = ""


@dataclass(frozen=True)
class CardDetails:
    card_token: str
    last4: str = ""
    brand: str = ""
    emi_plan_id: str = ""
    # None on payments created before the chosen plan was kept with them.
    emi_tenure_months: int | None = None
    emi_merchant_discount_paisa: int | None = None
    # While a 3-D Secure challenge waits: the ACS page and the transaction it is about.
    redirect_url: str = ""
    three_ds_transaction_id: str = ""

    def encode(self) -> dict[str, str]:
        return stored_fields(
            card_token=self.card_token,
            last4=self.last4,
            brand=self.brand,
            emi_plan_id=self.emi_plan_id,
            emi_tenure_months=_text(self.emi_tenure_months),
            emi_merchant_discount_paisa=_text(self.emi_merchant_discount_paisa),
            redirect_url=self.redirect_url,
            three_ds_transaction_id=self.three_ds_transaction_id,
        )

    @classmethod
    def decode(cls, stored: Mapping[str, str]) -> Self:
        return cls(
            card_token=stored.get("card_token", ""),
            last4=stored.get("last4", ""),
            brand=stored.get("brand", ""),
            emi_plan_id=stored.get(emi.PLAN_ID, ""),
            emi_tenure_months=_number(stored.get(TENURE_MONTHS)),
            emi_merchant_discount_paisa=_number(stored.get(MERCHANT_DISCOUNT)),
            redirect_url=stored.get("redirect_url", ""),
            three_ds_transaction_id=stored.get("three_ds_transaction_id", ""),
        )

    def emi_terms(self, amount_paisa: int) -> EmiTerms | None:
        """The plan chosen at creation (None: no EMI). A payment created before the choice was
        kept has only its plan id: its plan is looked up once more, as it was then."""
        if not self.emi_plan_id:
            return None
        if self.emi_tenure_months is not None:
            return EmiTerms(self.emi_tenure_months, self.emi_merchant_discount_paisa or 0)
        plan = emi.choose(
            self.emi_plan_id, amount_paisa, self.brand, f"payment_details.{emi.PLAN_ID}"
        )
        return EmiTerms(plan.tenure_months, plan.merchant_discount_paisa)


def _text(number: int | None) -> str:
    return "" if number is None else str(number)


def _number(text: str | None) -> int | None:
    return None if text is None else int(text)
