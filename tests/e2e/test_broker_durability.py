"""The local broker keeps every message it acknowledges and its consumer groups' committed
offsets, under concurrent producers and across a restart (`kill -9`): Tansu stores them on disk
in a store that honours its conditional writes (tools/devstack/broker_store.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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


async def _topic_of_its_own(stack: Stack, run: str) -> str:
    """Racing writes on a broker that loses them overwrite each other: that must not reach
    the events the rest of the session's services consume."""
    topic = f"durability-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _produce_concurrently(stack: Stack, topic: str, values: list[bytes]) -> None:
    """Four producers at once, every one contending for the same two partitions (two keys),
    each send acknowledged (acks=all) before its next."""
    producers = [
        AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all") for _ in range(4)
    ]
    for producer in producers:
        await producer.start()
    try:

        async def produce(lane: int) -> None:
            producer = producers[lane]
            for value in values[lane :: len(producers)]:
                await producer.send_and_wait(
                    topic, key=f"key-{value[-1] % 2}".encode(), value=value
                )

        await asyncio.gather(*(produce(lane) for lane in range(len(producers))))
    finally:
        for producer in producers:
            await producer.stop()


async def _assert_all_kept(stack: Stack, topic: str, sent: list[bytes]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: set[bytes] = set()
    offsets: list[tuple[int, int]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 60
        while len(found) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    offsets.append((tp.partition, record.offset))
                    if record.value:
                        found.add(record.value)
    finally:
        await consumer.stop()
    assert len(offsets) == len(set(offsets)), "an offset was handed out twice"
    missing = sorted(set(sent) - found)
    assert not missing, f"{len(missing)} of {len(sent)} acknowledged messages are gone"


async def test_every_message_acknowledged_to_concurrent_producers_is_kept(stack: Stack) -> None:
    """Several producers on the same partitions at once (orchestrator replicas, the chaos run's
    restarts): the broker must hand out each offset once, so no acknowledged message is lost."""
    run = uuid.uuid4().hex[:8]
    topic = await _topic_of_its_own(stack, run)
    sent = [f"{run}-{n}".encode() for n in range(100)]
    await _produce_concurrently(stack, topic, sent)
    await _assert_all_kept(stack, topic, sent)


async def test_a_restarted_broker_appends_after_what_it_acknowledged(stack: Stack) -> None:
    """After a `kill -9` the broker starts with no cached watermark: it must read where each
    partition ends from the store, never write over the offsets it acknowledged before."""
    run = uuid.uuid4().hex[:8]
    topic = await _topic_of_its_own(stack, run)
    before = [f"{run}-before-{n}".encode() for n in range(60)]
    await _produce_concurrently(stack, topic, before)
    await stack.restart_broker()
    after = [f"{run}-after-{n}".encode() for n in range(60)]
    await _produce_concurrently(stack, topic, after)
    await _assert_all_kept(stack, topic, before + after)
