"""Device risk: a known user on a new device, and one device shared by many users, cards or IPs.

Redis keeps, per device, the distinct users, cards and IPs seen with it as sorted sets (member:
a hash of the value, score: when it was last seen), so "distinct in the last 24 hours" slides
exactly instead of resetting with a fixed TTL; per user, the devices seen within the memory
window. Every set gets PEXPIRE, so quiet ones vanish. One Lua script updates them all atomically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from fraud.rules import DeviceLimits
from fraud.scoring import Signal, Transaction

_KEY_PREFIX = "fraud:dev"
_DAY_MS = 86_400_000

# KEYS[i]: a sorted set of distinct members. ARGV[1]: now (ms); ARGV[2i]: the member to add to
# KEYS[i]; ARGV[2i + 1]: its window (ms). Answers {existed_1, before_1, after_1, ...}: whether the
# member was already there (within the window), and the distinct count before and after.
_OBSERVE = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local member = ARGV[2 * i]
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local existed = redis.call('ZSCORE', key, member) and 1 or 0
  local before = redis.call('ZCARD', key)
  redis.call('ZADD', key, 'GT', now, member)
  out[3 * i - 2] = existed
  out[3 * i - 1] = before
  out[3 * i] = redis.call('ZCARD', key)
  redis.call('PEXPIRE', key, window)
end
return out
"""


@dataclass(frozen=True)
class DeviceObservation:
    """What Redis knew about this payment's device, counting the payment itself."""

    # None when the payment has no user (nothing to compare against).
    new_for_known_user: bool | None = None
    # The user has not paid from this device within the memory window (first payments too).
    new_for_user: bool = False
    users_24h: int = 0
    cards_24h: int = 0
    ips_24h: int = 0


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class DeviceStore:
    def __init__(self, redis: Redis) -> None:
        self._observe = redis.register_script(_OBSERVE)

    async def observe(self, txn: Transaction, limits: DeviceLimits) -> DeviceObservation:
        device = txn.device_fingerprint
        if not device:
            return DeviceObservation()
        slots: list[tuple[str, str, str, int]] = []  # (name, key, member, window ms)
        if txn.user_id:
            user = f"{txn.merchant_id}/{txn.user_id}"
            memory_ms = limits.user_device_memory_days * _DAY_MS
            slots.append(("user", f"{_KEY_PREFIX}:user:{_h(user)}", _h(device), memory_ms))
            slots.append(("users", f"{_KEY_PREFIX}:users:{_h(device)}", _h(user), _DAY_MS))
        if txn.card_fingerprint:
            card = f"{txn.merchant_id}/{txn.card_fingerprint}"
            slots.append(("cards", f"{_KEY_PREFIX}:cards:{_h(device)}", _h(card), _DAY_MS))
        if txn.ip_address:
            ip = txn.ip_address.strip()
            slots.append(("ips", f"{_KEY_PREFIX}:ips:{_h(device)}", _h(ip), _DAY_MS))
        args: list[int | str] = [int(txn.occurred_at.timestamp() * 1000)]
        for _, _, member, window in slots:
            args += [member, window]
        raw = await self._observe(keys=[key for _, key, _, _ in slots], args=args)
        seen = {
            name: (bool(int(raw[3 * i])), int(raw[3 * i + 1]), int(raw[3 * i + 2]))
            for i, (name, _, _, _) in enumerate(slots)
        }
        new_for_known_user = None
        new_for_user = False
        if "user" in seen:
            existed, before, _ = seen["user"]
            new_for_known_user = not existed and before > 0
            new_for_user = not existed
        return DeviceObservation(
            new_for_known_user=new_for_known_user,
            new_for_user=new_for_user,
            users_24h=seen.get("users", (False, 0, 0))[2],
            cards_24h=seen.get("cards", (False, 0, 0))[2],
            ips_24h=seen.get("ips", (False, 0, 0))[2],
        )


def device_signals(seen: DeviceObservation, limits: DeviceLimits) -> list[Signal]:
    """Named signals for the device risks the observation shows (pure)."""
    signals = []
    if seen.new_for_known_user and limits.new_device_for_user_points:
        signals.append(
            Signal(
                "device_new_for_user",
                limits.new_device_for_user_points,
                "a returning user on a device not seen with them before",
            )
        )
    checks = (
        ("device_many_users", seen.users_24h, limits.max_users_per_device_24h,
         limits.many_users_points, "users"),
        ("device_many_cards", seen.cards_24h, limits.max_cards_per_device_24h,
         limits.many_cards_points, "cards"),
        ("device_many_ips", seen.ips_24h, limits.max_ips_per_device_24h,
         limits.many_ips_points, "IP addresses"),
    )  # fmt: skip
    for name, count, maximum, points, what in checks:
        if maximum is not None and count > maximum:
            signals.append(
                Signal(name, points, f"device seen with {count} {what} in 24h (limit {maximum})")
            )
    return signals
