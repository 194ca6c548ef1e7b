"""Gateway fees: one pricing table in code and database, integer paisa, half-up rounding."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from gateway_core.fees import DEFAULT_PRICING, Fee, Pricing, compute_fee

# Custom prices exercise the fixed part and the cap that DEFAULT_PRICING never reaches.
PRICES = [
    *DEFAULT_PRICING.values(),
    Pricing("FLAT", rate_bps=0, fixed_paisa=1000),
    Pricing("MIXED", rate_bps=249, fixed_paisa=300),
    Pricing("ALL", rate_bps=10_000, fixed_paisa=0),
    Pricing("NO_GST", rate_bps=150, fixed_paisa=5, gst_bps=0),
]
AMOUNTS = [
    *range(1, 3001),
    *random.Random(20240601).sample(range(3001, 10**12), 3000),
    10**15,
]


def exact_half_up(amount: int, bps: int) -> int:
    """The reference, for non-negative inputs: exact rational arithmetic, half up."""
    return int(Fraction(amount * bps, 10_000) + Fraction(1, 2))


def test_every_payment_method_has_a_price() -> None:
    assert set(DEFAULT_PRICING) == {"UPI", "CARD", "WALLET", "NET_BANKING"}
    assert all(method == p.method for method, p in DEFAULT_PRICING.items())


def test_upi_carries_no_fee_and_no_gst() -> None:
    assert compute_fee(1_00_000_00, DEFAULT_PRICING["UPI"]) == Fee(fee_paisa=0, tax_paisa=0)


@pytest.mark.parametrize(
    ("method", "amount", "fee", "tax"),
    [
        ("CARD", 10_000, 200, 36),  # Rs 100: Rs 2 fee, Rs 0.36 GST
        ("CARD", 1_250, 25, 5),  # GST 4.5 paisa rounds up
        ("CARD", 25, 1, 0),  # fee 0.5 paisa rounds up; GST 0.18 rounds down
        ("CARD", 24, 0, 0),  # fee 0.48 paisa rounds down
        ("WALLET", 50, 1, 0),  # 0.95 paisa
        ("WALLET", 100_000, 1_900, 342),
        ("NET_BANKING", 9_99_999, 19_000, 3_420),  # 18999.981 paisa
    ],
)
def test_fee_is_rate_rounded_half_up_plus_gst_on_it(
    method: str, amount: int, fee: int, tax: int
) -> None:
    result = compute_fee(amount, DEFAULT_PRICING[method])
    assert result == Fee(fee_paisa=fee, tax_paisa=tax)
    assert result.total == fee + tax


def test_fixed_part_is_added_to_the_rate() -> None:
    assert compute_fee(10_000, Pricing("X", rate_bps=100, fixed_paisa=300)) == Fee(400, 72)


def test_fee_and_gst_never_exceed_a_tiny_amount() -> None:
    # Rs 10 fixed on a Rs 5 payment: the largest fee whose fee + 18 % fits is 424 (+76 GST).
    assert compute_fee(500, Pricing("X", rate_bps=0, fixed_paisa=1_000)) == Fee(424, 76)
    assert compute_fee(1, Pricing("X", rate_bps=0, fixed_paisa=1_000)) == Fee(1, 0)


@pytest.mark.parametrize("pricing", PRICES, ids=lambda p: p.method)
def test_property_fee_is_exact_integer_and_fits_in_the_amount(pricing: Pricing) -> None:
    for amount in AMOUNTS:
        fee = compute_fee(amount, pricing)
        assert type(fee.fee_paisa) is int
        assert type(fee.tax_paisa) is int
        assert fee.fee_paisa >= 0
        assert fee.tax_paisa >= 0
        assert fee.total <= amount
        assert fee.tax_paisa == exact_half_up(fee.fee_paisa, pricing.gst_bps)
        uncapped = exact_half_up(amount, pricing.rate_bps) + pricing.fixed_paisa
        if uncapped + exact_half_up(uncapped, pricing.gst_bps) <= amount:
            assert fee.fee_paisa == uncapped
        else:
            # Capped at the largest fee that still fits.
            bigger = fee.fee_paisa + 1
            assert bigger + exact_half_up(bigger, pricing.gst_bps) > amount


@pytest.mark.parametrize("amount", [0, -1])
def test_fee_needs_a_positive_amount(amount: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        compute_fee(amount, DEFAULT_PRICING["CARD"])


@pytest.mark.parametrize(
    ("rate_bps", "fixed_paisa", "gst_bps"),
    [(-1, 0, 1800), (10_001, 0, 1800), (0, -1, 1800), (0, 0, -1), (0, 0, 10_001)],
)
def test_pricing_out_of_range_is_refused(rate_bps: int, fixed_paisa: int, gst_bps: int) -> None:
    with pytest.raises(ValueError, match="X"):
        Pricing("X", rate_bps=rate_bps, fixed_paisa=fixed_paisa, gst_bps=gst_bps)
