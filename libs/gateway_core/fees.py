"""Fees: the per-method pricing table and the one fee formula.

The orchestrator charges merchants with it, and the sandbox's simulated providers charge the
gateway the same way in their settlement files (so a matched line's fee equals the ledger's),
hence its home in the shared library.

A fee is a rate on the amount (basis points, 1 bps = 0.01 %) plus a fixed part, rounded half up
to the paisa; GST (18 %) is charged on the fee, also rounded half up. Both are deducted from the
merchant's payable when the payment is captured. Only integers are used: a float cannot hold
most paisa amounts exactly.

Refunds do not return fees: the gateway did the work of the capture, so a refund debits the
merchant's payable by the full refunded amount and the fee and its GST stay charged (as at
Razorpay and most Indian gateways).

DEFAULT_PRICING is the one home of the prices: the orchestrator's `pricing` table is rendered
from it after every migration run (services/orchestrator/migrations/derived.py).
"""

from __future__ import annotations

from dataclasses import dataclass

BPS_PER_UNIT = 10_000  # basis points in 100 %
GST_BPS = 1_800  # GST on financial services in India: 18 %


@dataclass(frozen=True)
class Pricing:
    method: str  # payments.payment_method: UPI, CARD, WALLET, NET_BANKING
    rate_bps: int
    fixed_paisa: int
    gst_bps: int = GST_BPS
    # Charged when a dispute (chargeback) opens on a payment, whatever its outcome, plus GST.
    dispute_fee_paisa: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rate_bps <= BPS_PER_UNIT:
            raise ValueError(f"{self.method}: rate_bps must be 0-{BPS_PER_UNIT}")
        if self.fixed_paisa < 0:
            raise ValueError(f"{self.method}: fixed_paisa must not be negative")
        if not 0 <= self.gst_bps <= BPS_PER_UNIT:
            raise ValueError(f"{self.method}: gst_bps must be 0-{BPS_PER_UNIT}")
        if self.dispute_fee_paisa < 0:
            raise ValueError(f"{self.method}: dispute_fee_paisa must not be negative")


@dataclass(frozen=True)
class Fee:
    fee_paisa: int
    tax_paisa: int  # GST on the fee

    @property
    def total(self) -> int:
        return self.fee_paisa + self.tax_paisa


# The dispute fee: ₹150 a dispute, like the chargeback fees Indian gateways charge.
DISPUTE_FEE_PAISA = 15_000

# Razorpay-like standard rates. UPI (and RuPay debit) carry a zero merchant discount rate in
# India by law (Payment and Settlement Systems Act s.10A, since January 2020).
DEFAULT_PRICING: dict[str, Pricing] = {
    p.method: p
    for p in (
        Pricing("UPI", rate_bps=0, fixed_paisa=0, dispute_fee_paisa=DISPUTE_FEE_PAISA),
        Pricing("CARD", rate_bps=200, fixed_paisa=0, dispute_fee_paisa=DISPUTE_FEE_PAISA),
        Pricing("WALLET", rate_bps=190, fixed_paisa=0, dispute_fee_paisa=DISPUTE_FEE_PAISA),
        Pricing("NET_BANKING", rate_bps=190, fixed_paisa=0, dispute_fee_paisa=DISPUTE_FEE_PAISA),
    )
}


def compute_fee(amount_paisa: int, pricing: Pricing) -> Fee:
    """The fee and GST on a capture of `amount_paisa`.

    Fee plus GST never exceeds the amount (a fixed part could make it do so on tiny payments):
    the fee is then lowered to the largest one whose total still fits, so the merchant's
    payable never goes negative.
    """
    if amount_paisa <= 0:
        raise ValueError(f"a fee needs a positive amount, got {amount_paisa}")
    fee = _bps_half_up(amount_paisa, pricing.rate_bps) + pricing.fixed_paisa
    if fee + _bps_half_up(fee, pricing.gst_bps) > amount_paisa:
        fee = _largest_fee_within(amount_paisa, pricing.gst_bps)
    return Fee(fee_paisa=fee, tax_paisa=tax_on_fee(fee, pricing))


def dispute_fee(pricing: Pricing) -> Fee:
    """The fee (and its GST) a merchant pays when a dispute opens on a payment of this method.
    It is kept whatever the outcome: the work of handling the dispute was done."""
    return Fee(pricing.dispute_fee_paisa, tax_on_fee(pricing.dispute_fee_paisa, pricing))


def tax_on_fee(fee_paisa: int, pricing: Pricing) -> int:
    """GST on a fee of `fee_paisa`, rounded as `compute_fee` rounds it."""
    if fee_paisa < 0:
        raise ValueError(f"a fee cannot be negative, got {fee_paisa}")
    return _bps_half_up(fee_paisa, pricing.gst_bps)


def _bps_half_up(paisa: int, bps: int) -> int:
    """paisa * bps / 10000, rounded half up, for non-negative inputs: (2n + d) // 2d."""
    return (2 * paisa * bps + BPS_PER_UNIT) // (2 * BPS_PER_UNIT)


def _largest_fee_within(amount_paisa: int, gst_bps: int) -> int:
    # fee * (1 + gst) <= amount, up to the rounding of the GST: start at the exact floor and
    # step (at most a paisa or two) to the largest fee whose total fits.
    fee = amount_paisa * BPS_PER_UNIT // (BPS_PER_UNIT + gst_bps)
    while fee > 0 and fee + _bps_half_up(fee, gst_bps) > amount_paisa:
        fee -= 1
    while fee + 1 + _bps_half_up(fee + 1, gst_bps) <= amount_paisa:
        fee += 1
    return fee
