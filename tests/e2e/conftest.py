"""One real stack per test session (ephemeral ports, throwaway state), and ways to call it."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack.config import SMTP_VARIABLES
from devstack.fraud_scoring import write_clock_free_scoring
from devstack.runner import IMAGE_VARIABLE, ImagePython
from devstack.stack import Stack, StackError
from gateway_core.tokens import mint_token as sign_token
from orchestrator import ledger_store
from ratelimit.__main__ import DEFAULT_CONFIG as DEFAULT_LIMITS

TOKEN_TTL_SECONDS = 3600


class TokenMinter(Protocol):
    def __call__(self, merchant_id: str, role: str = "merchant", **overrides: Any) -> str: ...


# A merchant whose quota is small enough for a test to send ten times it (tests/e2e/test_abuse.py).
QUOTA_PROBE_MERCHANT = "m_quota_probe"
QUOTA_PROBE_PER_SECOND = 10


def abuse_settings(state_dir: Path) -> dict[str, str]:
    """The shipped rate limits plus the probe merchant's; slow clients cut off in seconds; a
    limiter given time to answer (the tests check its counts, not its latency: in production a
    slow limiter lets requests through, RATE_LIMIT_TIMEOUT_MS)."""
    limits = yaml.safe_load(DEFAULT_LIMITS.read_text())
    limits["descriptors"].append(
        {
            "key": "merchant_id",
            "value": QUOTA_PROBE_MERCHANT,
            "rate_limit": {"unit": "second", "requests_per_unit": QUOTA_PROBE_PER_SECOND},
        }
    )
    path = state_dir / "limits.yaml"
    path.write_text(yaml.safe_dump(limits))
    return {
        "RATE_LIMIT_CONFIG_PATH": str(path),
        "RATE_LIMIT_TIMEOUT_MS": "2000",
        "ENVOY_REQUEST_HEADERS_TIMEOUT_S": "2",
    }


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """PostgreSQL, Valkey, Tansu, every service and Envoy; logs under the session's tmp dir.

    A module that parametrizes it indirectly with a REPLICAS value (`"orchestrator=2"`) gets a
    stack running that many copies of those services (tests/e2e/test_replicas.py); pytest
    groups such tests and starts that stack once for them."""
    # Tests assert outcomes, not timing: a generous fraud deadline keeps a loaded CI machine
    # from turning a scored payment into a fail-open one (tests/unit/test_fraud_policy.py
    # covers the deadline itself).
    environ = {
        **os.environ,
        "FRAUD_TIMEOUT_MS": "2000",
        # Webhook retries within seconds, not hours; test receivers listen on 127.0.0.2, the one
        # loopback address allowed, so 127.0.0.1 (and `localhost`) stay refused (SSRF tests).
        "WEBHOOK_RETRY_SCHEDULE": "1,1,1",
        "WEBHOOK_TIMEOUT": "3s",
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.2/32",
        # Chargebacks of the magic card, and decisions on evidence, within a second.
        "SANDBOX_CHARGEBACK_DELAY_MS": "1000",
        "SANDBOX_DISPUTE_DECISION_DELAY_MS": "1000",
    }
    if replicas := getattr(request, "param", ""):
        environ["REPLICAS"] = replicas
    # The stack runs its own SMTP server, whose mailbox (stack.mail_dir) the receipt tests read,
    # whatever SMTP server the shell points at.
    for name in SMTP_VARIABLES:
        environ.pop(name, None)
    state_dir = tmp_path_factory.mktemp("stack")
    with ExitStack() as cleanup:
        runner = None
        if image := os.environ.get(IMAGE_VARIABLE):
            # `make image-test`: migrations and services run from the application image.
            runner = cleanup.enter_context(ImagePython(image, state_dir))
        else:
            environ.update(abuse_settings(state_dir))
            environ.update(write_clock_free_scoring(state_dir))
        local = Stack(
            state_dir,
            ports="ephemeral",
            seed=False,
            keep_data=False,
            environ=environ,
            runner=runner,
        )
        try:
            local.start()
        except StackError as exc:
            # The message names the failing part and ends with the tail of its log.
            message = f"the local stack did not start: {exc}"
            raise pytest.fail.Exception(message, pytrace=False) from None
        try:
            yield local
        finally:
            local.stop()


@pytest.fixture(scope="session")
def quota_probe() -> tuple[str, int]:
    """(merchant id, requests per second) of the merchant with a small quota."""
    return QUOTA_PROBE_MERCHANT, QUOTA_PROBE_PER_SECOND


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="session")
def mint_token(stack: Stack) -> TokenMinter:
    """`mint_token(merchant_id, role="merchant", **overrides)`: a bearer token Envoy accepts.

    Overrides replace any argument of `gateway_core.tokens.mint_token` (secret, issuer, audience,
    ttl_seconds), to make the tokens Envoy must refuse.
    """

    def mint(merchant_id: str, role: str = "merchant", **overrides: Any) -> str:
        arguments: dict[str, Any] = {
            "secret": stack.env["JWT_SECRET"],
            "issuer": stack.env["JWT_ISSUER"],
            "audience": stack.env["JWT_AUDIENCE"],
            "ttl_seconds": TOKEN_TTL_SECONDS,
        }
        return sign_token(merchant_id=merchant_id, role=role, **(arguments | overrides))

    return mint


class EventReader(Protocol):
    async def __call__(self, payment_id: str, want: int) -> list[dict[str, Any]]: ...


@pytest.fixture(scope="session")
def kafka_events(stack: Stack) -> EventReader:
    """`await kafka_events(payment_id, want)`: that payment's events on payments.events, in
    the order they were published (partitions are assigned directly: group joins are slow)."""

    async def read(payment_id: str, want: int) -> list[dict[str, Any]]:
        topic = stack.env.get("KAFKA_TOPIC_PAYMENTS", "payments.events")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
            if not partitions:
                await consumer._client.force_metadata_update()
                found_partitions = consumer.partitions_for_topic(topic) or set()
                partitions = [TopicPartition(topic, p) for p in found_partitions]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            found: list[dict[str, Any]] = []
            deadline = datetime.now(UTC) + timedelta(seconds=30)
            while len(found) < want and datetime.now(UTC) < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found += [json.loads(r.value) for r in records if r.key == payment_id.encode()]
            return found
        finally:
            await consumer.stop()

    return read


@pytest.fixture
async def api(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the gateway."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        yield client


@pytest.fixture
async def merchant(api: httpx.AsyncClient, mint_token: TokenMinter) -> dict[str, Any]:
    """A new merchant of its own: its fields, plus `auth` (its bearer header) and `admin`."""
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    reply = await api.post(
        "/api/v1/admin/merchants", json={"name": f"Shop {uuid.uuid4().hex[:6]}"}, headers=admin
    )
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    found["auth"] = {"Authorization": f"Bearer {mint_token(found['merchant_id'])}"}
    found["admin"] = admin
    return found


@pytest.fixture
def merchant_auth(merchant: dict[str, Any]) -> dict[str, str]:
    """The bearer header of a new merchant of its own."""
    auth: dict[str, str] = merchant["auth"]
    return auth


class Payments:
    """One merchant's view of the gateway, for tests: create, read, act, wait for a status."""

    def __init__(self, api: httpx.AsyncClient, merchant: dict[str, Any]) -> None:
        self.api = api
        self.merchant = merchant

    async def create(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        reply = await self.api.post(
            "/api/v1/payments", json=body, headers={**self.merchant["auth"], **headers}
        )
        assert reply.status_code == 200, reply.text
        payment: dict[str, Any] = reply.json()
        return payment

    async def get(self, payment_id: str) -> dict[str, Any]:
        reply = await self.api.get(f"/api/v1/payments/{payment_id}", headers=self.merchant["auth"])
        assert reply.status_code == 200, reply.text
        payment: dict[str, Any] = reply.json()
        return payment

    async def act(
        self, payment_id: str, action: str, body: dict[str, Any] | None = None, **headers: str
    ) -> httpx.Response:
        """POST /api/v1/payments/{id}/{action} (capture, cancel, refund)."""
        return await self.api.post(
            f"/api/v1/payments/{payment_id}/{action}",
            json=body or {},
            headers={**self.merchant["auth"], **headers},
        )

    async def wait_for(self, payment_id: str, status: str, within: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + within
        seen = ""
        while time.monotonic() < deadline:
            payment = await self.get(payment_id)
            seen = payment["status"]
            if seen == status:
                return payment
            await asyncio.sleep(0.2)
        raise AssertionError(f"{payment_id} stayed {seen}, never {status}")

    @staticmethod
    def reason(reply: httpx.Response) -> str:
        """The ErrorInfo reason of an error answer."""
        for detail in reply.json().get("details", []):
            if detail.get("@type", "").endswith("ErrorInfo"):
                return str(detail["reason"])
        return ""


@pytest.fixture
def payments(api: httpx.AsyncClient, merchant: dict[str, Any]) -> Payments:
    return Payments(api, merchant)


class ProviderBooks:
    """The simulated providers' own books (the sandbox's `GET /books`)."""

    def __init__(self, stack: Stack) -> None:
        self.url = f"{stack.env['SANDBOX_PUBLIC_URL']}/books"

    async def all(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.get(self.url)
        reply.raise_for_status()
        books: dict[str, Any] = reply.json()
        return books

    async def holds(self, payment_id: str) -> int:
        """What the providers still hold of this payment's money: charged less refunded."""
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.get(self.url, params={"payment_id": payment_id})
        reply.raise_for_status()
        return sum(
            int(p["charged_paisa"]) - int(p["refunded_paisa"])
            for p in reply.json()["payments"]
            if p["payment_id"] == payment_id
        )


@pytest.fixture(scope="session")
def provider_books(stack: Stack) -> ProviderBooks:
    return ProviderBooks(stack)


@pytest.fixture
async def ledger_stays_consistent(stack: Stack) -> AsyncIterator[None]:
    """After the test: the ledger's invariants hold (use with pytest.mark.usefixtures)."""
    yield
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        assert await ledger_store.check_invariants(conn) == []
    finally:
        await conn.close()


@pytest.fixture(scope="module", autouse=True)
async def books_agree_after_the_module(stack: Stack) -> AsyncIterator[None]:
    """After every end-to-end module: the ledger's invariants hold, and the providers' own
    books agree with the gateway's payments and refunds one for one."""
    yield
    await assert_books_agree(stack)


# -- the gateway's books against the providers' own ------------------------------------
#
# The sandbox keeps what each simulated provider did (`GET /books`): what it charged each
# customer, refunded and voided. For every payment the money the providers still hold must be
# what the gateway's ledger says (captures less refunds), plus what a wallet holds for an
# authorization not yet captured; and the refunds agree one for one.

# A wallet debits at authorization: until capture or void, it holds money the ledger has not
# booked yet (cards only hold an authorization, which charges nothing).
_WALLET_HOLDS = """
SELECT payment_id, amount_paisa FROM payments
WHERE payment_method = 'WALLET'
  AND (status IN ('AUTHORIZED', 'CAPTURING')
       OR (status = 'CANCELLING' AND operation_from = 'AUTHORIZED'))
"""

# What the customer paid and was not given back, by the ledger. (A no-cost EMI discount is
# between the acquirer and the merchant; the customer was charged the full amount.)
_LEDGER_NET = """
SELECT payment_id,
       coalesce(sum(amount_paisa) FILTER (WHERE kind = 'capture'), 0)
     - coalesce(sum(amount_paisa) FILTER (WHERE kind = 'refund'), 0) AS net
FROM journal_totals
GROUP BY payment_id
"""


async def disagreements(stack: Stack) -> list[str]:
    """Every way the gateway and the providers disagree about money right now, in words."""
    books = await ProviderBooks(stack).all()
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        known = {
            r["payment_id"]: r
            for r in await conn.fetch("SELECT payment_id, status, payment_method FROM payments")
        }
        expected: dict[str, int] = defaultdict(int)
        for row in await conn.fetch(_LEDGER_NET):
            expected[row["payment_id"]] += int(row["net"])
        for row in await conn.fetch(_WALLET_HOLDS):
            expected[row["payment_id"]] += int(row["amount_paisa"])
        refunds = {
            r["refund_id"]: r
            for r in await conn.fetch(
                "SELECT refund_id, payment_id, amount_paisa, status FROM refunds"
            )
        }
    finally:
        await conn.close()

    problems: list[str] = []
    held: dict[str, int] = defaultdict(int)
    for entry in books["payments"]:
        payment_id = entry["payment_id"]
        if payment_id not in known and entry["charged_paisa"]:
            problems.append(f"{entry['provider']} charged {payment_id}, which the gateway lacks")
        held[payment_id] += int(entry["charged_paisa"]) - int(entry["refunded_paisa"])
    for payment_id in sorted(set(held) | set(expected)):
        if held[payment_id] != expected[payment_id]:
            status = known[payment_id]["status"] if payment_id in known else "unknown"
            problems.append(
                f"payment {payment_id} ({status}): the providers hold {held[payment_id]} paisa,"
                f" the gateway's books say {expected[payment_id]}"
            )

    at_providers = {r["refund_id"]: r for r in books["refunds"] if r["status"] == "PROCESSED"}
    for refund_id, refund in refunds.items():
        if refund["status"] != "PROCESSED":
            continue
        theirs = at_providers.get(refund_id)
        if theirs is None or int(theirs["amount_paisa"]) != refund["amount_paisa"]:
            problems.append(
                f"refund {refund_id} is PROCESSED for {refund['amount_paisa']} paisa; the"
                f" provider has {theirs['amount_paisa'] if theirs else 'nothing'}"
            )
    for refund_id, theirs in at_providers.items():
        # A wallet void is a refund at the wallet; the gateway records it as the cancel.
        if refund_id.startswith("VOID_"):
            continue
        ours = refunds.get(refund_id)
        if ours is None or ours["status"] != "PROCESSED":
            problems.append(
                f"{theirs['provider']} refunded {refund_id} ({theirs['amount_paisa']} paisa);"
                f" the gateway has it {ours['status'] if ours else 'not at all'}"
            )
    return problems


async def assert_books_agree(stack: Stack, *, within: float = 60.0) -> None:
    """The ledger's invariants hold, and the providers' books agree with the gateway's once
    the payments in flight have settled (callbacks, inquiries and retries, polled)."""
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        assert await ledger_store.check_invariants(conn) == []
    finally:
        await conn.close()
    deadline = time.monotonic() + within
    while True:
        problems = await disagreements(stack)
        if not problems or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert problems == []
