"""What a UPI payment keeps of its request: the payer's VPA and the flow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from orchestrator.connectors.base import stored_fields
from orchestrator.domain.payment import EmiTerms


@dataclass(frozen=True)
class UpiDetails:
    vpa: str
    flow: str = "INTENT"  # INTENT (the customer's app opens the link) or COLLECT

    def encode(self) -> dict[str, str]:
        return stored_fields(vpa=self.vpa, upi_flow=self.flow)

    @classmethod
    def decode(cls, stored: Mapping[str, str]) -> Self:
        return cls(vpa=stored.get("vpa", ""), flow=stored.get("upi_flow", ""))

    def emi_terms(self, amount_paisa: int) -> EmiTerms | None:
        return None
