"""The stack the harness starts answers on every piece of infrastructure it promises."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.stack import Stack


async def test_postgres_answers_on_the_stack_dsn(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_redis_answers_ping(stack: Stack) -> None:
    client = aioredis.Redis(host=stack.env["REDIS_HOST"], port=int(stack.env["REDIS_PORT"]))
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_kafka_carries_a_message_from_producer_to_consumer(stack: Stack) -> None:
    topic = f"scratch.smoke.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"smoke")
    finally:
        await producer.stop()
    # Manual assignment, not a group: a group join takes 5-18 s on this broker.
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        batches = await consumer.getmany(partition, timeout_ms=10_000)
    finally:
        await consumer.stop()
    [(key, value)] = [(m.key, m.value) for m in batches.get(partition, [])]
    assert (key, value) == (b"smoke", b"hello")


async def test_the_stack_topics_exist_with_three_partitions(stack: Stack) -> None:
    topics = [stack.env["KAFKA_TOPIC_PAYMENTS"], stack.env["KAFKA_TOPIC_WEBHOOKS"]]
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(topics, 3)


async def test_envoy_serves_health(gateway_url: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        reply = await client.get(f"{gateway_url}/health")
    assert reply.status_code == 200, reply.text
