"""EMI plans: amortisation in whole paisa, no-cost plans priced by the merchant's discount."""

from __future__ import annotations

from fractions import Fraction

import pytest

from gateway_core.errors import InvalidArgument
from gateway_core.limits import MAX_AMOUNT_PAISA
from orchestrator.connectors.card.emi import MIN_AMOUNT_PAISA, choose, plans_for
from paygate.payments.v1 import payments_pb2


def test_no_plans_below_the_minimum() -> None:
    assert plans_for(MIN_AMOUNT_PAISA - 1) == []
    assert plans_for(MIN_AMOUNT_PAISA)


def test_regular_plan_matches_the_amortisation_formula() -> None:
    # ₹1,00,000 over 12 months at 16 % a year: the textbook instalment is ₹9,073.09.
    plan = next(p for p in plans_for(10_000_000) if p.plan_id == "emi_12m")
    assert plan.monthly_installment_paisa == 907_309
    assert plan.total_payable_paisa == 907_309 * 12
    assert plan.interest_paisa == plan.total_payable_paisa - 10_000_000
    assert plan.merchant_discount_paisa == 0


def test_no_cost_plan_costs_the_customer_only_the_price() -> None:
    plan = next(p for p in plans_for(3_000_000) if p.plan_id == "emi_6m_no_cost")
    assert plan.kind == "NO_COST"
    assert plan.interest_paisa == 0
    assert plan.monthly_installment_paisa == 500_000
    # The bank's loan is the discounted principal, whose instalments add up to the price.
    principal = 3_000_000 - plan.merchant_discount_paisa
    rate = Fraction(1400, 120_000)
    growth = (1 + rate) ** 6
    instalment = principal * rate * growth / (growth - 1)
    assert abs(instalment * 6 - 3_000_000) < 6  # within rounding of the principal
    assert 0 < plan.merchant_discount_paisa < 3_000_000 // 10


@pytest.mark.parametrize("amount", [300_000, 1_234_567, 99_999_999])
def test_every_figure_is_whole_paisa(amount: int) -> None:
    for plan in plans_for(amount):
        for value in (
            plan.monthly_installment_paisa,
            plan.total_payable_paisa,
            plan.interest_paisa,
            plan.merchant_discount_paisa,
        ):
            assert type(value) is int
            assert value >= 0


def test_choose_names_the_field_for_an_unknown_plan_or_card() -> None:
    assert (
        choose("emi_3m_no_cost", 500_000, "VISA", "payment_details.emi_plan_id").tenure_months == 3
    )
    with pytest.raises(InvalidArgument) as unknown:
        choose("emi_7m", 500_000, "VISA", "payment_details.emi_plan_id")
    assert unknown.value.field_violations[0].field == "payment_details.emi_plan_id"
    with pytest.raises(InvalidArgument):
        choose("emi_3m", 500_000, "DINERS", "payment_details.emi_plan_id")


def test_plans_for_the_largest_amount_allowed_fit_the_apis_int32_fields() -> None:
    # 2,147,483,647 paisa once reached here: its 3-month total overflowed EmiPlan (a 500).
    for plan in plans_for(MAX_AMOUNT_PAISA):
        payments_pb2.EmiPlan(
            tenure_months=plan.tenure_months,
            annual_interest_bps=plan.annual_interest_bps,
            monthly_installment_paisa=plan.monthly_installment_paisa,
            total_payable_paisa=plan.total_payable_paisa,
            interest_paisa=plan.interest_paisa,
            merchant_discount_paisa=plan.merchant_discount_paisa,
        )
