"""Each method's stored details: decode(encode(x)) is x, and what a payment stored (by this
code or an earlier one) reads back and writes again unchanged."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orchestrator.connectors.base import DetailsType
from orchestrator.connectors.card import CardDetails, emi
from orchestrator.connectors.netbanking import NetBankingDetails
from orchestrator.connectors.registry import CONNECTOR_TYPES, DETAILS_TYPES
from orchestrator.connectors.upi import UpiDetails
from orchestrator.connectors.wallet import WalletDetails
from orchestrator.domain.payment import EmiTerms, MethodDetails

KEPT: list[tuple[str, MethodDetails]] = [
    ("UPI", UpiDetails(vpa="user@okbank")),
    ("UPI", UpiDetails(vpa="user@okbank", flow="COLLECT")),
    ("WALLET", WalletDetails(wallet="PAYTM", phone="9999999999")),
    ("NET_BANKING", NetBankingDetails(bank_code="HDFC")),
    ("NET_BANKING", NetBankingDetails(bank_code="HDFC", redirect_url="https://bank.example/p/1")),
    ("CARD", CardDetails(card_token="tok_1", last4="4242", brand="VISA")),
    (
        "CARD",
        CardDetails(
            card_token="tok_1",
            last4="4242",
            brand="VISA",
            emi_plan_id="emi_6m_no_cost",
            emi_tenure_months=6,
            emi_merchant_discount_paisa=0,
            redirect_url="https://acs.example/c/1",
            three_ds_transaction_id="3ds_1",
        ),
    ),
]

# What payments hold in the payment_details column, including earlier shapes.
STORED: list[tuple[DetailsType, Mapping[str, str]]] = [
    (UpiDetails, {"vpa": "user@okbank", "upi_flow": "INTENT"}),
    (UpiDetails, {"vpa": "user@okbank"}),
    (WalletDetails, {"wallet": "PHONEPE", "phone": "9876543210"}),
    (NetBankingDetails, {"bank_code": "SBIN", "redirect_url": "https://bank.example/p"}),
    (CardDetails, {"card_token": "tok_1", "last4": "1111", "brand": "VISA"}),
    (
        CardDetails,
        {
            "card_token": "tok_1",
            "last4": "1111",
            "brand": "VISA",
            "emi_plan_id": "emi_3m",
            "emi_tenure_months": "3",
            "emi_merchant_discount_paisa": "0",
        },
    ),
    # Created before the chosen plan was kept: the plan id alone.
    (CardDetails, {"card_token": "tok_1", "brand": "VISA", "emi_plan_id": "emi_3m"}),
]


@pytest.mark.parametrize(("method", "details"), KEPT, ids=repr)
def test_details_read_back_as_they_were_kept(method: str, details: MethodDetails) -> None:
    assert DETAILS_TYPES[method].decode(details.encode()) == details


@pytest.mark.parametrize(("kind", "stored"), STORED, ids=repr)
def test_stored_details_are_written_back_unchanged(
    kind: DetailsType, stored: Mapping[str, str]
) -> None:
    assert kind.decode(stored).encode() == stored


def test_unset_fields_are_not_stored() -> None:
    # The wire prints what is stored: a UPI payment must show no empty card or wallet fields.
    assert UpiDetails(vpa="a@b", flow="").encode() == {"vpa": "a@b"}
    assert CardDetails(card_token="tok_1").encode() == {"card_token": "tok_1"}


def test_the_registry_names_each_methods_details() -> None:
    assert set(DETAILS_TYPES) == set(CONNECTOR_TYPES)
    assert DETAILS_TYPES["UPI"] is UpiDetails
    assert DETAILS_TYPES["CARD"] is CardDetails


def test_only_card_details_carry_emi_terms() -> None:
    kept = CardDetails(
        card_token="tok_1",
        brand="VISA",
        emi_plan_id="emi_6m_no_cost",
        emi_tenure_months=6,
        emi_merchant_discount_paisa=1234,
    )
    assert kept.emi_terms(600_000) == EmiTerms(6, 1234)
    assert CardDetails(card_token="tok_1").emi_terms(600_000) is None
    assert UpiDetails(vpa="a@b").emi_terms(600_000) is None


def test_a_plan_kept_by_id_alone_is_looked_up_as_it_was_chosen() -> None:
    plan = next(p for p in emi.plans_for(600_000) if p.plan_id == "emi_6m_no_cost")
    legacy = CardDetails(card_token="tok_1", brand="VISA", emi_plan_id=plan.plan_id)
    assert legacy.emi_terms(600_000) == EmiTerms(6, plan.merchant_discount_paisa)
