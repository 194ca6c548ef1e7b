"""The local broker keeps its messages and its consumer groups' committed offsets across a
restart (`kill -9`): Tansu stores them in s3rver on disk, not in memory."""

from __future__ import annotations

import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from devstack.stack import Stack

GROUP = "durability-check"


def upi() -> dict[str, Any]:
    return {
        "amount_paisa": 1500,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
    }


async def _drain(stack: Stack, group: str, until: str, *, commit: bool) -> list[str]:
    """Payment ids of the created events a consumer of `group` reads, up to `until`'s."""
    consumer = AIOKafkaConsumer(
        stack.env["KAFKA_TOPIC_PAYMENTS"],
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while until not in seen:
            assert time.monotonic() < deadline, f"{until} never arrived; read {seen}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = json.loads(record.value)
                    if event["type"] == "payment.created":
                        seen.append(event["payment_id"])
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return seen


async def test_messages_and_committed_offsets_survive_a_broker_restart(
    stack: Stack, payments: Any
) -> None:
    first = (await payments.create(upi()))["payment_id"]
    read = await _drain(stack, GROUP, first, commit=True)
    assert first in read

    second = (await payments.create(upi()))["payment_id"]
    await _drain(stack, f"{GROUP}-probe", second, commit=False)  # published before the kill
    await stack.restart_broker()

    # The group resumes after its committed offset: the second payment, not the first again.
    resumed = await _drain(stack, GROUP, second, commit=True)
    assert first not in resumed
    assert second in resumed
    # A new group reads the whole log: the first message survived too.
    everything = await _drain(stack, f"{GROUP}-new", second, commit=False)
    assert {first, second} <= set(everything)
    # And the gateway publishes to the restarted broker again.
    third = (await payments.create(upi()))["payment_id"]
    assert third in await _drain(stack, GROUP, third, commit=True)
