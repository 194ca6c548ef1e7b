"""What a wallet payment keeps of its request: the wallet and the customer's phone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from orchestrator.connectors.base import stored_fields
from orchestrator.domain.payment import EmiTerms


@dataclass(frozen=True)
class WalletDetails:
    wallet: str  # one of connector.WALLETS
    phone: str  # the customer's 10-digit mobile number, their wallet's id

    def encode(self) -> dict[str, str]:
        return stored_fields(wallet=self.wallet, phone=self.phone)

    @classmethod
    def decode(cls, stored: Mapping[str, str]) -> Self:
        return cls(wallet=stored.get("wallet", ""), phone=stored.get("phone", ""))

    def emi_terms(self, amount_paisa: int) -> EmiTerms | None:
        return None
