"""Webhooks end to end (issue 9): endpoints through Envoy, deliveries to a real receiver in
this process, every one verified with the Standard Webhooks reference library.

The stack runs with WEBHOOK_RETRY_SCHEDULE=1,1,1 and WEBHOOK_TIMEOUT=3s (tests/e2e/conftest.py),
and allows webhooks to 127.0.0.2 only, where the receiver listens.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import mailbox
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from standardwebhooks import Webhook, WebhookVerificationError

from devstack import Stack
from devstack.webhook_receiver import HANG, WebhookReceiver

SCHEDULE = 3  # retries in the test stack's WEBHOOK_RETRY_SCHEDULE


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver()
    await running.start()
    yield running
    await running.stop()


def upi(vpa: str = "success@upi", **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": 10000,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
        **extra,
    }


class Hooks:
    """The merchant's webhook API."""

    def __init__(self, api: httpx.AsyncClient, merchant: dict[str, Any]) -> None:
        self.api = api
        self.auth = merchant["auth"]

    async def create(self, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
        reply = await self.api.post(
            "/api/v1/webhooks", json={"url": url, "events": events, **extra}, headers=self.auth
        )
        assert reply.status_code == 200, reply.text
        endpoint: dict[str, Any] = reply.json()
        return endpoint

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.api.request(method, f"/api/v1{path}", headers=self.auth, **kwargs)

    async def deliveries(self, webhook_id: str, **params: Any) -> dict[str, Any]:
        reply = await self.call("GET", f"/webhooks/{webhook_id}/deliveries", params=params)
        assert reply.status_code == 200, reply.text
        found: dict[str, Any] = reply.json()
        return found

    async def wait_for_delivery(
        self, webhook_id: str, status: str, within: float = 30.0, count: int = 1
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while True:
            page = await self.deliveries(webhook_id, status=status)
            if len(page.get("deliveries", [])) >= count:
                found: list[dict[str, Any]] = page["deliveries"]
                return found
            assert time.monotonic() < deadline, f"no {status} delivery for {webhook_id}"
            await asyncio.sleep(0.2)


@pytest.fixture
def hooks(api: httpx.AsyncClient, merchant: dict[str, Any]) -> Hooks:
    return Hooks(api, merchant)


def violations(reply: httpx.Response) -> dict[str, str]:
    for detail in reply.json().get("details", []):
        if detail.get("@type", "").endswith("BadRequest"):
            return {v["field"]: v["description"] for v in detail["field_violations"]}
    return {}


def name() -> str:
    return uuid.uuid4().hex[:12]


async def test_events_are_delivered_signed_to_the_endpoints_that_subscribed(
    hooks: Hooks, payments: Any, receiver: WebhookReceiver
) -> None:
    only_success, everything = name(), name()
    a = await hooks.create(receiver.endpoint(only_success), ["payment.success"])
    b = await hooks.create(receiver.endpoint(everything), ["*"], description="all of them")
    assert a["status"] == "ENABLED"
    assert a["secret"].startswith("whsec_")
    assert len(Webhook(a["secret"])._whsecret) == 32

    payment = await payments.create(upi())
    await payments.wait_for(payment["payment_id"], "SUCCESS")
    [success] = await receiver.wait_for(only_success)
    all_events = await receiver.wait_for(everything, 3)
    await asyncio.sleep(1.0)  # nothing else may arrive for the filtered endpoint

    assert receiver.to(only_success) == [success]
    document = success.verify(a["secret"])
    assert document["type"] == "payment.success"
    assert document["data"]["payment_id"] == payment["payment_id"]
    assert document["data"]["status"] == "SUCCESS"
    assert document["data"]["amount_paisa"] == 10000
    assert datetime.fromisoformat(document["timestamp"]).tzinfo is not None
    with pytest.raises(WebhookVerificationError):
        success.verify(b["secret"])

    documents = [d.verify(b["secret"]) for d in all_events]
    types = [d["type"] for d in documents]
    assert {"payment.created", "payment.pending", "payment.success"} <= set(types)
    sequences = sorted(d["data"]["sequence"] for d in documents)
    assert sequences == list(range(1, len(documents) + 1))
    by_type = {d["type"]: d["data"]["sequence"] for d in documents}
    assert by_type["payment.success"] == max(sequences)
    # One webhook-id per event and endpoint; it is the delivery's id in the log.
    assert len({d.webhook_id for d in all_events}) == len(all_events)
    log = await hooks.wait_for_delivery(b["webhook_id"], "SUCCEEDED", count=len(all_events))
    assert {d["delivery_id"] for d in log} == {d.webhook_id for d in all_events}
    assert all(d["attempts"] == 1 and d["payment_id"] == payment["payment_id"] for d in log)


async def test_given_secrets_sign_as_their_bytes_or_decoded_whsec(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    plain, encoded = name(), name()
    given = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    a = await hooks.create(receiver.endpoint(plain), ["*"], secret="webhook_secret_key")
    b = await hooks.create(receiver.endpoint(encoded), ["*"], secret=given)
    assert (a["secret"], b["secret"]) == ("webhook_secret_key", given)

    for endpoint in (a, b):
        reply = await hooks.call("POST", f"/webhooks/{endpoint['webhook_id']}/test", json={})
        assert reply.status_code == 200, reply.text
        assert reply.json()["event_type"] == "webhook.test"
    [first] = await receiver.wait_for(plain)
    [second] = await receiver.wait_for(encoded)

    assert first.verify(b"webhook_secret_key")["type"] == "webhook.test"
    assert second.verify(given)["data"]["webhook_id"] == b["webhook_id"]
    # The secret is shown once: never by GET.
    reply = await hooks.call("GET", f"/webhooks/{a['webhook_id']}")
    assert reply.json()["secret"] == ""


async def test_a_receiver_that_fails_twice_gets_three_attempts_with_one_webhook_id(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    path = name()
    receiver.plan(path, 500, 503)
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    await hooks.call("POST", f"/webhooks/{endpoint['webhook_id']}/test", json={})

    attempts = await receiver.wait_for(path, 3)
    [delivery] = await hooks.wait_for_delivery(endpoint["webhook_id"], "SUCCEEDED")

    assert [a.answered for a in attempts] == [500, 503, 200]
    assert len({a.webhook_id for a in attempts}) == 1
    assert {a.verify(endpoint["secret"])["type"] for a in attempts} == {"webhook.test"}
    assert delivery["delivery_id"] == attempts[0].webhook_id
    assert delivery["attempts"] == 3
    assert [a["response_code"] for a in delivery["attempt_history"]] == [500, 503, 200]
    assert [a["error"] for a in delivery["attempt_history"]] == ["HTTP 500", "HTTP 503", ""]
    assert "next_attempt_at" not in delivery or not delivery["next_attempt_at"]
    # Retried on the schedule (1 s, ±20 % jitter), not at once.
    gaps = [
        later.received_at - earlier.received_at for earlier, later in itertools.pairwise(attempts)
    ]
    assert all(gap >= 0.75 for gap in gaps), gaps


async def test_410_gone_disables_the_endpoint_and_reenabling_recovers_what_failed(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    path = name()
    receiver.plan(path, 410)
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    webhook_id = endpoint["webhook_id"]
    before = datetime.now(UTC) - timedelta(seconds=5)

    await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})
    [gone] = await hooks.wait_for_delivery(webhook_id, "FAILED")
    shown = (await hooks.call("GET", f"/webhooks/{webhook_id}")).json()
    assert shown["status"] == "DISABLED"
    assert "410" in shown["disabled_reason"]
    assert gone["attempts"] == 1
    assert gone["last_response_code"] == 410

    # While disabled nothing is sent; the event is kept as a FAILED delivery.
    await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})
    await asyncio.sleep(1.5)
    assert len(receiver.to(path)) == 1

    reply = await hooks.call(
        "PATCH",
        f"/webhooks/{webhook_id}",
        json={"status": "ENABLED", "recover_since": before.isoformat().replace("+00:00", "Z")},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "ENABLED"
    assert reply.json()["disabled_reason"] == ""
    recovered = await receiver.wait_for(path, 3)
    assert {d.webhook_id for d in recovered[1:]} == {
        d["delivery_id"] for d in (await hooks.deliveries(webhook_id))["deliveries"]
    }
    await hooks.wait_for_delivery(webhook_id, "SUCCEEDED", count=2)


async def test_a_disabled_endpoint_emails_its_merchant(
    api: httpx.AsyncClient, mint_token: Any, receiver: WebhookReceiver, stack: Stack
) -> None:
    owner = f"ops-{name()}@shop.example"
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    reply = await api.post(
        "/api/v1/admin/merchants", json={"name": "Chai Point", "email": owner}, headers=admin
    )
    assert reply.status_code == 200, reply.text
    merchant = reply.json()
    hooks = Hooks(api, {"auth": {"Authorization": f"Bearer {mint_token(merchant['merchant_id'])}"}})
    path = name()
    receiver.plan(path, 410)
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    await hooks.call("POST", f"/webhooks/{endpoint['webhook_id']}/test", json={})

    [message] = await wait_for_mail(stack, owner)

    assert message["Subject"] == f"Webhook endpoint disabled: {endpoint['url']}"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "Hello Chai Point," in text
    assert endpoint["webhook_id"] in text
    assert "the endpoint answered 410 Gone" in text
    assert message.get_body(preferencelist=("html",)) is not None


async def wait_for_mail(stack: Stack, address: str, within: float = 30.0) -> list[EmailMessage]:
    """The messages the stack's SMTP server kept for `address`, once there is one."""
    assert stack.mail_dir is not None, "the test stack runs its own SMTP server"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if stack.mail_dir.exists():
            box = mailbox.Maildir(stack.mail_dir, create=False)
            found = []
            for key in box.iterkeys():
                message = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
                if isinstance(message, EmailMessage) and message["To"] == address:
                    found.append(message)
            if found:
                return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"no email to {address} within {within} s")


async def test_a_receiver_that_never_answers_times_out_and_is_retried(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    path = name()
    receiver.plan(path, HANG)
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    await hooks.call("POST", f"/webhooks/{endpoint['webhook_id']}/test", json={})

    attempts = await receiver.wait_for(path, 2, within=20)
    [delivery] = await hooks.wait_for_delivery(endpoint["webhook_id"], "SUCCEEDED", within=20)

    assert [a.answered for a in attempts] == [HANG, 200]
    first, second = delivery["attempt_history"]
    assert first["response_code"] == 0
    assert first["error"] == "timed out after 3 s"
    assert 2900 <= first["latency_ms"] < 6000
    assert second["response_code"] == 200


async def test_a_spent_schedule_dead_letters_and_a_replay_delivers(
    hooks: Hooks, receiver: WebhookReceiver, stack: Stack
) -> None:
    path = name()
    receiver.plan(path, then=500)
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    webhook_id = endpoint["webhook_id"]
    await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})

    [dead] = await hooks.wait_for_delivery(webhook_id, "FAILED", within=30)
    assert dead["attempts"] == 1 + SCHEDULE
    assert dead["dead_lettered_at"]
    assert dead["last_error"] == "HTTP 500"
    assert len(receiver.to(path)) == 1 + SCHEDULE
    # The endpoint itself stays enabled: one dead letter is not five days of failures.
    assert (await hooks.call("GET", f"/webhooks/{webhook_id}")).json()["status"] == "ENABLED"
    record = await dead_letter_record(stack, dead["delivery_id"])
    assert record["webhook_id"] == webhook_id
    assert record["attempts"] == 1 + SCHEDULE

    receiver.plan(path, then=200)
    reply = await hooks.call(
        "POST", f"/webhooks/{webhook_id}/deliveries/{dead['delivery_id']}/replay", json={}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "PENDING"
    [replayed] = await hooks.wait_for_delivery(webhook_id, "SUCCEEDED")
    last = receiver.to(path)[-1]
    assert last.answered == 200
    assert last.webhook_id == dead["delivery_id"]
    last.verify(endpoint["secret"])
    assert replayed["attempts"] == 2 + SCHEDULE
    assert "dead_lettered_at" not in replayed


async def test_pending_retries_survive_kill_9_of_the_webhook_service(
    hooks: Hooks, receiver: WebhookReceiver, stack: Stack
) -> None:
    path = name()
    receiver.plan(path, then=503)
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    webhook_id = endpoint["webhook_id"]
    for _ in range(5):
        await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})
    await receiver.wait_for(path, 5)  # each has failed once: its retries are pending

    stack.crash("webhook")
    receiver.plan(path, then=200)
    await stack.revive("webhook")

    delivered = await receiver.wait_for(path, 5, within=60, answered=200)
    assert len({d.webhook_id for d in delivered}) == 5
    for delivery in delivered:
        delivery.verify(endpoint["secret"])
    await hooks.wait_for_delivery(webhook_id, "SUCCEEDED", count=5, within=30)


async def test_urls_that_reach_internal_addresses_or_break_the_rules_are_refused(
    hooks: Hooks,
) -> None:
    cases = {
        "http://127.0.0.1:9/hook": "loopback",
        "http://localhost:9/hook": "loopback",  # a host name that resolves to 127.0.0.1
        "http://169.254.169.254/latest/meta-data": "cloud metadata",
        "http://10.1.2.3/hook": "private",
        "http://100.64.0.1/hook": "CGNAT",
        "http://[::1]:9/hook": "loopback",
        "http://[::ffff:127.0.0.1]:9/hook": "loopback",
        "ftp://127.0.0.2/hook": "http(s)",
        "https://user:pw@127.0.0.2/hook": "credentials",
        "not a url": "http(s)",
        "https://127.0.0.2/hook?card=4242424242424242": "card number",
    }
    for url, rule in cases.items():
        reply = await hooks.call("POST", "/webhooks", json={"url": url, "events": ["*"]})
        assert reply.status_code == 400, (url, reply.text)
        assert rule in violations(reply)["url"], (url, reply.text)

    reply = await hooks.call(
        "POST", "/webhooks", json={"url": "http://127.0.0.2:9/h", "events": ["payment.nope"]}
    )
    assert reply.status_code == 400
    assert "payment.nope" in violations(reply)["events"]
    reply = await hooks.call(
        "POST", "/webhooks", json={"url": "http://127.0.0.2:9/h", "events": ["*"], "secret": "x"}
    )
    assert reply.status_code == 400
    assert "secret" in violations(reply)
    listed = (await hooks.call("GET", "/webhooks")).json()
    assert listed.get("webhooks", []) == []


async def test_rotating_the_secret_signs_with_both_for_a_day(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    path = name()
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    webhook_id = endpoint["webhook_id"]
    reply = await hooks.call("POST", f"/webhooks/{webhook_id}/rotate-secret", json={})
    assert reply.status_code == 200, reply.text
    rotated = reply.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != endpoint["secret"]
    overlap_ends = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert abs(overlap_ends - datetime.now(UTC) - timedelta(hours=24)) < timedelta(minutes=1)

    await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})
    [delivery] = await receiver.wait_for(path)

    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    delivery.verify(rotated["secret"])
    delivery.verify(endpoint["secret"])


async def test_the_payments_callback_url_gets_deliveries_signed_with_the_callback_secret(
    hooks: Hooks, payments: Any, receiver: WebhookReceiver
) -> None:
    path = name()
    payment = await payments.create(upi(callback_url=receiver.endpoint(path)))
    await payments.wait_for(payment["payment_id"], "SUCCESS")
    deliveries = await receiver.wait_for(path, 3)
    reply = await hooks.call("GET", "/callback-secret")
    assert reply.status_code == 200, reply.text
    secret = reply.json()["secret"]

    documents = [d.verify(secret) for d in deliveries]
    assert {d["data"]["payment_id"] for d in documents} == {payment["payment_id"]}
    assert "payment.success" in {d["type"] for d in documents}

    rotated = (await hooks.call("POST", "/callback-secret/rotate", json={})).json()
    assert rotated["secret"] != secret
    assert rotated["previous_secret_expires_at"]
    again = await payments.create(upi(callback_url=receiver.endpoint(path)))
    later = await receiver.wait_for(path, len(deliveries) + 1)
    newest = next(d for d in later if d.document["data"]["payment_id"] == again["payment_id"])
    newest.verify(rotated["secret"])
    newest.verify(secret)


async def test_the_delivery_log_pages_and_filters_and_is_the_merchants_own(
    hooks: Hooks, receiver: WebhookReceiver, api: httpx.AsyncClient, mint_token: Any
) -> None:
    path = name()
    receiver.plan(path, 500, 500, 500, 500)  # the first test event is dead-lettered
    endpoint = await hooks.create(receiver.endpoint(path), ["*"])
    webhook_id = endpoint["webhook_id"]
    await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})
    await hooks.wait_for_delivery(webhook_id, "FAILED")
    for _ in range(2):
        await hooks.call("POST", f"/webhooks/{webhook_id}/test", json={})
    await hooks.wait_for_delivery(webhook_id, "SUCCEEDED", count=2)

    first = await hooks.deliveries(webhook_id, page_size=2)
    second = await hooks.deliveries(webhook_id, page_size=2, page_token=first["next_page_token"])
    ids = [d["delivery_id"] for d in first["deliveries"] + second["deliveries"]]
    assert len(ids) == 3 == len(set(ids))
    assert ids == sorted(ids, reverse=True)
    assert second.get("next_page_token", "") == ""
    failed = (await hooks.deliveries(webhook_id, status="FAILED"))["deliveries"]
    assert [d["status"] for d in failed] == ["FAILED"]
    assert failed[0]["delivery_id"] == ids[-1]
    reply = await hooks.call("GET", f"/webhooks/{webhook_id}/deliveries", params={"page_size": -1})
    assert reply.status_code == 400
    assert "page_size" in violations(reply)

    stranger = {"Authorization": f"Bearer {mint_token('MER_SOMEONE_ELSE')}"}
    for method, suffix in (("GET", ""), ("GET", "/deliveries"), ("DELETE", "")):
        reply = await api.request(
            method, f"/api/v1/webhooks/{webhook_id}{suffix}", headers=stranger
        )
        assert reply.status_code == 404, reply.text
    reply = await api.post(
        f"/api/v1/webhooks/{webhook_id}/deliveries/{ids[0]}/replay", json={}, headers=stranger
    )
    assert reply.status_code == 404

    reply = await hooks.call("DELETE", f"/webhooks/{webhook_id}")
    assert reply.status_code == 200
    assert (await hooks.call("GET", f"/webhooks/{webhook_id}")).status_code == 404


async def test_a_delivery_carries_the_trace_of_the_request_that_caused_its_event(
    hooks: Hooks, payments: Any, receiver: WebhookReceiver, stack: Stack
) -> None:
    path = name()
    await hooks.create(receiver.endpoint(path), ["payment.created"])
    payment = await payments.create(upi())
    [delivery] = await receiver.wait_for(path)

    headers = await record_headers(
        stack, stack.env["KAFKA_TOPIC_PAYMENTS"], payment["payment_id"], "payment.created"
    )
    traceparent = headers["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", traceparent)
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "webhook"})
    try:
        stored = await conn.fetchval(
            "SELECT traceparent FROM deliveries WHERE delivery_id = $1", delivery.webhook_id
        )
    finally:
        await conn.close()
    # The delivery's spans link to this trace (webhook.delivery._links).
    assert stored == traceparent


async def record_headers(stack: Stack, topic: str, key: str, event_type: str) -> dict[str, str]:
    """The headers of the record of `topic` with that key and event type."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if (
                        record.key == key.encode()
                        and json.loads(record.value)["type"] == event_type
                    ):
                        return {k: v.decode() for k, v in record.headers}
        raise AssertionError(f"no {event_type} record for {key}")
    finally:
        await consumer.stop()


async def dead_letter_record(stack: Stack, delivery_id: str) -> dict[str, Any]:
    """The record KAFKA_TOPIC_WEBHOOKS got for a dead-lettered delivery."""
    topic = stack.env["KAFKA_TOPIC_WEBHOOKS"]
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    document: dict[str, Any] = json.loads(record.value)
                    if document.get("delivery_id") == delivery_id:
                        return document
        raise AssertionError(f"no dead-letter record for {delivery_id}")
    finally:
        await consumer.stop()
