"""What a net banking payment keeps: the customer's bank, and the bank's page once known."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from orchestrator.connectors.base import stored_fields
from orchestrator.domain.payment import EmiTerms


@dataclass(frozen=True)
class NetBankingDetails:
    bank_code: str  # 4 letters, e.g. HDFC
    redirect_url: str = ""  # the bank's page where the customer authorises the payment

    def encode(self) -> dict[str, str]:
        return stored_fields(bank_code=self.bank_code, redirect_url=self.redirect_url)

    @classmethod
    def decode(cls, stored: Mapping[str, str]) -> Self:
        return cls(
            bank_code=stored.get("bank_code", ""), redirect_url=stored.get("redirect_url", "")
        )

    def emi_terms(self, amount_paisa: int) -> EmiTerms | None:
        return None
