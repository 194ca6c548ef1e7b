"""Idempotency keys against a real PostgreSQL: one effect per key, the first answer replayed,
the work finished even when the caller goes away, and a key never released once its effects
may have begun."""

from __future__ import annotations

import asyncio
import hashlib
import time
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
from orchestrator.idempotency import (
    EffectFenced,
    IdempotencyStore,
    bind_effects,
    idempotency_key,
)
from paygate.payments.v1 import payments_pb2

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "orchestrator" / "migrations"
CREATE = "/paygate.payments.v1.PaymentService/CreatePayment"
CAPTURE = "/paygate.payments.v1.PaymentService/CapturePayment"
DB_USER, DB_PASSWORD, DB_NAME = "paygate", "idempotency-test", "payments"
START_SECONDS = 60
FINGERPRINT_KEY = b"test-fingerprint-key-of-32-bytes-or-more"


# -- a real PostgreSQL for the module -------------------------------------------------------


@pytest.fixture(scope="module")
async def settings(postgres_server: ScratchServer) -> Settings:
    """Its own database, with every orchestrator migration applied."""
    return await postgres_server.database("idempotency", "orchestrator")


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(settings, "orchestrator")
    # What the handlers below change: one row per effect, written with the key's binding.
    await created.execute("CREATE TABLE IF NOT EXISTS test_effects (resource_id text PRIMARY KEY)")
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> IdempotencyStore:
    await pool.execute("TRUNCATE test_effects")  # effects are named per test: PAY_run1, ...
    return IdempotencyStore(pool, FINGERPRINT_KEY)


@pytest.fixture
def merchant() -> str:
    """A merchant of its own per test, so tests never share a key."""
    return f"MER_{uuid.uuid4().hex[:12]}"


# -- what the store guards --------------------------------------------------------------------


@dataclass
class Handler:
    """A mutating handler: counts its runs and answers with a payment named after the run.

    With a pool, each run makes a durable effect first, as the orchestrator's handlers do: a
    row in `test_effects`, written in the transaction that binds the key to it. `errors` are
    raised after `delay` (and after the effect, if there is one).
    """

    pool: asyncpg.Pool | None = None
    delay: float = 0.0
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0
    finished: int = 0

    async def __call__(self) -> payments_pb2.Payment:
        self.calls += 1
        payment_id = f"PAY_run{self.calls}"
        if self.pool is not None:
            async with self.pool.acquire() as conn, conn.transaction():
                await bind_effects(conn, payment_id)
                await conn.execute("INSERT INTO test_effects VALUES ($1)", payment_id)
        await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        self.finished += 1
        return answer(payment_id)


def answer(payment_id: str, status: int = payments_pb2.Payment.PENDING) -> payments_pb2.Payment:
    return payments_pb2.Payment(
        payment_id=payment_id,
        amount_paisa=10000,
        currency="INR",
        status=status,  # type: ignore[arg-type]
        metadata={"order_id": "ORD-1"},
    )


@dataclass
class Recovery:
    """`recover(resource_id)`: the resource as it stands now (SUCCESS here), or None when its
    effect never committed. Records what it was asked about."""

    pool: asyncpg.Pool
    asked: list[str] = field(default_factory=list)

    async def __call__(self, resource_id: str) -> payments_pb2.Payment | None:
        self.asked.append(resource_id)
        found = await self.pool.fetchval(
            "SELECT resource_id FROM test_effects WHERE resource_id = $1", resource_id
        )
        return answer(found, payments_pb2.Payment.SUCCESS) if found else None


async def nothing_to_recover(resource_id: str) -> payments_pb2.Payment | None:
    raise AssertionError(f"nothing was bound, yet {resource_id} was recovered")


def create_request(
    amount_paisa: int = 10000, card_number: str = "", cvv: str = ""
) -> payments_pb2.CreatePaymentRequest:
    request = payments_pb2.CreatePaymentRequest(
        amount_paisa=amount_paisa,
        currency="INR",
        payment_method=payments_pb2.CARD if card_number else payments_pb2.UPI,
        metadata={"order_id": "ORD-1", "note": "idempotency"},
    )
    if card_number:
        request.payment_details.card.card_number = card_number
        request.payment_details.card.cvv = cvv
        request.payment_details.card.expiry_month = "12"
        request.payment_details.card.expiry_year = "2031"
    return request


async def call(
    store: IdempotencyStore,
    handler: Handler,
    *,
    merchant: str,
    key: str | None = "key-1",
    method: str = CREATE,
    request: payments_pb2.CreatePaymentRequest | None = None,
    recover: Recovery | None = None,
) -> payments_pb2.Payment:
    return await store.run(
        merchant_id=merchant,
        key=key,
        method=method,
        request=request or create_request(),
        response_type=payments_pb2.Payment,
        handler=handler,
        recover=recover or nothing_to_recover,
    )


async def effects(pool: asyncpg.Pool, *resource_ids: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT resource_id FROM test_effects WHERE resource_id = ANY($1::text[])",
        list(resource_ids),
    )
    return sorted(r["resource_id"] for r in rows)


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


async def test_concurrent_duplicates_have_exactly_one_effect_and_the_rest_are_told_to_retry(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    handler = Handler(pool=pool, delay=0.3)
    outcomes = await asyncio.gather(
        *(call(store, handler, merchant=merchant) for _ in range(20)), return_exceptions=True
    )
    answers = [o for o in outcomes if isinstance(o, payments_pb2.Payment)]
    refusals = [o for o in outcomes if not isinstance(o, payments_pb2.Payment)]
    assert handler.calls == 1
    assert await effects(pool, "PAY_run1", "PAY_run2") == ["PAY_run1"]
    assert answers
    assert all(a == answers[0] for a in answers)
    assert refusals
    assert all(isinstance(r, Aborted) and r.reason == "IDEMPOTENCY_IN_PROGRESS" for r in refusals)
    assert await call(store, handler, merchant=merchant) == answers[0]


async def test_a_duplicate_of_a_running_request_is_refused_at_once_then_gets_its_answer(
    store: IdempotencyStore, merchant: str
) -> None:
    handler = Handler(delay=1.0)
    first = asyncio.create_task(call(store, handler, merchant=merchant))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(Aborted) as refused:
        await call(store, handler, merchant=merchant)
    assert time.monotonic() - started < 0.5  # Stripe's 409: no waiting on the first
    assert refused.value.reason == "IDEMPOTENCY_IN_PROGRESS"
    answer_ = await first
    assert await call(store, handler, merchant=merchant) == answer_
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


RETRYABLE = [
    Unavailable("UPI Core is unreachable"),
    DeadlineExceeded("UPI Core did not answer in time"),
    Internal("unexpected state"),
    Aborted("payment changed concurrently"),
    ResourceExhausted("provider quota exceeded"),
    RuntimeError("a bug"),
]


@pytest.mark.parametrize("error", RETRYABLE, ids=repr)
async def test_a_failure_before_any_effect_frees_the_key_for_a_retry(
    store: IdempotencyStore, merchant: str, error: BaseException
) -> None:
    handler = Handler(errors=[error])
    with pytest.raises(type(error)):
        await call(store, handler, merchant=merchant)
    retried = await call(store, handler, merchant=merchant)
    assert handler.calls == 2
    assert retried.payment_id == "PAY_run2"


@pytest.mark.parametrize("error", RETRYABLE, ids=repr)
async def test_a_failure_after_the_effect_keeps_the_key_and_the_retry_recovers_it(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str, error: BaseException
) -> None:
    """Issue 8 item 2: once side effects may have begun, the key is never released; the
    retry gets the bound resource's state, and the effect is never made twice."""
    handler = Handler(pool=pool, errors=[error])
    recovery = Recovery(pool)
    with pytest.raises(type(error)):
        await call(store, handler, merchant=merchant, recover=recovery)
    retried = await call(store, handler, merchant=merchant, recover=recovery)
    assert handler.calls == 1
    assert recovery.asked == ["PAY_run1"]
    assert (retried.payment_id, retried.status) == ("PAY_run1", payments_pb2.Payment.SUCCESS)
    assert await effects(pool, "PAY_run1", "PAY_run2") == ["PAY_run1"]
    assert await call(store, handler, merchant=merchant, recover=recovery) == retried


async def test_a_cancelled_caller_does_not_stop_the_work_nor_free_the_key(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    """A client disconnect, a grpc-timeout or Envoy's route timeout cancels the RPC: the
    handler still runs to completion, a retry meanwhile is told to wait, and a retry
    afterwards gets the first answer. Today's bug was the opposite: a second charge."""
    handler = Handler(pool=pool, delay=0.6)
    caller = asyncio.create_task(call(store, handler, merchant=merchant))
    await asyncio.sleep(0.2)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with pytest.raises(Aborted) as busy:
        await call(store, handler, merchant=merchant)
    assert busy.value.reason == "IDEMPOTENCY_IN_PROGRESS"
    await store.drain()
    assert handler.finished == 1
    replayed = await call(store, handler, merchant=merchant)
    assert replayed.payment_id == "PAY_run1"
    assert handler.calls == 1
    assert await effects(pool, "PAY_run1", "PAY_run2") == ["PAY_run1"]


async def test_a_handler_cancelled_after_its_effect_leaves_the_key_bound(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    """Shutdown cancels the handler's own task: the key is not freed, the retry recovers."""
    handler = Handler(pool=pool, errors=[asyncio.CancelledError()])
    recovery = Recovery(pool)
    with pytest.raises(asyncio.CancelledError):
        await call(store, handler, merchant=merchant, recover=recovery)
    retried = await call(store, handler, merchant=merchant, recover=recovery)
    assert handler.calls == 1
    assert retried.payment_id == "PAY_run1"


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


# -- the fingerprint (PCI) ----------------------------------------------------------------------

PAN = "4242424242424242"


async def test_the_stored_fingerprint_is_keyed_and_holds_no_card_data(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    request = create_request(card_number=PAN, cvv="123")
    await call(store, Handler(), merchant=merchant, request=request)
    stored = bytes(
        await pool.fetchval(
            "SELECT request_hash FROM idempotency_keys WHERE merchant_id = $1", merchant
        )
    )
    unkeyed = [
        hashlib.new(name, data).digest()
        for name in ("sha256", "sha1", "md5")
        for data in (request.SerializeToString(deterministic=True), PAN.encode(), b"123")
    ]
    assert stored not in unkeyed
    assert stored == store.fingerprint(CREATE, request)
    assert stored != IdempotencyStore(pool, b"another-key-" + FINGERPRINT_KEY).fingerprint(
        CREATE, request
    )


def test_the_fingerprint_ignores_the_cvv_and_tells_cards_apart(store: IdempotencyStore) -> None:
    same_card = create_request(card_number=PAN, cvv="123")
    other_cvv = create_request(card_number=PAN, cvv="999")
    other_card = create_request(card_number="5555555555554444", cvv="123")
    assert store.fingerprint(CREATE, same_card) == store.fingerprint(CREATE, other_cvv)
    assert store.fingerprint(CREATE, same_card) != store.fingerprint(CREATE, other_card)
    assert same_card.payment_details.card.cvv == "123"  # the caller's request is untouched


async def test_a_key_stored_before_fingerprints_were_keyed_still_replays(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    """Migration 0007 drops the old unkeyed hashes: such a key replays for its method."""
    await call(store, Handler(), merchant=merchant)
    await pool.execute(
        "UPDATE idempotency_keys SET request_hash = NULL WHERE merchant_id = $1", merchant
    )
    handler = Handler()
    replayed = await call(store, handler, merchant=merchant, request=create_request(5))
    assert (handler.calls, replayed.payment_id) == (0, "PAY_run1")
    with pytest.raises(Aborted):
        await call(store, handler, merchant=merchant, method=CAPTURE)


# -- retention and recovery -------------------------------------------------------------------


async def test_an_expired_key_starts_afresh(pool: asyncpg.Pool, merchant: str) -> None:
    store = IdempotencyStore(pool, FINGERPRINT_KEY, ttl=timedelta(0))
    handler = Handler()
    await call(store, handler, merchant=merchant)
    await call(store, handler, merchant=merchant, request=create_request(amount_paisa=1))
    assert handler.calls == 2


async def test_expired_keys_are_purged_and_live_ones_kept(
    pool: asyncpg.Pool, store: IdempotencyStore, merchant: str
) -> None:
    expiring = IdempotencyStore(pool, FINGERPRINT_KEY, ttl=timedelta(0))
    handler = Handler()
    for key in ("old-1", "old-2"):
        await call(expiring, handler, merchant=merchant, key=key)
    await call(store, handler, merchant=merchant, key="live")
    await insert_in_progress(store, pool, merchant, "old-but-running", expired=True, stale=False)

    assert await store.purge_expired() >= 2

    keys = await pool.fetch(
        "SELECT idempotency_key FROM idempotency_keys WHERE merchant_id = $1", merchant
    )
    assert sorted(row["idempotency_key"] for row in keys) == ["live", "old-but-running"]
    assert await store.purge_expired() == 0


async def test_an_expired_key_whose_attempt_died_is_purged(
    pool: asyncpg.Pool, store: IdempotencyStore, merchant: str
) -> None:
    await insert_in_progress(store, pool, merchant, "old-and-dead", expired=True, stale=True)
    assert await store.purge_expired() >= 1
    left = await pool.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE merchant_id = $1", merchant
    )
    assert left == 0


async def test_a_stale_key_with_no_effect_is_taken_over_and_run(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    await insert_in_progress(store, pool, merchant, "key-1", expired=False, stale=True)
    handler = Handler()
    answer_ = await call(store, handler, merchant=merchant)
    assert handler.calls == 1
    assert await call(store, handler, merchant=merchant) == answer_
    assert handler.calls == 1


async def test_a_stale_key_whose_effect_committed_is_recovered_never_rerun(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    """A process died after creating the payment: the takeover answers with its state."""
    resource = f"PAY_dead_{uuid.uuid4().hex[:8]}"
    await pool.execute("INSERT INTO test_effects VALUES ($1)", resource)
    await insert_in_progress(
        store, pool, merchant, "key-1", expired=False, stale=True, resource=resource
    )
    handler = Handler(pool=pool)
    recovery = Recovery(pool)
    recovered = await call(store, handler, merchant=merchant, recover=recovery)
    assert handler.calls == 0
    assert (recovered.payment_id, recovery.asked) == (resource, [resource])
    assert await call(store, handler, merchant=merchant, recover=recovery) == recovered


async def test_a_stale_key_whose_effect_rolled_back_runs_afresh(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    await insert_in_progress(
        store, pool, merchant, "key-1", expired=False, stale=True, resource="PAY_never_written"
    )
    handler = Handler(pool=pool)
    recovery = Recovery(pool)
    answer_ = await call(store, handler, merchant=merchant, recover=recovery)
    assert recovery.asked == ["PAY_never_written"]
    assert (handler.calls, answer_.payment_id) == (1, "PAY_run1")


async def test_a_live_key_is_busy_until_its_owner_stops_beating(
    pool: asyncpg.Pool, merchant: str
) -> None:
    store = IdempotencyStore(pool, FINGERPRINT_KEY, stale_after=timedelta(seconds=0.3))
    await insert_in_progress(store, pool, merchant, "key-1", expired=False, stale=False)
    handler = Handler()
    with pytest.raises(Aborted) as busy:
        await call(store, handler, merchant=merchant)
    assert busy.value.reason == "IDEMPOTENCY_IN_PROGRESS"
    await asyncio.sleep(0.4)
    await call(store, handler, merchant=merchant)
    assert handler.calls == 1


async def test_a_stale_key_is_not_taken_over_by_a_different_request(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    await insert_in_progress(store, pool, merchant, "key-1", expired=False, stale=True)
    with pytest.raises(Aborted) as refused:
        await call(store, Handler(), merchant=merchant, request=create_request(amount_paisa=5))
    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_slow_handler_keeps_its_key_by_heartbeat(pool: asyncpg.Pool, merchant: str) -> None:
    store = IdempotencyStore(pool, FINGERPRINT_KEY, stale_after=timedelta(seconds=0.3))
    handler = Handler(delay=1.0)
    first = asyncio.create_task(call(store, handler, merchant=merchant))
    await asyncio.sleep(0.7)  # twice stale_after: only the heartbeat keeps it fresh
    with pytest.raises(Aborted) as busy:
        await call(store, handler, merchant=merchant)
    assert busy.value.reason == "IDEMPOTENCY_IN_PROGRESS"
    answer_ = await first
    assert await call(store, handler, merchant=merchant) == answer_
    assert handler.calls == 1


async def test_a_first_call_costs_three_statements_a_replay_one_and_a_quick_handler_no_beat(
    store: IdempotencyStore, settings: Settings, merchant: str
) -> None:
    """The store's round trips on the request path: claim, bind (in the effect's transaction)
    and complete for a first call; one for a retry that gets the stored answer; and no
    heartbeat for a handler that finished before its first beat was due."""
    single = await create_pool(
        settings.model_copy(update={"db_max_open_conns": 1, "db_max_idle_conns": 1}),
        "orchestrator",
        "idempotency-count",
    )
    try:
        logged: list[str] = []
        async with single.acquire() as conn:
            conn.add_query_logger(lambda query: logged.append(query.query))
        # The first beat is due after 1 s: far more than a quick handler needs even on a
        # loaded CI machine (0.1 s was not), so a fourth statement means a beat not cancelled.
        counted = IdempotencyStore(single, FINGERPRINT_KEY, stale_after=timedelta(seconds=3))
        handler = Handler(single)

        first = await call(counted, handler, merchant=merchant)
        await asyncio.sleep(1.2)  # past the first beat's due time
        first_call = [q for q in logged if "idempotency_keys" in q]
        logged.clear()
        replayed = await call(counted, handler, merchant=merchant)
        await asyncio.sleep(0)  # loggers are called soon after their query
        replay = [q for q in logged if "idempotency_keys" in q]
    finally:
        await single.close()
    assert replayed == first
    assert handler.calls == 1
    assert len(first_call) == 3, first_call
    assert "INSERT INTO idempotency_keys" in first_call[0]
    assert "SET resource_id" in first_call[1]
    assert "SET state = 'completed'" in first_call[2]
    assert len(replay) == 1, replay


async def test_an_attempt_that_lost_its_key_cannot_commit_its_effect(
    store: IdempotencyStore, pool: asyncpg.Pool, merchant: str
) -> None:
    """Fencing: a process cut off long enough to be taken over finds its effect refused."""

    async def taken_over_then_writes() -> payments_pb2.Payment:
        await pool.execute(
            "UPDATE idempotency_keys SET attempt_id = $2 WHERE merchant_id = $1",
            merchant,
            uuid.uuid4(),
        )
        async with pool.acquire() as conn, conn.transaction():
            await bind_effects(conn, "PAY_fenced")
            await conn.execute("INSERT INTO test_effects VALUES ('PAY_fenced')")
        return answer("PAY_fenced")

    with pytest.raises(EffectFenced):
        await store.run(
            merchant_id=merchant,
            key="key-1",
            method=CREATE,
            request=create_request(),
            response_type=payments_pb2.Payment,
            handler=taken_over_then_writes,
            recover=nothing_to_recover,
        )
    assert await effects(pool, "PAY_fenced") == []


async def insert_in_progress(
    store: IdempotencyStore,
    pool: asyncpg.Pool,
    merchant: str,
    key: str,
    *,
    expired: bool,
    stale: bool,
    resource: str | None = None,
) -> None:
    """The row a process leaves behind when it dies (stale) or is still working (fresh)."""
    await pool.execute(
        """
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_hash, state,
            attempt_id, heartbeat_at, expires_at, resource_id)
        VALUES ($1, $2, $3, $4, 'in_progress', $5, now() - $6::interval, now() + $7::interval,
                $8)
        """,
        merchant,
        key,
        CREATE,
        store.fingerprint(CREATE, create_request()),
        uuid.uuid4(),
        timedelta(minutes=5) if stale else timedelta(0),
        timedelta(hours=-1) if expired else timedelta(hours=24),
        resource,
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
