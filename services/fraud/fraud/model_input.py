"""What the ML model sees: `fraud.model.Features` from the payment and the service's own counts.

The velocity windows and device history the service keeps for its rules are the model's context
too, so the model needs no store of its own. Context the service does not track yet (a user's
first IP and age, a card's first sighting) stays at the model's "unknown" default.
"""

from __future__ import annotations

from fraud.device import DeviceObservation
from fraud.model import Features
from fraud.scoring import Transaction
from fraud.velocity import VelocityStats


def model_features(txn: Transaction, stats: VelocityStats, seen: DeviceObservation) -> Features:
    def earlier_in_hour(entity: str) -> int:
        window = stats.get((entity, "1h"))
        # The windows already count this payment; the model counts the ones before it.
        return max(0, window.count - 1) if window is not None else 0

    return Features(
        amount_paisa=txn.amount_paisa,
        payment_method=txn.payment_method,
        occurred_at=txn.occurred_at,
        email=txn.email,
        merchant_category=txn.merchant_category,
        user_agent=txn.user_agent,
        device_fingerprint=txn.device_fingerprint,
        user_txn_count_1h=earlier_in_hour("user"),
        card_txn_count_1h=earlier_in_hour("card"),
        device_txn_count_1h=earlier_in_hour("device"),
        ip_txn_count_1h=earlier_in_hour("ip"),
        device_distinct_cards_24h=seen.cards_24h,
        device_is_new=seen.new_for_user,
    )
