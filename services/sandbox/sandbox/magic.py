"""Sandbox magic values: the customer data that decides each simulated outcome.

This is the one home of the table that the README's "Sandbox test values" section documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# --- Provider faults: hangs ----------------------------------------------------------------
#
# A hang is a lost response: the provider does the work, then answers only after the caller's
# deadline has passed by HANG_MARGIN_SECONDS. The caller sees DEADLINE_EXCEEDED; a status
# inquiry, or a repeat of the same call, finds the outcome at once. The caller's deadline (or
# the sandbox's shutdown) ends the waiting, never the work already done. The deadlines are the
# orchestrator's per provider (a test keeps them in step). Read at call time as `magic.X`, so a
# test may shorten them.
HANG_MARGIN_SECONDS = 3.0
UPI_DEADLINE_SECONDS = 2.0
WALLET_DEADLINE_SECONDS = 3.0
NETBANKING_DEADLINE_SECONDS = 3.0
CARD_DEADLINE_SECONDS = 5.0  # acquirer and 3-D Secure calls alike

UPI_HANG_SECONDS = UPI_DEADLINE_SECONDS + HANG_MARGIN_SECONDS
WALLET_HANG_SECONDS = WALLET_DEADLINE_SECONDS + HANG_MARGIN_SECONDS
# A DEBIT_LATE debit lands this long after its request: past the caller's deadline.
WALLET_LATE_DEBIT_SECONDS = WALLET_DEADLINE_SECONDS + HANG_MARGIN_SECONDS
NETBANKING_HANG_SECONDS = NETBANKING_DEADLINE_SECONDS + HANG_MARGIN_SECONDS
CARD_HANG_SECONDS = CARD_DEADLINE_SECONDS + HANG_MARGIN_SECONDS
# A slow acquirer answers inside its deadline, late enough for an impatient client to give up.
CARD_SLOW_AUTHORIZATION_SECONDS = 3.0

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

# A hung transaction turns final this long after initiation, without any callback.
UPI_LATE_OUTCOME_SECONDS = 2.5

# NPCI response codes the switch reports on FAILED.
UPI_DEBIT_FAILED = "U30"  # failure@upi, latefail@upi
UPI_DECLINED_BY_CUSTOMER = "ZA"  # manual@upi declined through the sandbox control
UPI_INVALID_VPA = "ZH"  # a request naming nouser@upi as the payer
UPI_EXPIRED = "U69"  # nobody approved before expires_at
# The payee (the gateway) withdrew a pending request with CancelTransaction. NPCI publishes no
# code for this; "PC" (payee cancelled) is the sandbox's own, in NPCI's two-character shape.
UPI_CANCELLED_BY_PAYEE = "PC"


def upi_outcome(vpa: str) -> UpiOutcome:
    """Any VPA not in the table (and an intent with no payer VPA) behaves like success@upi."""
    return MAGIC_VPAS.get(vpa.strip().lower(), UpiOutcome.APPROVE)


def holder_name(vpa: str) -> str:
    """A masked display name, as PSPs return from a VPA lookup."""
    handle = vpa.split("@", 1)[0]
    return (handle[:1].upper() + "****") if handle else ""


# --- Wallets -------------------------------------------------------------------------------

WALLETS: tuple[str, ...] = ("PAYTM", "PHONEPE", "GOOGLE_PAY", "AMAZON_PAY")


class WalletOutcome(StrEnum):
    NORMAL = "normal"  # the wallet answers every call at once
    DEBIT_TIMEOUT = "debit_timeout"  # the first debit of a payment happens, its answer hangs
    # The debit request reaches the wallet late: it is applied after the caller's deadline,
    # and the caller gets no answer. A status inquiry meanwhile finds no such debit.
    DEBIT_LATE = "debit_late"
    DOWN = "down"  # every call about this phone answers UNAVAILABLE
    REFUND_TIMEOUT = "refund_timeout"  # the first call of each refund is processed, then hangs
    REFUND_FAILS = "refund_fails"  # every refund answers FAILED, nothing is credited back


AMPLE_BALANCE_PHONE = "9999999999"
EMPTY_WALLET_PHONE = "9000000000"
MAGIC_PHONES: dict[str, WalletOutcome] = {
    "9000000001": WalletOutcome.DEBIT_TIMEOUT,
    "9000000002": WalletOutcome.DOWN,
    "9000000003": WalletOutcome.REFUND_TIMEOUT,
    "9000000004": WalletOutcome.REFUND_FAILS,
    "9000000005": WalletOutcome.DEBIT_LATE,
}
AMPLE_BALANCE_PAISA = 100_000_000  # ₹10,00,000
# Opening balance of a wallet the first time the sandbox sees its (wallet, phone).
OPENING_BALANCES_PAISA: dict[str, int] = {
    AMPLE_BALANCE_PHONE: AMPLE_BALANCE_PAISA,
    EMPTY_WALLET_PHONE: 0,
    **{phone: AMPLE_BALANCE_PAISA for phone in MAGIC_PHONES},
}
DEFAULT_OPENING_BALANCE_PAISA = 5_000_000  # ₹50,000, any other 10-digit phone
# failure_code of every refund to a REFUND_FAILS wallet.
WALLET_REFUND_NOT_ALLOWED = "REFUND_NOT_ALLOWED"


def opening_balance_paisa(phone: str) -> int:
    return OPENING_BALANCES_PAISA.get(phone, DEFAULT_OPENING_BALANCE_PAISA)


def wallet_outcome(phone: str) -> WalletOutcome:
    return MAGIC_PHONES.get(phone, WalletOutcome.NORMAL)


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
    "ICIC": "ICICI Bank",
    "SBIN": "State Bank of India",
    "AXIS": "Axis Bank",
    "KKBK": "Kotak Mahindra Bank",
    "FAIL": "Sandbox Failing Bank",  # declines every payment the customer approves
    "DOWN": "Sandbox Unreachable Bank",  # InitiateNetBankingPayment answers UNAVAILABLE
    "HANG": "Sandbox Hanging Bank",  # the first initiation registers the payment, then hangs
}
FAILING_BANK = "FAIL"
DOWN_BANK = "DOWN"
HANGING_BANK = "HANG"

# --- Cards ---------------------------------------------------------------------------------

CARD_GATEWAYS: tuple[str, ...] = ("razorpay", "payu", "ccavenue")


class CardOutcome(StrEnum):
    APPROVE = "approve"  # frictionless 3-D Secure, then approved
    DECLINE = "decline"  # the issuer declines: do not honour
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the issuer declines: not enough money
    CHALLENGE = "challenge"  # 3-D Secure challenge (OTP), then approved
    CHALLENGE_THEN_DECLINE = "challenge_then_decline"  # challenge passed, then declined
    FIRST_GATEWAY_DOWN = "first_gateway_down"  # "razorpay" is unreachable; the others approve
    # Provider faults; the issuer approves frictionless otherwise.
    SLOW_AUTHORIZATION = "slow_authorization"  # Authorize answers after a few seconds
    AUTHORIZATION_TIMEOUT = "authorization_timeout"  # approved and recorded; the answer hangs
    ALL_ACQUIRERS_DOWN = "all_acquirers_down"  # every acquirer answers UNAVAILABLE
    THREE_DS_TIMEOUT = "three_ds_timeout"  # authenticated; Authenticate3ds's answer hangs
    THREE_DS_DOWN = "three_ds_down"  # Authenticate3ds answers UNAVAILABLE
    CAPTURE_TIMEOUT = "capture_timeout"  # the capture is applied; its answer hangs
    VOID_TIMEOUT = "void_timeout"  # the void is applied; its answer hangs
    VOID_REFUSED = "void_refused"  # Void answers FAILED; the authorization stays capturable
    # Approved frictionless; SANDBOX_CHARGEBACK_DELAY_MS after its capture the acquirer raises a
    # chargeback (a dispute) on it.
    CHARGEBACK = "chargeback"


MAGIC_CARDS: dict[str, CardOutcome] = {
    "4242424242424242": CardOutcome.APPROVE,  # Visa
    "5555555555554444": CardOutcome.APPROVE,  # Mastercard
    "4000000000000002": CardOutcome.DECLINE,
    "4000000000009995": CardOutcome.INSUFFICIENT_FUNDS,
    "4000000000003220": CardOutcome.CHALLENGE,
    "4000008400001629": CardOutcome.CHALLENGE_THEN_DECLINE,
    "4000000000000119": CardOutcome.FIRST_GATEWAY_DOWN,
    # 4000 0000 0000 5<call><fault><check>: call 0 Authorize, 1 Authenticate3ds, 2 Capture,
    # 3 Void; fault 0 slow, 3 down, 4 timeout, 9 refused.
    "4000000000005001": CardOutcome.SLOW_AUTHORIZATION,
    "4000000000005035": CardOutcome.ALL_ACQUIRERS_DOWN,
    "4000000000005043": CardOutcome.AUTHORIZATION_TIMEOUT,
    "4000000000005134": CardOutcome.THREE_DS_DOWN,
    "4000000000005142": CardOutcome.THREE_DS_TIMEOUT,
    "4000000000005241": CardOutcome.CAPTURE_TIMEOUT,
    "4000000000005340": CardOutcome.VOID_TIMEOUT,
    "4000000000005399": CardOutcome.VOID_REFUSED,
    "4000000000000259": CardOutcome.CHARGEBACK,
}

# The acquirers that answer UNAVAILABLE to Authorize (as if down), per card outcome.
DOWN_ACQUIRERS: dict[CardOutcome, frozenset[str]] = {
    CardOutcome.FIRST_GATEWAY_DOWN: frozenset({"razorpay"}),
    CardOutcome.ALL_ACQUIRERS_DOWN: frozenset(CARD_GATEWAYS),
}
# failure_code of a Void the acquirer refuses (VOID_REFUSED cards).
VOID_NOT_ALLOWED = "VOID_NOT_ALLOWED"

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


# --- Disputes ------------------------------------------------------------------------------

# Reason codes a dispute may carry: card network codes (Visa, Mastercard) for card payments,
# NPCI UDIR codes for UPI. The first of each is the default.
CARD_CHARGEBACK_REASONS: tuple[str, ...] = ("4853", "4837", "4855", "10.4", "13.1", "13.3")
CARD_CHARGEBACK_REASON = CARD_CHARGEBACK_REASONS[0]
UPI_DISPUTE_REASONS: tuple[str, ...] = ("U008", "U021", "U022", "U023")
UPI_DISPUTE_REASON = UPI_DISPUTE_REASONS[0]
# Evidence whose summary contains this wins the dispute; any other evidence loses it.
WINNING_EVIDENCE = "winning_evidence"


def card_outcome(card_number: str) -> CardOutcome:
    """Any valid card number not in the table behaves like 4242 4242 4242 4242."""
    return MAGIC_CARDS.get(card_number, CardOutcome.APPROVE)


def requires_challenge(outcome: CardOutcome) -> bool:
    return outcome in (CardOutcome.CHALLENGE, CardOutcome.CHALLENGE_THEN_DECLINE)
