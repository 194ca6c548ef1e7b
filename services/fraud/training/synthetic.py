"""A documented, seeded synthetic data set of payments with known fraud patterns.

There is no real labelled fraud data in this repository, so the model learns the patterns below.
Every row is a `fraud.model.features.Features` (the serving-time input) plus a label and the
pattern that produced it. Generation uses only `random.Random(seed)`, so the same seed and size
give the same rows on any machine and Python version with the same `random` algorithm.

Patterns (share of rows):
  legit          ~95%  ordinary traffic: UPI-heavy method mix, log-normal amounts (UPI median
                       ~Rs 250, cards ~Rs 1,100), daytime-heavy IST hours, mostly known devices.
                       Includes hard cases: night owls (~4% at 01:00-05:00), new phones (~8%
                       new device), shared/CGNAT IPs (~5% with busy IPs), tiny UPI payments
                       (tea, parking), occasional bursts of 3-8 payments an hour.
  card_testing  1.5%   many small (Rs 1-99) card payments on new cards from one device: high
                       distinct-cards-per-device, busy device/IP, often headless UAs or no
                       fingerprint, new or no account, rarely an email.
  account_takeover 1.2% an established user (90+ days) on a new device and a new IP paying a
                       high amount (Rs 15,000-150,000), often at high-risk MCCs.
  velocity_burst 1.3%  8-40 payments in an hour by one user/device/IP, moderate amounts.
  odd_hours      1.0%  01:00-05:00 IST, higher amounts at high-risk MCCs, new cards/devices,
                       young accounts.
  Fraud rows are "subtle" with probability 0.15: drawn from the legit generator but labelled
  fraud (fraud that looks normal), which bounds recall the way real data does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fraud.model.features import IST, Features

FRAUD_MIX: tuple[tuple[str, float], ...] = (
    ("card_testing", 0.015),
    ("account_takeover", 0.012),
    ("velocity_burst", 0.013),
    ("odd_hours", 0.010),
)
SUBTLE_FRAUD_SHARE = 0.15

_COMMON_MCCS = ("5411", "5812", "5999", "4121", "5732", "5691", "4814", "5912", "7832", "8299")
_HIGH_RISK_MCCS = ("4829", "6051", "5816", "5967", "7995", "6540")
_BROWSER_UAS = (
    "Mozilla/5.0 (Linux; Android 14; SM-A546E) AppleWebKit/537.36 Chrome/124.0 Mobile Safari",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "PaygateCheckoutSDK/2.3 (Android 13; Redmi Note 12)",
)
_BOT_UAS = ("Mozilla/5.0 HeadlessChrome/124.0", "python-requests/2.32", "curl/8.5.0")
_EMAIL_DOMAINS = ("gmail.com", "yahoo.co.in", "outlook.com", "rediffmail.com", "example.in")
_DISPOSABLE = ("mailinator.com", "yopmail.com", "tempmail.com")
# IST hour weights for ordinary traffic: quiet at night, peaks at lunch and evening.
_HOUR_WEIGHTS = (
    2, 1.2, 0.6, 0.4, 0.4, 0.8, 2, 4, 6, 7, 8, 8, 9, 9, 8, 7, 7, 8, 9, 10, 10, 9, 7, 4,
)  # fmt: skip
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Sample:
    features: Features
    label: int  # 1 = fraud
    pattern: str


def _lognormal_paisa(rng: random.Random, mu: float, sigma: float, lo: int, hi: int) -> int:
    rupees = math.exp(rng.gauss(mu, sigma))
    return min(max(round(rupees * 100), lo * 100), hi * 100)


def _at(rng: random.Random, hour_ist: int) -> datetime:
    day = _EPOCH + timedelta(days=rng.randrange(300))
    local = datetime(day.year, day.month, day.day, hour_ist, rng.randrange(60), tzinfo=IST)
    return local.astimezone(UTC)


def _email(rng: random.Random, p_present: float, p_disposable: float) -> str:
    if rng.random() >= p_present:
        return ""
    domains = _DISPOSABLE if rng.random() < p_disposable else _EMAIL_DOMAINS
    return f"user{rng.randrange(10**6)}@{rng.choice(domains)}"


def _small_count(rng: random.Random) -> int:
    """0-2 most of the time, 3-8 for the occasional busy customer."""
    if rng.random() < 0.03:
        return rng.randint(3, 8)
    return min(int(rng.expovariate(2.5)), 2)


def _legit(rng: random.Random) -> Features:
    method = rng.choices(("UPI", "CARD", "WALLET", "NET_BANKING"), (55, 25, 10, 10))[0]
    if method == "UPI":
        amount = _lognormal_paisa(rng, 5.5, 1.4, 1, 200_000)
    else:
        amount = _lognormal_paisa(rng, 7.0, 1.2, 10, 200_000)
    card = method == "CARD"
    user_n = _small_count(rng)
    busy_ip = rng.random() < 0.05
    user_age = rng.randint(0, 3) if rng.random() < 0.10 else int(math.exp(rng.uniform(1, 7.5)))
    device_new = rng.random() < 0.08
    return Features(
        amount_paisa=amount,
        payment_method=method,
        occurred_at=_at(rng, rng.choices(range(24), _HOUR_WEIGHTS)[0]),
        email=_email(rng, 0.7, 0.005),
        merchant_category=rng.choice(_HIGH_RISK_MCCS if rng.random() < 0.05 else _COMMON_MCCS),
        user_agent=rng.choice(
            ("",) if rng.random() < 0.02 else _BOT_UAS if rng.random() < 0.005 else _BROWSER_UAS
        ),
        device_fingerprint="" if rng.random() < 0.03 else f"fp{rng.randrange(10**9)}",
        user_txn_count_1h=user_n,
        card_txn_count_1h=user_n if card else 0,
        device_txn_count_1h=user_n + (rng.randint(0, 2) if rng.random() < 0.1 else 0),
        ip_txn_count_1h=user_n + (rng.randint(5, 50) if busy_ip else 0),
        device_distinct_cards_24h=(rng.choices((1, 2, 3), (90, 8, 2))[0] if card else 0),
        device_is_new=device_new,
        ip_is_new=device_new or rng.random() < 0.12,
        card_is_new=card and rng.random() < 0.05,
        user_age_days=user_age,
    )


def _card_testing(rng: random.Random) -> Features:
    device_n = rng.randint(5, 60)
    return Features(
        amount_paisa=rng.randint(1, 50) * 100 if rng.random() < 0.85 else rng.randint(100, 9_999),
        payment_method="CARD",
        occurred_at=_at(rng, rng.randrange(24)),
        email=_email(rng, 0.4, 0.5),
        merchant_category=rng.choice(_HIGH_RISK_MCCS if rng.random() < 0.4 else _COMMON_MCCS),
        user_agent=rng.choice(_BOT_UAS if rng.random() < 0.4 else _BROWSER_UAS),
        device_fingerprint="" if rng.random() < 0.3 else f"fp{rng.randrange(10**9)}",
        user_txn_count_1h=rng.randint(0, device_n),
        card_txn_count_1h=rng.randint(0, 5),
        device_txn_count_1h=device_n,
        ip_txn_count_1h=device_n + rng.randint(0, 20),
        device_distinct_cards_24h=rng.randint(3, 40),
        device_is_new=rng.random() < 0.6,
        ip_is_new=rng.random() < 0.6,
        card_is_new=rng.random() < 0.9,
        user_age_days=rng.randint(0, 2) if rng.random() < 0.8 else rng.randint(3, 400),
    )


def _account_takeover(rng: random.Random) -> Features:
    method = rng.choices(("CARD", "UPI", "WALLET"), (50, 30, 20))[0]
    hour = rng.randrange(1, 5) if rng.random() < 0.3 else rng.choices(range(24), _HOUR_WEIGHTS)[0]
    n = rng.randint(0, 4)
    return Features(
        amount_paisa=_lognormal_paisa(rng, math.log(40_000), 0.6, 15_000, 150_000),
        payment_method=method,
        occurred_at=_at(rng, hour),
        email=_email(rng, 0.9, 0.02),
        merchant_category=rng.choice(_HIGH_RISK_MCCS if rng.random() < 0.4 else ("5732", "5944")),
        user_agent=rng.choice(_BROWSER_UAS),
        device_fingerprint=f"fp{rng.randrange(10**9)}",
        user_txn_count_1h=n,
        card_txn_count_1h=n if method == "CARD" else 0,
        device_txn_count_1h=n,
        ip_txn_count_1h=n + rng.randint(0, 3),
        device_distinct_cards_24h=rng.randint(1, 2) if method == "CARD" else 0,
        device_is_new=rng.random() < 0.85,
        ip_is_new=rng.random() < 0.85,
        card_is_new=method == "CARD" and rng.random() < 0.2,
        user_age_days=rng.randint(90, 2000),
    )


def _velocity_burst(rng: random.Random) -> Features:
    method = rng.choices(("UPI", "WALLET", "CARD"), (50, 30, 20))[0]
    n = rng.randint(8, 40)
    return Features(
        amount_paisa=_lognormal_paisa(rng, math.log(1_500), 0.7, 200, 20_000),
        payment_method=method,
        occurred_at=_at(rng, rng.choices(range(24), _HOUR_WEIGHTS)[0]),
        email=_email(rng, 0.6, 0.1),
        merchant_category=rng.choice(_HIGH_RISK_MCCS if rng.random() < 0.3 else _COMMON_MCCS),
        user_agent=rng.choice(_BOT_UAS if rng.random() < 0.2 else _BROWSER_UAS),
        device_fingerprint="" if rng.random() < 0.1 else f"fp{rng.randrange(10**9)}",
        user_txn_count_1h=n,
        card_txn_count_1h=rng.randint(1, n) if method == "CARD" else 0,
        device_txn_count_1h=n + rng.randint(0, 10),
        ip_txn_count_1h=n + rng.randint(0, 30),
        device_distinct_cards_24h=rng.randint(1, 4) if method == "CARD" else 0,
        device_is_new=rng.random() < 0.4,
        ip_is_new=rng.random() < 0.4,
        card_is_new=method == "CARD" and rng.random() < 0.4,
        user_age_days=rng.randint(0, 30) if rng.random() < 0.5 else rng.randint(31, 1500),
    )


def _odd_hours(rng: random.Random) -> Features:
    method = rng.choices(("CARD", "UPI", "WALLET"), (60, 25, 15))[0]
    n = rng.randint(0, 5)
    return Features(
        amount_paisa=_lognormal_paisa(rng, math.log(12_000), 0.8, 3_000, 50_000),
        payment_method=method,
        occurred_at=_at(rng, rng.randrange(1, 5)),
        email=_email(rng, 0.6, 0.15),
        merchant_category=rng.choice(_HIGH_RISK_MCCS if rng.random() < 0.6 else _COMMON_MCCS),
        user_agent=rng.choice(_BOT_UAS if rng.random() < 0.1 else _BROWSER_UAS),
        device_fingerprint="" if rng.random() < 0.15 else f"fp{rng.randrange(10**9)}",
        user_txn_count_1h=n,
        card_txn_count_1h=n if method == "CARD" else 0,
        device_txn_count_1h=n,
        ip_txn_count_1h=n + rng.randint(0, 5),
        device_distinct_cards_24h=rng.randint(1, 3) if method == "CARD" else 0,
        device_is_new=rng.random() < 0.5,
        ip_is_new=rng.random() < 0.5,
        card_is_new=method == "CARD" and rng.random() < 0.5,
        user_age_days=rng.randint(0, 10) if rng.random() < 0.5 else rng.randint(11, 1000),
    )


_GENERATORS = {
    "card_testing": _card_testing,
    "account_takeover": _account_takeover,
    "velocity_burst": _velocity_burst,
    "odd_hours": _odd_hours,
}


def generate(n: int, seed: int) -> list[Sample]:
    """`n` rows, reproducible from `seed`."""
    rng = random.Random(seed)  # noqa: S311  (seeded synthetic data, not security)
    names = [name for name, _ in FRAUD_MIX]
    cumulative: list[float] = []
    total = 0.0
    for _, share in FRAUD_MIX:
        total += share
        cumulative.append(total)
    rows: list[Sample] = []
    for _ in range(n):
        u = rng.random()
        pattern = next((names[i] for i, c in enumerate(cumulative) if u < c), "legit")
        if pattern == "legit":
            rows.append(Sample(_legit(rng), 0, "legit"))
        elif rng.random() < SUBTLE_FRAUD_SHARE:
            rows.append(Sample(_legit(rng), 1, pattern + "(subtle)"))
        else:
            rows.append(Sample(_GENERATORS[pattern](rng), 1, pattern))
    return rows


def split(rows: list[Sample], seed: int, test_share: float = 0.25) -> tuple[list[Sample], ...]:
    """(train, test): a seeded shuffle, then the last `test_share` is held out."""
    order = list(range(len(rows)))
    random.Random(seed + 1).shuffle(order)  # noqa: S311  (reproducible split)
    cut = len(rows) - int(len(rows) * test_share)
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]
