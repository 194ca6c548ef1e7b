"""Idempotency keys against a real PostgreSQL: one effect per key, the first answer replayed."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import cast

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.auth import RpcContext
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GatewayError,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    to_rpc_status,
)
from orchestrator.idempotency import IdempotencyStore, idempotency_key
from paygate.payments.v1 import payments_pb2

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "orchestrator" / "migrations"
CREATE = "/paygate.payments.v1.PaymentService/CreatePayment"
CAPTURE = "/paygate.payments.v1.PaymentService/CapturePayment"
DB_USER, DB_PASSWORD, DB_NAME = "paygate", "idempotency-test", "payments"
START_SECONDS = 60


# -- a real PostgreSQL for the module -------------------------------------------------------


@pytest.fixture(scope="module")
async def settings(postgres_server: ScratchServer) -> Settings:
    """Its own database, with every orchestrator migration applied."""
    return await postgres_server.database("idempotency", "orchestrator")


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(settings, "orchestrator")
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> IdempotencyStore:
    return IdempotencyStore(pool)


@pytest.fixture
def merchant() -> str:
    """A merchant of its own per test, so tests never share a key."""
    return f"MER_{uuid.uuid4().hex[:12]}"


# -- what the store guards --------------------------------------------------------------------


@dataclass
class Handler:
    """A mutating handler: counts its runs and answers with a payment named after the run."""

    delay: float = 0.0
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0

    async def __call__(self) -> payments_pb2.Payment:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        return payments_pb2.Payment(
            payment_id=f"PAY_run{self.calls}",
            amount_paisa=10000,
            currency="INR",
            status=payments_pb2.Payment.PENDING,
            metadata={"order_id": "ORD-1", "run": str(self.calls)},
        )


def create_request(amount_paisa: int = 10000) -> payments_pb2.CreatePaymentRequest:
    return payments_pb2.CreatePaymentRequest(
        amount_paisa=amount_paisa,
        currency="INR",
        payment_method=payments_pb2.UPI,
        metadata={"order_id": "ORD-1", "note": "idempotency"},
    )


async def call(
    store: IdempotencyStore,
    handler: Handler,
    *,
    merchant: str,
    key: str | None = "key-1",
    method: str = CREATE,
    request: payments_pb2.CreatePaymentRequest | None = None,
) -> payments_pb2.Payment:
    return await store.run(
        merchant_id=merchant,
        key=key,
        method=method,
        request=request or create_request(),
        response_type=payments_pb2.Payment,
        handler=handler,
    )


# -- the contract -----------------------------------------------------------------------------


async def test_same_key_and_request_replays_the_first_response(
    store: IdempotencyStore, merchant: str
) -> None:
    handler = Handler()
    first = await call(store, handler, merchant=merchant)
    second = await call(store, handler, merchant=merchant)
    assert handler.calls == 1
    assert second == first
    assert second.payment_id == "PAY_run1"


async def test_calls_without_a_key_run_every_time(store: IdempotencyStore, merchant: str) -> None:
    handler = Handler()
    await call(store, handler, merchant=merchant, key=None)
    await call(store, handler, merchant=merchant, key="")
    assert handler.calls == 2


@pytest.mark.parametrize(
    ("method", "request_"),
    [(CREATE, create_request(amount_paisa=20000)), (CAPTURE, create_request())],
    ids=["different body", "different method"],
)
async def test_a_key_reused_for_a_different_request_is_refused(
    store: IdempotencyStore,
    merchant: str,
    method: str,
    request_: payments_pb2.CreatePaymentRequest,
) -> None:
    handler = Handler()
    await call(store, handler, merchant=merchant)
    with pytest.raises(Aborted) as refused:
        await call(store, handler, merchant=merchant, method=method, request=request_)
    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert "different request" in refused.value.message
    assert to_rpc_status(refused.value).code.name == "ABORTED"
    assert handler.calls == 1


async def test_concurrent_duplicates_have_exactly_one_effect(
    store: IdempotencyStore, merchant: str
) -> None:
    handler = Handler(delay=0.2)
    answers = await asyncio.gather(*(call(store, handler, merchant=merchant) for _ in range(20)))
    assert handler.calls == 1
    assert all(answer == answers[0] for answer in answers)


async def test_a_duplicate_still_running_after_the_wait_bound_is_refused(
    pool: asyncpg.Pool, merchant: str
) -> None:
    store = IdempotencyStore(pool, wait_timeout=0.2)
    handler = Handler(delay=0.8)
    first = asyncio.create_task(call(store, handler, merchant=merchant))
    await asyncio.sleep(0.05)
    with pytest.raises(Aborted) as refused:
        await call(store, handler, merchant=merchant)
    assert refused.value.reason == "IDEMPOTENCY_KEY_IN_PROGRESS"
    answer = await first
    assert await call(store, handler, merchant=merchant) == answer
    assert handler.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument.for_fields(
            [
                FieldViolation("payment_details.vpa", "is not registered with any UPI app"),
                FieldViolation("amount_paisa", "must be positive"),
            ],
            reason="VPA_NOT_FOUND",
        ),
        FailedPrecondition("payment is not capturable", reason="NOT_CAPTURABLE"),
        NotFound("payment PAY_x not found", metadata={"payment_id": "PAY_x"}),
        AlreadyExists("refund already exists", reason="DUPLICATE_REFUND"),
    ],
    ids=repr,
)
async def test_a_client_error_is_stored_and_replayed_identically(
    store: IdempotencyStore, merchant: str, error: GatewayError
) -> None:
    handler = Handler(errors=[error])
    with pytest.raises(GatewayError) as first:
        await call(store, handler, merchant=merchant)
    with pytest.raises(GatewayError) as replayed:
        await call(store, handler, merchant=merchant)
    assert handler.calls == 1
    assert first.value is error
    assert type(replayed.value) is type(error)
    assert replayed.value.message == error.message
    assert replayed.value.reason == error.reason
    assert replayed.value.field_violations == error.field_violations
    assert replayed.value.metadata == error.metadata
    assert to_rpc_status(replayed.value) == to_rpc_status(error)


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("UPI Core is unreachable"),
        DeadlineExceeded("UPI Core did not answer in time"),
        Internal("unexpected state"),
        Aborted("payment changed concurrently"),
        ResourceExhausted("provider quota exceeded"),
        RuntimeError("a bug"),
    ],
    ids=repr,
)
async def test_a_retryable_failure_is_not_stored(
    store: IdempotencyStore, merchant: str, error: BaseException
) -> None:
    handler = Handler(errors=[error])
    with pytest.raises(type(error)):
        await call(store, handler, merchant=merchant)
    retried = await call(store, handler, merchant=merchant)
    assert handler.calls == 2
    assert retried.payment_id == "PAY_run2"


async def test_a_cancelled_call_releases_its_key(store: IdempotencyStore, merchant: str) -> None:
    handler = Handler(delay=10)
    cancelled = asyncio.create_task(call(store, handler, merchant=merchant))
    await asyncio.sleep(0.1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    handler.delay = 0
    assert (await call(store, handler, merchant=merchant)).payment_id == "PAY_run2"


async def test_keys_are_scoped_per_merchant(store: IdempotencyStore) -> None:
    handler = Handler()
    first = await call(store, handler, merchant="MER_a_" + uuid.uuid4().hex)
    second = await call(store, handler, merchant="MER_b_" + uuid.uuid4().hex)
    assert handler.calls == 2
    assert first != second


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "naïve-key", "tab\tkey", "new\nline", "del\x7f"],
    ids=["too long", "not ascii", "tab", "newline", "DEL"],
)
async def test_a_malformed_key_is_refused_naming_the_header(
    store: IdempotencyStore, merchant: str, key: str
) -> None:
    handler = Handler()
    with pytest.raises(InvalidArgument) as refused:
        await call(store, handler, merchant=merchant, key=key)
    assert [v.field for v in refused.value.field_violations] == ["Idempotency-Key"]
    assert refused.value.reason == "IDEMPOTENCY_KEY_INVALID"
    assert handler.calls == 0


@pytest.mark.parametrize("key", ["k" * 255, "x", "order 42 / attempt #1 ~!"])
async def test_any_printable_ascii_key_up_to_255_characters_is_accepted(
    store: IdempotencyStore, merchant: str, key: str
) -> None:
    handler = Handler()
    await call(store, handler, merchant=merchant, key=key)
    await call(store, handler, merchant=merchant, key=key)
    assert handler.calls == 1


# -- retention and recovery -------------------------------------------------------------------


async def test_an_expired_key_starts_afresh(pool: asyncpg.Pool, merchant: str) -> None:
    store = IdempotencyStore(pool, ttl=timedelta(0))
    handler = Handler()
    await call(store, handler, merchant=merchant)
    await call(store, handler, merchant=merchant, request=create_request(amount_paisa=1))
    assert handler.calls == 2


async def test_expired_keys_are_purged_and_live_ones_kept(
    pool: asyncpg.Pool, store: IdempotencyStore, merchant: str
) -> None:
    expiring = IdempotencyStore(pool, ttl=timedelta(0))
    handler = Handler()
    for key in ("old-1", "old-2"):
        await call(expiring, handler, merchant=merchant, key=key)
    await call(store, handler, merchant=merchant, key="live")
    await insert_in_progress(pool, merchant, "old-but-running", expired=True, stale=False)

    assert await store.purge_expired() >= 2

    keys = await pool.fetch(
        "SELECT idempotency_key FROM idempotency_keys WHERE merchant_id = $1", merchant
    )
    assert sorted(row["idempotency_key"] for row in keys) == ["live", "old-but-running"]
    assert await store.purge_expired() == 0


async def test_a_stale_in_progress_key_is_taken_over(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    await insert_in_progress(pool, merchant, "key-1", expired=False, stale=True)
    handler = Handler()
    answer = await call(store, handler, merchant=merchant)
    assert handler.calls == 1
    assert await call(store, handler, merchant=merchant) == answer
    assert handler.calls == 1


async def test_a_waiter_takes_over_when_the_owner_stops_beating(
    pool: asyncpg.Pool, merchant: str
) -> None:
    await insert_in_progress(pool, merchant, "key-1", expired=False, stale=False)
    store = IdempotencyStore(pool, stale_after=timedelta(seconds=0.3), wait_timeout=5)
    handler = Handler()
    await call(store, handler, merchant=merchant)
    assert handler.calls == 1


async def test_a_stale_key_is_not_taken_over_by_a_different_request(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    await insert_in_progress(pool, merchant, "key-1", expired=False, stale=True)
    with pytest.raises(Aborted) as refused:
        await call(store, Handler(), merchant=merchant, request=create_request(amount_paisa=5))
    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_slow_handler_keeps_its_key_by_heartbeat(pool: asyncpg.Pool, merchant: str) -> None:
    store = IdempotencyStore(pool, stale_after=timedelta(seconds=0.3), wait_timeout=5)
    handler = Handler(delay=1.0)
    first = asyncio.create_task(call(store, handler, merchant=merchant))
    await asyncio.sleep(0.05)
    second = await call(store, handler, merchant=merchant)
    assert handler.calls == 1
    assert second == await first


async def insert_in_progress(
    pool: asyncpg.Pool, merchant: str, key: str, *, expired: bool, stale: bool
) -> None:
    """The row a process leaves behind when it dies (stale) or is still working (fresh)."""
    request_hash = hashlib.sha256(create_request().SerializeToString(deterministic=True)).digest()
    await pool.execute(
        """
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_hash, state,
            attempt_id, heartbeat_at, expires_at)
        VALUES ($1, $2, $3, $4, 'in_progress', $5, now() - $6::interval, now() + $7::interval)
        """,
        merchant,
        key,
        CREATE,
        request_hash,
        uuid.uuid4(),
        timedelta(minutes=5) if stale else timedelta(0),
        timedelta(hours=-1) if expired else timedelta(hours=24),
    )


# -- reading the header -------------------------------------------------------------------------


class FakeContext:
    def __init__(self, metadata: list[tuple[str, str | bytes]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, str | bytes]]:
        return self._metadata


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("x-merchant-id", "MER_1"), ("idempotency-key", "abc")], "abc"),
        ([("Idempotency-Key", "abc"), ("idempotency-key", "later")], "abc"),
        ([("idempotency-key", "")], None),
        ([("x-merchant-id", "MER_1")], None),
    ],
    ids=["present", "first of several", "empty", "absent"],
)
def test_the_key_comes_from_the_idempotency_key_metadata(
    metadata: list[tuple[str, str | bytes]], expected: str | None
) -> None:
    context = cast(RpcContext, FakeContext(metadata))
    assert idempotency_key(context) == expected
