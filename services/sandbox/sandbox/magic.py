"""Sandbox magic values: the customer data that decides each simulated outcome.

This is the one home of the table that the README's "Sandbox test values" section documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# --- UPI -----------------------------------------------------------------------------------


class UpiOutcome(StrEnum):
    APPROVE = "approve"  # the customer approves in their app after the approval delay
    DECLINE = "decline"  # the customer's bank declines the debit after the approval delay
    TIMEOUT = "timeout"  # the switch hangs; a later status inquiry finds it succeeded
    LATE_FAILURE = "late_failure"  # the switch hangs; a later status inquiry finds it failed
    MANUAL = "manual"  # pending until the sandbox's approve/decline control decides
    NO_SUCH_VPA = "no_such_vpa"  # the VPA is not registered with any UPI app


MAGIC_VPAS: dict[str, UpiOutcome] = {
    "success@upi": UpiOutcome.APPROVE,
    "failure@upi": UpiOutcome.DECLINE,
    "timeout@upi": UpiOutcome.TIMEOUT,
    "latefail@upi": UpiOutcome.LATE_FAILURE,
    "manual@upi": UpiOutcome.MANUAL,
    "nouser@upi": UpiOutcome.NO_SUCH_VPA,
}

# A hanging InitiateTransaction answers after this long: well past the orchestrator's ~2 s
# deadline, so the caller sees DEADLINE_EXCEEDED and must resolve by status inquiry.
UPI_HANG_SECONDS = 5.0
# A hung transaction turns final this long after initiation, without any callback.
UPI_LATE_OUTCOME_SECONDS = 2.5

# NPCI response codes the switch reports on FAILED.
UPI_DEBIT_FAILED = "U30"  # failure@upi, latefail@upi
UPI_DECLINED_BY_CUSTOMER = "ZA"  # manual@upi declined through the sandbox control
UPI_INVALID_VPA = "ZH"  # a request naming nouser@upi as the payer
UPI_EXPIRED = "U69"  # nobody approved before expires_at


def upi_outcome(vpa: str) -> UpiOutcome:
    """Any VPA not in the table (and an intent with no payer VPA) behaves like success@upi."""
    return MAGIC_VPAS.get(vpa.strip().lower(), UpiOutcome.APPROVE)


def holder_name(vpa: str) -> str:
    """A masked display name, as PSPs return from a VPA lookup."""
    handle = vpa.split("@", 1)[0]
    return (handle[:1].upper() + "****") if handle else ""


# --- Wallets -------------------------------------------------------------------------------

WALLETS: tuple[str, ...] = ("PAYTM", "PHONEPE", "GOOGLE_PAY", "AMAZON_PAY")

AMPLE_BALANCE_PHONE = "9999999999"
EMPTY_WALLET_PHONE = "9000000000"
# Opening balance of a wallet the first time the sandbox sees its (wallet, phone).
OPENING_BALANCES_PAISA: dict[str, int] = {
    AMPLE_BALANCE_PHONE: 100_000_000,  # ₹10,00,000
    EMPTY_WALLET_PHONE: 0,
}
DEFAULT_OPENING_BALANCE_PAISA = 5_000_000  # ₹50,000, any other 10-digit phone


def opening_balance_paisa(phone: str) -> int:
    return OPENING_BALANCES_PAISA.get(phone, DEFAULT_OPENING_BALANCE_PAISA)


@dataclass(frozen=True)
class CashbackOffer:
    offer_id: str
    wallet: str
    description: str
    cashback_bps: int  # share of the amount, in basis points (500 = 5 %)
    max_cashback_paisa: int  # cap per payment; 0 for none
    min_amount_paisa: int  # smallest payment the offer applies to

    def applies_to(self, amount_paisa: int) -> bool:
        return amount_paisa >= self.min_amount_paisa

    def cashback_paisa(self, amount_paisa: int) -> int:
        """What the offer credits for a payment of `amount_paisa` (0 when it does not apply)."""
        if not self.applies_to(amount_paisa):
            return 0
        cashback = amount_paisa * self.cashback_bps // 10_000
        return min(cashback, self.max_cashback_paisa) if self.max_cashback_paisa else cashback


WALLET_OFFERS: tuple[CashbackOffer, ...] = (
    CashbackOffer(
        offer_id="PAYTM_CASHBACK_5",
        wallet="PAYTM",
        description="5% cashback up to ₹50 on payments of ₹100 or more",
        cashback_bps=500,
        max_cashback_paisa=5_000,
        min_amount_paisa=10_000,
    ),
    CashbackOffer(
        offer_id="PHONEPE_CASHBACK_2",
        wallet="PHONEPE",
        description="2% cashback up to ₹25 on every payment",
        cashback_bps=200,
        max_cashback_paisa=2_500,
        min_amount_paisa=0,
    ),
    CashbackOffer(
        offer_id="AMAZON_PAY_CASHBACK_10",
        wallet="AMAZON_PAY",
        description="10% cashback up to ₹100 on payments of ₹500 or more",
        cashback_bps=1_000,
        max_cashback_paisa=10_000,
        min_amount_paisa=50_000,
    ),
)

# --- Net banking ---------------------------------------------------------------------------

BANKS: dict[str, str] = {
    "HDFC": "HDFC Bank",
    "ICICI": "ICICI Bank",
    "SBIN": "State Bank of India",
    "AXIS": "Axis Bank",
    "KKBK": "Kotak Mahindra Bank",
    "FAIL": "Sandbox Failing Bank",  # declines every payment the customer approves
}
FAILING_BANK = "FAIL"

# --- Cards ---------------------------------------------------------------------------------

CARD_GATEWAYS: tuple[str, ...] = ("razorpay", "payu", "ccavenue")


class CardOutcome(StrEnum):
    APPROVE = "approve"  # frictionless 3-D Secure, then approved
    DECLINE = "decline"  # the issuer declines: do not honour
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the issuer declines: not enough money
    CHALLENGE = "challenge"  # 3-D Secure challenge (OTP), then approved
    CHALLENGE_THEN_DECLINE = "challenge_then_decline"  # challenge passed, then declined
    FIRST_GATEWAY_DOWN = "first_gateway_down"  # "razorpay" is unreachable; the others approve


MAGIC_CARDS: dict[str, CardOutcome] = {
    "4242424242424242": CardOutcome.APPROVE,  # Visa
    "5555555555554444": CardOutcome.APPROVE,  # Mastercard
    "4000000000000002": CardOutcome.DECLINE,
    "4000000000009995": CardOutcome.INSUFFICIENT_FUNDS,
    "4000000000003220": CardOutcome.CHALLENGE,
    "4000008400001629": CardOutcome.CHALLENGE_THEN_DECLINE,
    "4000000000000119": CardOutcome.FIRST_GATEWAY_DOWN,
}

# The acquirers that answer UNAVAILABLE (as if down) for FIRST_GATEWAY_DOWN cards.
DOWN_GATEWAYS_FOR_FAILOVER_CARD: frozenset[str] = frozenset({"razorpay"})

# The one OTP the ACS challenge page accepts; any other fails the authentication.
ACS_OTP = "123456"
# A challenge nobody completes in this long fails (callback status EXPIRED).
ACS_CHALLENGE_TTL_SECONDS = 600.0
THREE_DS_PROTOCOL_VERSION = "2.2.0"
# ECI of a successful authentication: Mastercard's "02", every other brand's (Visa) "05".
ECI_AUTHENTICATED: dict[str, str] = {"MASTERCARD": "02"}
ECI_AUTHENTICATED_DEFAULT = "05"

# An approved, uncaptured authorization is held this long; a later Capture fails.
CARD_AUTHORIZATION_HOLD_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class CardDecline:
    code: str  # ISO 8583 response code (CardAuthorization.decline_code)
    reason: str  # snake_case reason (CardAuthorization.decline_reason)


DECLINE_DO_NOT_HONOUR = CardDecline("05", "card_declined")
DECLINE_INSUFFICIENT_FUNDS = CardDecline("51", "insufficient_funds")
DECLINE_EXPIRED_CARD = CardDecline("54", "expired_card")
DECLINE_INCORRECT_CVC = CardDecline("N7", "incorrect_cvc")
# 3-D Secure data that does not match what the ACS issued for this payment and card.
DECLINE_AUTHENTICATION_FAILED = CardDecline("05", "authentication_failed")


def card_outcome(card_number: str) -> CardOutcome:
    """Any valid card number not in the table behaves like 4242 4242 4242 4242."""
    return MAGIC_CARDS.get(card_number, CardOutcome.APPROVE)


def requires_challenge(outcome: CardOutcome) -> bool:
    return outcome in (CardOutcome.CHALLENGE, CardOutcome.CHALLENGE_THEN_DECLINE)
