"""Model features: the one definition shared by training and serving (DESIGN.md §5).

`Features` holds what the model may know about one payment: the CheckTransactionRequest fields
that matter, plus context counts the service already keeps for velocity (Redis windows) and
passes in. `Features.vector()` turns it into the numbers the model was trained on, in
`FEATURE_NAMES` order. The training script (services/fraud/training) builds its synthetic rows
with this same class, so a change here changes the model's inputs in both places at once; the
model file records `FEATURE_NAMES` and `load_scorer` refuses a file whose names differ.

Raw inputs (from the request):
  amount_paisa       payment amount in paisa (integer money; only its log and bands are used)
  payment_method     "UPI", "CARD", "WALLET" or "NET_BANKING"
  email              customer email, may be empty
  merchant_category  MCC, e.g. "5411"
  user_agent         device.user_agent, may be empty
  device_fingerprint device.fingerprint_id, may be empty
  occurred_at        payment time (aware datetime; converted to IST for the hour)

Context (from the service's velocity windows and device history; 0/False when unknown):
  user_txn_count_1h          payments by this user in the last hour, this one excluded
  card_txn_count_1h          payments on this card fingerprint in the last hour
  device_txn_count_1h        payments from this device fingerprint in the last hour
  ip_txn_count_1h            payments from this IP address in the last hour
  device_distinct_cards_24h  distinct card fingerprints seen on this device in 24 h
  device_is_new              first time this user pays from this device
  ip_is_new                  first time this user pays from this IP address
  card_is_new                card fingerprint first seen (anywhere) in the last 24 h
  user_age_days              days since the user's first payment (0 for a new user)

Model inputs (`FEATURE_NAMES`, each documented in `_FEATURE_DOCS`) are derived below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")

# Amount bands in paisa.
SMALL_AMOUNT_PAISA = 100_00  # under Rs 100: the card-testing range
HIGH_AMOUNT_PAISA = 20_000_00  # Rs 20,000 and up

# MCCs with high fraud exposure: money transfer, quasi-cash, digital goods/games, gambling,
# direct marketing, crypto/stored value.
HIGH_RISK_MCCS = frozenset({"4829", "6051", "6540", "5816", "5967", "7995", "6012"})

# Disposable-mailbox domains (a small, stable list; extend with care: it changes the model).
DISPOSABLE_EMAIL_DOMAINS = frozenset(
    {"mailinator.com", "guerrillamail.com", "10minutemail.com", "tempmail.com", "yopmail.com"}
)

# Automation markers in a User-Agent.
_BOT_UA_MARKERS = ("headless", "python-requests", "curl/", "wget/", "phantomjs", "selenium")

_FEATURE_DOCS: dict[str, str] = {
    "log_amount": "ln(1 + amount in rupees)",
    "amount_small": "1 if amount < Rs 100 (card-testing range)",
    "amount_high": "1 if amount >= Rs 20,000",
    "method_card": "1 if payment_method is CARD",
    "method_upi": "1 if payment_method is UPI",
    "method_wallet": "1 if payment_method is WALLET",
    "odd_hour": "1 if occurred_at is between 01:00 and 05:00 IST",
    "has_email": "1 if an email was sent",
    "email_disposable": "1 if the email's domain is a known disposable-mailbox domain",
    "mcc_high_risk": "1 if merchant_category is in HIGH_RISK_MCCS",
    "ua_missing_or_bot": "1 if the User-Agent is empty or looks automated",
    "no_device_fingerprint": "1 if the device fingerprint is missing",
    "log_user_txn_1h": "ln(1 + user_txn_count_1h)",
    "log_card_txn_1h": "ln(1 + card_txn_count_1h)",
    "log_device_txn_1h": "ln(1 + device_txn_count_1h)",
    "log_ip_txn_1h": "ln(1 + ip_txn_count_1h)",
    "log_device_cards_24h": "ln(1 + device_distinct_cards_24h)",
    "device_is_new": "1 if the user has not paid from this device before",
    "ip_is_new": "1 if the user has not paid from this IP before",
    "card_is_new": "1 if the card was first seen in the last 24 h",
    "log_user_age_days": "ln(1 + user_age_days)",
    "new_device_ip_high_amount": "device_is_new * ip_is_new * amount_high (takeover shape)",
    "new_card_small_amount": "card_is_new * amount_small (card-testing shape)",
    "new_device_ip_log_amount": "device_is_new * ip_is_new * log_amount",
    "takeover_shape": "device_is_new * ip_is_new * amount_high * (user_age_days >= 90)",
}

FEATURE_NAMES: tuple[str, ...] = tuple(_FEATURE_DOCS)


def feature_docs() -> dict[str, str]:
    """Name -> one-line description of every model input, in vector order."""
    return dict(_FEATURE_DOCS)


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


@dataclass(frozen=True, slots=True)
class Features:
    """What the model sees about one payment (see the module docstring for every field)."""

    amount_paisa: int
    payment_method: str
    occurred_at: datetime
    email: str = ""
    merchant_category: str = ""
    user_agent: str = ""
    device_fingerprint: str = ""
    user_txn_count_1h: int = 0
    card_txn_count_1h: int = 0
    device_txn_count_1h: int = 0
    ip_txn_count_1h: int = 0
    device_distinct_cards_24h: int = 0
    device_is_new: bool = False
    ip_is_new: bool = False
    card_is_new: bool = False
    user_age_days: int = 0

    def ist_hour(self) -> int:
        """Hour of day in IST (naive datetimes are taken as UTC)."""
        at = self.occurred_at
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return at.astimezone(IST).hour

    def vector(self) -> tuple[float, ...]:
        """The model inputs, in FEATURE_NAMES order."""
        amount = max(self.amount_paisa, 0)
        small = amount < SMALL_AMOUNT_PAISA
        high = amount >= HIGH_AMOUNT_PAISA
        method = self.payment_method.upper()
        email = self.email.strip().lower()
        domain = email.rpartition("@")[2] if "@" in email else ""
        ua = self.user_agent.strip().lower()
        bot_ua = not ua or any(marker in ua for marker in _BOT_UA_MARKERS)
        hour = self.ist_hour()
        new_pair = self.device_is_new and self.ip_is_new
        return (
            math.log1p(amount / 100),
            _flag(small),
            _flag(high),
            _flag(method == "CARD"),
            _flag(method == "UPI"),
            _flag(method == "WALLET"),
            _flag(1 <= hour < 5),
            _flag(bool(email)),
            _flag(domain in DISPOSABLE_EMAIL_DOMAINS),
            _flag(self.merchant_category.strip() in HIGH_RISK_MCCS),
            _flag(bot_ua),
            _flag(not self.device_fingerprint.strip()),
            math.log1p(max(self.user_txn_count_1h, 0)),
            math.log1p(max(self.card_txn_count_1h, 0)),
            math.log1p(max(self.device_txn_count_1h, 0)),
            math.log1p(max(self.ip_txn_count_1h, 0)),
            math.log1p(max(self.device_distinct_cards_24h, 0)),
            _flag(self.device_is_new),
            _flag(self.ip_is_new),
            _flag(self.card_is_new),
            math.log1p(max(self.user_age_days, 0)),
            _flag(new_pair and high),
            _flag(self.card_is_new and small),
            math.log1p(amount / 100) if new_pair else 0.0,
            _flag(new_pair and high and self.user_age_days >= 90),
        )

    def to_json(self) -> dict[str, object]:
        """JSON-ready form for an external scorer: raw fields plus the derived vector."""
        return {
            "amount_paisa": self.amount_paisa,
            "payment_method": self.payment_method,
            "occurred_at": self.occurred_at.isoformat(),
            "email_domain": self.email.rpartition("@")[2].lower() if "@" in self.email else "",
            "merchant_category": self.merchant_category,
            "user_agent": self.user_agent,
            "device_fingerprint": self.device_fingerprint,
            "user_txn_count_1h": self.user_txn_count_1h,
            "card_txn_count_1h": self.card_txn_count_1h,
            "device_txn_count_1h": self.device_txn_count_1h,
            "ip_txn_count_1h": self.ip_txn_count_1h,
            "device_distinct_cards_24h": self.device_distinct_cards_24h,
            "device_is_new": self.device_is_new,
            "ip_is_new": self.ip_is_new,
            "card_is_new": self.card_is_new,
            "user_age_days": self.user_age_days,
            "feature_names": list(FEATURE_NAMES),
            "vector": list(self.vector()),
        }
