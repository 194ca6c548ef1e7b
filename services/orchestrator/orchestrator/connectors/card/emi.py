"""Card EMI (equated monthly instalments): plans by tenure, regular and no-cost.

Regular EMI: the issuing bank lends the amount at the plan's annual rate; the customer pays the
amortised instalment for the tenure. No-cost EMI: the customer pays only the price, in equal
instalments; the merchant gives the bank an upfront discount equal to the interest, so the
bank's loan is the discounted principal whose instalments add up to the price.

Rates are exact fractions; only the results are rounded, half up, to whole paisa.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from gateway_core.errors import invalid_field

MIN_AMOUNT_PAISA = 300_000  # ₹3,000: below it banks offer no EMI
ELIGIBLE_BRANDS = frozenset({"VISA", "MASTERCARD", "RUPAY", "AMEX"})


@dataclass(frozen=True)
class Tenure:
    months: int
    annual_rate_bps: int
    no_cost_available: bool


# The sandbox issuer's offer; real issuers publish theirs per card product.
TENURES: tuple[Tenure, ...] = (
    Tenure(3, 1300, True),
    Tenure(6, 1400, True),
    Tenure(9, 1500, False),
    Tenure(12, 1600, False),
    Tenure(18, 1600, False),
    Tenure(24, 1650, False),
)


@dataclass(frozen=True)
class EmiPlan:
    plan_id: str
    tenure_months: int
    kind: str  # "REGULAR" or "NO_COST"
    annual_interest_bps: int
    monthly_installment_paisa: int
    total_payable_paisa: int  # what the customer pays over the tenure
    interest_paisa: int  # what the customer pays beyond the price (0 for no-cost)
    merchant_discount_paisa: int  # what the merchant gives up (no-cost only)


def plans_for(amount_paisa: int) -> list[EmiPlan]:
    """Every plan open to this amount, shortest tenure first, no-cost before regular."""
    if amount_paisa < MIN_AMOUNT_PAISA:
        return []
    plans: list[EmiPlan] = []
    for tenure in TENURES:
        if tenure.no_cost_available:
            plans.append(_no_cost(amount_paisa, tenure))
        plans.append(_regular(amount_paisa, tenure))
    return plans


def choose(plan_id: str, amount_paisa: int, brand: str, field: str) -> EmiPlan:
    """The plan a payment asked for, if this card and amount may have it."""
    if brand not in ELIGIBLE_BRANDS:
        raise invalid_field(field, f"EMI is not available on {brand} cards")
    for plan in plans_for(amount_paisa):
        if plan.plan_id == plan_id:
            return plan
    raise invalid_field(
        field,
        f"no EMI plan {plan_id!r} for {amount_paisa} paisa (see GET /api/v1/emi/plans)",
    )


# The request field naming the plan (and the key a card payment's details keep it under).
PLAN_ID = "emi_plan_id"


def _factor(tenure: Tenure) -> Fraction:
    """Instalment per unit of principal: r(1+r)^n / ((1+r)^n - 1), r the monthly rate."""
    rate = Fraction(tenure.annual_rate_bps, 10_000 * 12)
    growth = (1 + rate) ** tenure.months
    return rate * growth / (growth - 1)


def _regular(amount_paisa: int, tenure: Tenure) -> EmiPlan:
    instalment = _half_up(amount_paisa * _factor(tenure))
    total = instalment * tenure.months
    return EmiPlan(
        plan_id=f"emi_{tenure.months}m",
        tenure_months=tenure.months,
        kind="REGULAR",
        annual_interest_bps=tenure.annual_rate_bps,
        monthly_installment_paisa=instalment,
        total_payable_paisa=total,
        interest_paisa=total - amount_paisa,
        merchant_discount_paisa=0,
    )


def _no_cost(amount_paisa: int, tenure: Tenure) -> EmiPlan:
    # The bank lends p with p * factor * months == price: the discount is price - p.
    principal = Fraction(amount_paisa) / (_factor(tenure) * tenure.months)
    discount = amount_paisa - _half_up(principal)
    instalment = _half_up(Fraction(amount_paisa, tenure.months))
    return EmiPlan(
        plan_id=f"emi_{tenure.months}m_no_cost",
        tenure_months=tenure.months,
        kind="NO_COST",
        annual_interest_bps=tenure.annual_rate_bps,
        monthly_installment_paisa=instalment,
        total_payable_paisa=amount_paisa,
        interest_paisa=0,
        merchant_discount_paisa=discount,
    )


def _half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)) // 1)
