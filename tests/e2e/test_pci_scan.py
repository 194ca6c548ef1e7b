"""PCI DSS check: after a run that handles many cards, no full card number and no CVV appears
in any log line, any database column (the vault's ciphertexts are opaque bytes), any Kafka
message, any metric or any error body."""

from __future__ import annotations

import asyncio
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


def leaks(text: str) -> list[str]:
    found = [pan for pan in CARDS if pan in re.sub(r"[ -]", "", text)]
    found += CVV_SHAPES.findall(text)
    return found


async def test_no_card_number_or_cvv_anywhere_after_many_card_payments(
    stack: Stack, gateway_url: str, mint_token: Token
) -> None:
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    bodies: list[str] = []
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
            paid = await api.post(
                "/api/v1/payments",
                json={
                    "amount_paisa": 12345,
                    "currency": "INR",
                    "payment_method": "CARD",
                    "payment_details": {"card": card},
                },
                headers=auth,
            )
            bodies.append(paid.text)
            saved = await api.post(
                "/api/v1/payment-methods/tokenize",
                json={"user_id": f"u-{uuid.uuid4().hex[:6]}", "type": "CARD", "details": card},
                headers=auth,
            )
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
    await asyncio.sleep(2)  # let the outbox relay and access logs flush

    problems: dict[str, list[str]] = {}

    def check(where: str, text: str) -> None:
        if found := leaks(text):
            problems[where] = found[:3]

    for index, body in enumerate(bodies):
        check(f"response body #{index}", body)
    for index, text in enumerate(metrics):
        check(f"metrics #{index}", text)
    for log in sorted(stack.logs_dir.glob("*.log")):
        check(f"log {log.name}", log.read_text(errors="replace"))
    for where, text in (await database_text(stack)).items():
        check(where, text)
    for where, text in (await kafka_text(stack)).items():
        check(where, text)
    assert problems == {}


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
