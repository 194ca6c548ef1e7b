"""PCI DSS check: after a run that handles many cards, no full card number and no CVV appears
in any log line, any database column (the vault's ciphertexts are opaque bytes), any Kafka
message, any metric or any error body; and nothing derived from one without a key (its SHA-256,
SHA-1 or MD5, in hex or base64) appears in any table outside the vault, any log or any event."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack import Stack

Token = Callable[..., str]
FUTURE_YEAR = str(time.gmtime().tm_year + 2)
# Sandbox magic cards plus other valid numbers of every brand (Luhn-valid test numbers).
CARDS = [
    "4242424242424242",
    "5555555555554444",
    "4000000000000002",
    "4000000000009995",
    "4000000000003220",
    "4000000000000119",
    "4111111111111111",
    "5105105105105100",
    "378282246310005",
    "36227206271667",
    "6521234567890126",
]
# A CVV next to its name, in JSON, form or log key=value shapes.
CVV_SHAPES = re.compile(r"""cvv["'\s]*[:=]\s*["']?\d{3,4}""", re.IGNORECASE)


CVVS = ("987", "4321")
# What each magic card ends as (README "Sandbox test values"); any other card is approved.
OUTCOMES = {
    "4000000000000002": "FAILED",
    "4000000000009995": "FAILED",
    "4000000000003220": "REQUIRES_ACTION",
}


def digests(secret: str) -> list[str]:
    """The unkeyed derivations of `secret` someone might store: SHA-256, SHA-1 and MD5, in hex
    (either case) and base64."""
    found: list[str] = []
    for name in ("sha256", "sha1", "md5"):
        digest = hashlib.new(name, secret.encode()).digest()
        found += [digest.hex(), digest.hex().upper(), base64.b64encode(digest).decode()]
        found.append(base64.urlsafe_b64encode(digest).decode().rstrip("="))
    return found


DERIVED = {value: secret for secret in (*CARDS, *CVVS) for value in digests(secret)}


def leaks(text: str, *, derived: bool = True) -> list[str]:
    found = [pan for pan in CARDS if pan in re.sub(r"[ -]", "", text)]
    found += CVV_SHAPES.findall(text)
    if derived:
        found += [f"a digest of {DERIVED[value][-4:]}" for value in DERIVED if value in text]
    return found


async def test_no_card_number_or_cvv_anywhere_after_many_card_payments(
    stack: Stack, gateway_url: str, mint_token: Token
) -> None:
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    bodies: list[str] = []
    payment_ids: list[str] = []
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as api:
        merchant = (
            await api.post("/api/v1/admin/merchants", json={"name": "PCI"}, headers=admin)
        ).json()
        auth = {"Authorization": f"Bearer {mint_token(merchant['merchant_id'])}"}
        for number in CARDS:
            cvv = "4321" if number.startswith("37") else "987"
            card = {
                "card_number": number,
                "expiry_month": "11",
                "expiry_year": FUTURE_YEAR,
                "cvv": cvv,
                "holder_name": "Scan Me",
            }
            # With an Idempotency-Key: the key's stored request fingerprint is scanned too.
            paid = await api.post(
                "/api/v1/payments",
                json={
                    "amount_paisa": 12345,
                    "currency": "INR",
                    "payment_method": "CARD",
                    "payment_details": {"card": card},
                },
                headers={**auth, "Idempotency-Key": f"pci-{uuid.uuid4()}"},
            )
            assert paid.status_code == 200, paid.text
            assert paid.json()["status"] == OUTCOMES.get(number, "SUCCESS"), paid.text
            payment_ids.append(paid.json()["payment_id"])
            bodies.append(paid.text)
            saved = await api.post(
                "/api/v1/payment-methods/tokenize",
                json={"user_id": f"u-{uuid.uuid4().hex[:6]}", "type": "CARD", "details": card},
                headers=auth,
            )
            assert saved.status_code == 200, saved.text
            bodies.append(saved.text)
            # Bad input must name the field without echoing the number back.
            broken = {**card, "card_number": number[:-1] + str((int(number[-1]) + 1) % 10)}
            bad = await api.post(
                "/api/v1/payments",
                json={
                    "amount_paisa": 100,
                    "currency": "INR",
                    "payment_method": "CARD",
                    "payment_details": {"card": broken},
                },
                headers=auth,
            )
            assert bad.status_code == 400, bad.text
            assert broken["card_number"] not in bad.text
            bodies.append(bad.text)
        metrics = [
            (await api.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            for _, metrics_port in stack.ports.services.values()
        ]
        metrics.append((await api.get(f"http://127.0.0.1:{stack.ports.envoy_admin}/stats")).text)
    await until_published(stack, payment_ids)

    problems: dict[str, list[str]] = {}

    def check(where: str, text: str, *, derived: bool = True) -> None:
        if found := leaks(text, derived=derived):
            problems[where] = found[:3]

    for index, body in enumerate(bodies):
        check(f"response body #{index}", body)
    for index, text in enumerate(metrics):
        check(f"metrics #{index}", text)
    for log in sorted(stack.logs_dir.glob("*.log")):
        check(f"log {log.name}", log.read_text(errors="replace"))
    for where, text in (await database_text(stack)).items():
        # The vault's own tables hold ciphertexts and keyed fingerprints, by design.
        check(where, text, derived='"vault".' not in where)
    kafka = await kafka_text(stack)
    assert all(p in kafka["kafka payments.events"] for p in payment_ids)
    for where, text in kafka.items():
        check(where, text)
    assert problems == {}


async def until_published(stack: Stack, payment_ids: list[str], within: float = 60) -> None:
    """Every event of these payments has left the outbox for Kafka (polled, not slept)."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        deadline = time.monotonic() + within
        while True:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM orchestrator.outbox"
                " WHERE published_at IS NULL AND event_key = ANY($1::text[])",
                payment_ids,
            )
            if waiting == 0:
                return
            assert time.monotonic() < deadline, f"{waiting} events still in the outbox"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def database_text(stack: Stack) -> dict[str, str]:
    """Every column of every table of every service schema, as text."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        found: dict[str, str] = {}
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            rows = await conn.fetch(f"SELECT t::text AS row FROM {name} t")  # noqa: S608
            found[f"table {name}"] = "\n".join(r["row"] for r in rows)
        assert any("orchestrator" in k for k in found)
        assert any("vault" in k for k in found)
        return found
    finally:
        await conn.close()


async def kafka_text(stack: Stack) -> dict[str, str]:
    """Every message of every topic, read from the beginning to the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in await consumer.topics()
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        assert {p.topic for p in partitions} >= {"payments.events"}
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: dict[str, list[str]] = {}
        while [p for p in partitions if await position(consumer, p) < ends[p]]:
            for partition, records in (await consumer.getmany(timeout_ms=500)).items():
                found.setdefault(partition.topic, []).extend(
                    (r.value or b"").decode(errors="replace") for r in records
                )
        assert found.get("payments.events")
        return {f"kafka {topic}": "\n".join(texts) for topic, texts in found.items()}
    finally:
        await consumer.stop()


async def position(consumer: AIOKafkaConsumer, partition: TopicPartition) -> int:
    value: Any = await consumer.position(partition)
    return int(value)
