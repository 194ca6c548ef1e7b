"""Idempotency keys (DESIGN.md §3), with Stripe's semantics.

A mutating call may carry an `Idempotency-Key` header (gRPC metadata `idempotency-key`). Keys
are scoped per merchant and kept for `ttl` (24 h by default). For one merchant and key:

- the first call runs its handler; its answer (the response message, or a 4xx-class domain
  error) is stored, and later calls with the same method and request get it back unchanged;
- a call with a different method or request is refused: Aborted `IDEMPOTENCY_KEY_REUSED`;
- a call arriving while the first still runs is refused at once: Aborted
  `IDEMPOTENCY_IN_PROGRESS` (retry later to get the first answer);
- the handler runs to completion even when its caller goes away (a client disconnect, a
  grpc-timeout, Envoy's route timeout): it runs in a task of its own, not the RPC's.

Effects and recovery. A handler's first durable effect (the payment row, the claim of a
capture or cancel, the refund row) calls `bind_effects` inside that effect's transaction, which
records the resource it created or changed on the key, fenced by the attempt id: an attempt
that lost its key cannot commit an effect. From then on the key stays bound to that resource:

- a failure before the effect (nothing happened) releases the key, so a retry runs afresh;
- a failure after it, an unexpected error or a cancellation, never releases it; the attempt
  is abandoned and the next call with the same request does not run the handler again but
  asks `recover(resource_id)` for the resource's current state, which the status inquiries
  settle. The same happens when a process dies mid-request: its heartbeat stops, and after
  `stale_after` the key is taken over the same way.

Both refusals are Aborted (gRPC ABORTED, HTTP 409 through Envoy): the IETF idempotency-key
draft answers 422 for a reused key and 409 for one in use, and the gRPC-to-HTTP mapping has no
422, so both are the conflict family, told apart by `reason`.

The request fingerprint is an HMAC-SHA256 under a secret key, over the request with card data
replaced (the number by its own keyed digest, the CVV dropped): nothing in the table can be
brute-forced back to a card (PCI DSS 3.3, 3.5).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from gateway_core.auth import RpcContext
from gateway_core.errors import (
    Aborted,
    GatewayError,
    from_rpc_error,
    invalid_field,
    to_rpc_status,
)
from gateway_core.logging import get_logger

M = TypeVar("M", bound=Message)

METADATA_KEY = "idempotency-key"
HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REASON_INVALID = "IDEMPOTENCY_KEY_INVALID"
REASON_REUSED = "IDEMPOTENCY_KEY_REUSED"
REASON_IN_PROGRESS = "IDEMPOTENCY_IN_PROGRESS"

# 4xx-class codes that still mean "try again": storing them would make the retry pointless.
_RETRYABLE_4XX = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# Request fields that hold card data: the number is replaced by its keyed digest, the CVV
# dropped, before the request is fingerprinted.
_CARD_NUMBER_FIELDS = frozenset({"card_number"})
_DROPPED_FIELDS = frozenset({"cvv"})
# A claim can lose a race with a release or a purge; it is retried this many times.
_CLAIM_ROUNDS = 5
PURGE_BATCH = 5000

log = get_logger(__name__)

# Takes the key when it is free, expired, or held by an attempt whose heartbeat stopped.
# A stale row is taken over only by the same request (a different one is still a reuse);
# an expired one by any request, as the key's retention is over. ON CONFLICT locks the row and
# re-checks the condition on its latest version, so of concurrent claimers exactly one wins.
# A stale, unexpired row keeps its resource: the takeover recovers it instead of re-running.
_CLAIM = """
INSERT INTO idempotency_keys AS k (
    merchant_id, idempotency_key, method, request_hash, state, attempt_id,
    created_at, heartbeat_at, expires_at)
VALUES ($1, $2, $3, $4, 'in_progress', $5, now(), now(), now() + $6::interval)
ON CONFLICT (merchant_id, idempotency_key) DO UPDATE SET
    method = EXCLUDED.method,
    request_hash = EXCLUDED.request_hash,
    state = 'in_progress',
    attempt_id = EXCLUDED.attempt_id,
    resource_id = CASE WHEN k.state = 'in_progress' AND k.expires_at > now()
                       THEN k.resource_id END,
    response = NULL,
    error_status = NULL,
    created_at = EXCLUDED.created_at,
    heartbeat_at = EXCLUDED.heartbeat_at,
    completed_at = NULL,
    expires_at = EXCLUDED.expires_at
WHERE (k.state = 'completed' AND k.expires_at <= now())
   OR (k.state = 'in_progress' AND k.heartbeat_at <= now() - $7::interval
       AND ((k.method = EXCLUDED.method
             AND k.request_hash IS NOT DISTINCT FROM EXCLUDED.request_hash)
            OR k.expires_at <= now()))
RETURNING attempt_id, resource_id
"""

# The claim, and when it fails the key's row as it stands, in one round trip: a first call
# gets its claim, a retry the stored answer or the reason it cannot have one. The row is read
# from the statement's snapshot, which may predate the version the claim saw (a concurrent
# claim, completion or heartbeat that committed meanwhile): no row then, or an older one, and
# every such case is either a refusal the caller retries or another round of `_acquire`.
_CLAIM_OR_LOAD = f"""
WITH claimed AS ({_CLAIM})
SELECT true AS claimed, attempt_id, resource_id,
       NULL::text AS state, NULL::text AS method, NULL::bytea AS request_hash,
       NULL::bytea AS response, NULL::bytea AS error_status,
       NULL::boolean AS expired, NULL::boolean AS stale
FROM claimed
UNION ALL
SELECT false, NULL, NULL, state, method, request_hash, response, error_status,
       expires_at <= now(), heartbeat_at <= now() - $7::interval
FROM idempotency_keys
WHERE merchant_id = $1 AND idempotency_key = $2 AND NOT EXISTS (SELECT 1 FROM claimed)
"""  # noqa: S608 - composed of this module's constants only

# Every write of the attempt is conditional on still holding the key.
_HEARTBEAT = """
UPDATE idempotency_keys SET heartbeat_at = now()
WHERE merchant_id = $1 AND idempotency_key = $2 AND attempt_id = $3 AND state = 'in_progress'
"""

_BIND = """
UPDATE idempotency_keys SET resource_id = $4
WHERE merchant_id = $1 AND idempotency_key = $2 AND attempt_id = $3 AND state = 'in_progress'
"""

_COMPLETE = """
UPDATE idempotency_keys
SET state = 'completed', response = $4, error_status = $5, completed_at = now()
WHERE merchant_id = $1 AND idempotency_key = $2 AND attempt_id = $3 AND state = 'in_progress'
"""

_RELEASE = """
DELETE FROM idempotency_keys
WHERE merchant_id = $1 AND idempotency_key = $2 AND attempt_id = $3 AND state = 'in_progress'
"""

# The attempt gave up after its effects began: stale at once, so the next call with the same
# request takes the key over and recovers the bound resource.
_ABANDON = """
UPDATE idempotency_keys SET heartbeat_at = '-infinity'
WHERE merchant_id = $1 AND idempotency_key = $2 AND attempt_id = $3 AND state = 'in_progress'
"""

# In batches, so no single transaction holds many row locks; rows a claim holds are skipped.
# An expired key still in progress is kept until its heartbeat stops.
_PURGE = """
DELETE FROM idempotency_keys k
USING (
    SELECT merchant_id, idempotency_key FROM idempotency_keys
    WHERE expires_at <= now()
      AND (state = 'completed' OR heartbeat_at <= now() - $1::interval)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) expired
WHERE k.merchant_id = expired.merchant_id AND k.idempotency_key = expired.idempotency_key
"""

Recover = Callable[[str], Awaitable[M | None]]


def idempotency_key(context: RpcContext) -> str | None:
    """The call's Idempotency-Key, or None when it has none (absent or empty)."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == METADATA_KEY and isinstance(value, str):
            return value or None
    return None


class EffectFenced(Aborted):
    """The attempt lost its key (taken over) before it could commit its first effect."""

    reason = REASON_IN_PROGRESS


@dataclass(frozen=True)
class _Slot:
    merchant_id: str
    key: str
    method: str
    request_hash: bytes


@dataclass(frozen=True)
class _Claimed:
    attempt_id: uuid.UUID
    resource_id: str | None  # set when a dead attempt had begun its effects


@dataclass
class _Attempt:
    slot: _Slot
    attempt_id: uuid.UUID
    # True once an effect may have committed; never reset (a rolled-back bind only makes the
    # next call's recovery find nothing and run afresh, which is safe).
    bound: bool = field(default=False)


@dataclass(frozen=True)
class _Stored:
    response: bytes | None
    error_status: bytes | None

    def replay(self, response_type: type[M]) -> M:
        if self.error_status is not None:
            raise _decode_error(self.error_status)
        assert self.response is not None  # the table's check: one of the two is set
        return response_type.FromString(self.response)


_current: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "idempotency_attempt", default=None
)


async def bind_effects(conn: asyncpg.Connection, resource_id: str) -> None:
    """Bind the running attempt's key to `resource_id`, in the caller's transaction.

    Call it in the transaction of the request's first durable effect. Without an
    Idempotency-Key this does nothing; with one whose attempt was taken over it raises
    EffectFenced, which rolls the effect back.
    """
    attempt = _current.get()
    if attempt is None:
        return
    attempt.bound = True
    slot = attempt.slot
    status = await conn.execute(_BIND, slot.merchant_id, slot.key, attempt.attempt_id, resource_id)
    if status == "UPDATE 0":
        raise EffectFenced(
            "a request with this Idempotency-Key is already being processed elsewhere; retry later"
        )


class IdempotencyStore:
    """Runs mutating handlers at most once per (merchant, Idempotency-Key) (see the module doc).

    The heartbeat (every third of `stale_after`) keeps slow but live handlers from being taken
    over. A live process cut off from the database for `stale_after` can be; its effects are
    then fenced by `bind_effects`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        fingerprint_key: bytes,
        *,
        ttl: timedelta = timedelta(hours=24),
        stale_after: timedelta = timedelta(seconds=60),
    ) -> None:
        if stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        if len(fingerprint_key) < 32:
            raise ValueError("the fingerprint key must be at least 32 bytes")
        self._pool = pool
        self._fingerprint_key = fingerprint_key
        self._ttl = ttl
        self._stale_after = stale_after
        self._heartbeat_seconds = stale_after.total_seconds() / 3
        self._running: set[asyncio.Task[Any]] = set()

    async def run(
        self,
        *,
        merchant_id: str,
        key: str | None,
        method: str,
        request: Message,
        response_type: type[M],
        handler: Callable[[], Awaitable[M]],
        recover: Recover[M],
    ) -> M:
        """`handler()`'s answer, run at most once per merchant and key (see the module doc).

        `method` is the full gRPC method name; with the request's fingerprint it is what a
        retry must match. `recover(resource_id)` answers for an attempt that bound its key
        and then died or failed: the resource's current state, or None when the resource does
        not exist (its effect rolled back), in which case the handler runs afresh.
        """
        if not key:
            return await self._detached(_awaited(handler))
        _check_key(key)
        slot = _Slot(merchant_id, key, method, self.fingerprint(method, request))
        claimed = await self._acquire(slot)
        if isinstance(claimed, _Stored):
            return claimed.replay(response_type)
        return await self._detached(self._attempt(slot, claimed, handler, recover))

    def fingerprint(self, method: str, request: Message) -> bytes:
        """HMAC-SHA256 of the method and the request, card data replaced first."""
        cleaned = type(request)()
        cleaned.CopyFrom(request)
        self._scrub(cleaned)
        signed = method.encode() + b"\0" + cleaned.SerializeToString(deterministic=True)
        return hmac.new(self._fingerprint_key, signed, hashlib.sha256).digest()

    async def purge_expired(self) -> int:
        """Delete expired keys; returns how many. Meant for a periodic background task."""
        total = 0
        while True:
            status: str = await self._pool.execute(_PURGE, self._stale_after, PURGE_BATCH)
            deleted = int(status.rsplit(" ", 1)[1])
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    async def drain(self, grace_seconds: float = 10.0) -> None:
        """Let handlers whose callers went away finish (a shutdown hook)."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_seconds)

    # Internals

    def _scrub(self, message: Message) -> None:
        for descriptor, value in message.ListFields():
            if descriptor.name in _DROPPED_FIELDS:
                message.ClearField(descriptor.name)
            elif descriptor.name in _CARD_NUMBER_FIELDS and isinstance(value, str):
                digest = hmac.new(self._fingerprint_key, value.encode(), hashlib.sha256)
                setattr(message, descriptor.name, digest.hexdigest())
            elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                for nested in _messages_in(value):
                    self._scrub(nested)

    async def _detached(self, work: Coroutine[Any, Any, M]) -> M:
        """Run `work` in a task of its own: cancelling the caller does not cancel it."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            # Retrieved here, so a task whose caller left does not warn "never retrieved".
            task.exception()

    async def _acquire(self, slot: _Slot) -> _Claimed | _Stored:
        """The claim when this call holds the key, or the stored answer to replay."""
        for _ in range(_CLAIM_ROUNDS):
            row = await self._pool.fetchrow(
                _CLAIM_OR_LOAD,
                slot.merchant_id,
                slot.key,
                slot.method,
                slot.request_hash,
                uuid.uuid4(),
                self._ttl,
                self._stale_after,
            )
            if row is None:  # released or purged, or claimed by a call this one cannot see yet
                continue
            if row["claimed"]:
                return _Claimed(row["attempt_id"], row["resource_id"])
            finished = row["state"] == "completed"
            if row["expired"] and (finished or row["stale"]):
                continue
            if not _same_request(row, slot):
                raise Aborted(
                    "this Idempotency-Key was already used with a different request; "
                    "send a new key for a new request",
                    reason=REASON_REUSED,
                )
            if finished:
                return _Stored(response=row["response"], error_status=row["error_status"])
            if row["stale"]:
                continue
            break
        raise Aborted(
            "a request with this Idempotency-Key is still being processed; retry later to "
            "get its answer",
            reason=REASON_IN_PROGRESS,
        )

    async def _attempt(
        self,
        slot: _Slot,
        claimed: _Claimed,
        handler: Callable[[], Awaitable[M]],
        recover: Recover[M],
    ) -> M:
        attempt = _Attempt(slot, claimed.attempt_id, bound=claimed.resource_id is not None)
        token = _current.set(attempt)
        try:
            response = await self._with_heartbeat(attempt, handler, recover, claimed.resource_id)
        except GatewayError as err:
            if _replayable(err):
                await self._write(_COMPLETE, attempt, None, _encode_error(err))
            else:
                await self._give_up(attempt)
            raise
        except BaseException:
            await self._give_up(attempt)
            raise
        finally:
            _current.reset(token)
        # Deterministic bytes, and the first caller gets the message rebuilt from them too:
        # every answer for this key is then the same, down to the order of map entries.
        stored = response.SerializeToString(deterministic=True)
        await self._write(_COMPLETE, attempt, stored, None)
        return type(response).FromString(stored)

    async def _with_heartbeat(
        self,
        attempt: _Attempt,
        handler: Callable[[], Awaitable[M]],
        recover: Recover[M],
        resource_id: str | None,
    ) -> M:
        # The first beat is due after a third of `stale_after`: a handler that finishes
        # before then (nearly all) costs a timer, and no task or statement.
        loop = asyncio.get_running_loop()
        beats: list[asyncio.Task[None]] = []
        timer = loop.call_later(
            self._heartbeat_seconds,
            lambda: beats.append(loop.create_task(self._heartbeat(attempt))),
        )
        try:
            if resource_id is not None:
                recovered = await recover(resource_id)
                if recovered is not None:
                    log.info(
                        "idempotency key recovered from its bound resource",
                        method=attempt.slot.method,
                        resource_id=resource_id,
                    )
                    return recovered
            return await handler()
        finally:
            timer.cancel()
            for beat in beats:
                beat.cancel()
                await asyncio.wait([beat])

    async def _heartbeat(self, attempt: _Attempt) -> None:
        """Beat now, then every `_heartbeat_seconds`, until the key is lost or cancelled."""
        slot = attempt.slot
        while True:
            try:
                status = await self._pool.execute(
                    _HEARTBEAT, slot.merchant_id, slot.key, attempt.attempt_id
                )
            except Exception as exc:
                # The next beat may get through; if none does, the row turns stale.
                log.warning("idempotency heartbeat failed", method=slot.method, error=str(exc))
            else:
                if status == "UPDATE 0":
                    log.warning(
                        "idempotency key taken over while its handler still runs",
                        merchant_id=slot.merchant_id,
                        method=slot.method,
                    )
                    return
            await asyncio.sleep(self._heartbeat_seconds)

    async def _give_up(self, attempt: _Attempt) -> None:
        """Free the key when nothing happened yet; otherwise leave it bound for recovery."""
        await self._write(_ABANDON if attempt.bound else _RELEASE, attempt)

    async def _write(self, sql: str, attempt: _Attempt, *values: object) -> None:
        """Record the attempt's outcome; shielded, so a cancelled attempt still records it.

        A failed write leaves the key in progress until it turns stale, then a retry takes it
        over; the caller still gets this attempt's answer, which beats a made-up failure.
        """
        slot = attempt.slot
        write = self._pool.execute(sql, slot.merchant_id, slot.key, attempt.attempt_id, *values)
        try:
            status = await asyncio.shield(write)
        except Exception as exc:
            log.error("idempotency outcome not recorded", method=slot.method, error=str(exc))
            return
        if status.endswith(" 0"):
            log.warning(
                "idempotency key was taken over before its handler finished",
                merchant_id=slot.merchant_id,
                method=slot.method,
            )


def _messages_in(value: Any) -> list[Message]:
    """The messages a message-typed field holds: itself, a repeated field's, a map's values."""
    if isinstance(value, Message):
        return [value]
    items = value.values() if hasattr(value, "values") else value
    return [item for item in items if isinstance(item, Message)]


async def _awaited(handler: Callable[[], Awaitable[M]]) -> M:
    return await handler()


def _same_request(row: asyncpg.Record, slot: _Slot) -> bool:
    if row["method"] != slot.method:
        return False
    # A key stored before fingerprints were keyed lost its unkeyed hash (migration 0007):
    # any retry of the same method gets its stored answer, never a second effect.
    return row["request_hash"] is None or bytes(row["request_hash"]) == slot.request_hash


def _check_key(key: str) -> None:
    if len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise invalid_field(
            HEADER,
            f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            reason=REASON_INVALID,
        )


def _replayable(err: GatewayError) -> bool:
    """Answers about the request itself (4xx) are replayed; "try again" answers are not."""
    return err.http_status < 500 and err.grpc_code not in _RETRYABLE_4XX


def _encode_error(err: GatewayError) -> bytes:
    """The serialized google.rpc.Status the error goes out as."""
    status = to_rpc_status(err)
    for key, value in status.trailing_metadata:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    raise AssertionError("to_rpc_status always attaches the rich status")


def _decode_error(blob: bytes) -> GatewayError:
    """The stored error as the same GatewayError subclass, message, reason and violations.

    Read back the way a client reads a failed call, so there is one decoder of our statuses.
    """
    status = status_pb2.Status.FromString(blob)
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    trailing = grpc.aio.Metadata((_STATUS_DETAILS_KEY, blob))
    return from_rpc_error(
        grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, status.message, None)
    )
