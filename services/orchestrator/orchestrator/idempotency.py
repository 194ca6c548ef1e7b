"""Idempotency keys (DESIGN.md §3), with Stripe's semantics.

A mutating call may carry an `Idempotency-Key` header (gRPC metadata `idempotency-key`). Keys
are scoped per merchant and kept for `ttl` (24 h by default). For one merchant and key:

- the first call runs its handler; its answer (the response message, or a 4xx-class domain
  error) is stored, and later calls with the same method and request get it back unchanged;
- a call with a different method or request is refused: Aborted `IDEMPOTENCY_KEY_REUSED`;
- calls arriving while the first still runs wait for its answer, up to `wait_timeout`, then
  get Aborted `IDEMPOTENCY_KEY_IN_PROGRESS` (retry later);
- a failure worth retrying (5xx-class errors, ABORTED, RESOURCE_EXHAUSTED, CANCELLED, any other
  exception) is not stored: the key is released, so the client's retry runs the handler again.

Both refusals are Aborted (gRPC ABORTED, HTTP 409 through Envoy): the IETF idempotency-key
draft answers 422 for a reused key and 409 for one in use, and the gRPC-to-HTTP mapping has no
422, so both are the conflict family, told apart by `reason`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import asyncpg
import grpc
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
REASON_IN_PROGRESS = "IDEMPOTENCY_KEY_IN_PROGRESS"

# 4xx-class codes that still mean "try again": storing them would make the retry pointless.
_RETRYABLE_4XX = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# Waiters poll with a doubling interval between these bounds (seconds).
_POLL_FIRST = 0.02
_POLL_MAX = 0.25
PURGE_BATCH = 5000

log = get_logger(__name__)

# Takes the key when it is free, expired, or held by an attempt whose heartbeat stopped.
# A stale row is taken over only by the same request (a different one is still a reuse);
# an expired one by any request, as the key's retention is over. ON CONFLICT locks the row and
# re-checks the condition on its latest version, so of concurrent claimers exactly one wins.
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
    response = NULL,
    error_status = NULL,
    created_at = EXCLUDED.created_at,
    heartbeat_at = EXCLUDED.heartbeat_at,
    completed_at = NULL,
    expires_at = EXCLUDED.expires_at
WHERE (k.state = 'completed' AND k.expires_at <= now())
   OR (k.state = 'in_progress' AND k.heartbeat_at <= now() - $7::interval
       AND ((k.method = EXCLUDED.method AND k.request_hash = EXCLUDED.request_hash)
            OR k.expires_at <= now()))
RETURNING attempt_id
"""

_LOAD = """
SELECT state, method, request_hash, response, error_status,
       expires_at <= now() AS expired,
       heartbeat_at <= now() - $3::interval AS stale
FROM idempotency_keys
WHERE merchant_id = $1 AND idempotency_key = $2
"""

# Every write of the attempt is conditional on still holding the key.
_HEARTBEAT = """
UPDATE idempotency_keys SET heartbeat_at = now()
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


def idempotency_key(context: RpcContext) -> str | None:
    """The call's Idempotency-Key, or None when it has none (absent or empty)."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == METADATA_KEY and isinstance(value, str):
            return value or None
    return None


@dataclass(frozen=True)
class _Slot:
    merchant_id: str
    key: str
    method: str
    request_hash: bytes


@dataclass(frozen=True)
class _Stored:
    response: bytes | None
    error_status: bytes | None

    def replay(self, response_type: type[M]) -> M:
        if self.error_status is not None:
            raise _decode_error(self.error_status)
        assert self.response is not None  # the table's check: one of the two is set
        return response_type.FromString(self.response)


class IdempotencyStore:
    """Runs mutating handlers at most once per (merchant, Idempotency-Key).

    Stale takeover: an in-progress row whose heartbeat is older than `stale_after` belongs to a
    process that died mid-request, and the next call with the same request takes it over and
    runs the handler again. The dead attempt may already have had its effect (a payment
    written, a provider called) without recording the answer, so a takeover can duplicate it;
    the alternative, a key locked until it expires, would block the merchant's retries for a
    day. The heartbeat (every third of `stale_after`) keeps slow but live handlers from being
    taken over; a live process cut off from the database for `stale_after` can still be.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl: timedelta = timedelta(hours=24),
        wait_timeout: float = 15.0,
        stale_after: timedelta = timedelta(seconds=60),
    ) -> None:
        if stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        self._pool = pool
        self._ttl = ttl
        self._wait_timeout = wait_timeout
        self._stale_after = stale_after
        self._heartbeat_seconds = stale_after.total_seconds() / 3

    async def run(
        self,
        *,
        merchant_id: str,
        key: str | None,
        method: str,
        request: Message,
        response_type: type[M],
        handler: Callable[[], Awaitable[M]],
    ) -> M:
        """`handler()`'s answer, run at most once per merchant and key (see the module doc).

        `method` is the full gRPC method name; with the request's deterministic encoding it is
        the fingerprint a retry must match.
        """
        if not key:
            return await handler()
        _check_key(key)
        request_hash = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        slot = _Slot(merchant_id, key, method, request_hash)
        acquired = await self._acquire(slot)
        if isinstance(acquired, _Stored):
            return acquired.replay(response_type)
        return await self._run_attempt(slot, acquired, handler)

    async def purge_expired(self) -> int:
        """Delete expired keys; returns how many. Meant for a periodic background task."""
        total = 0
        while True:
            status: str = await self._pool.execute(_PURGE, self._stale_after, PURGE_BATCH)
            deleted = int(status.rsplit(" ", 1)[1])
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    async def _acquire(self, slot: _Slot) -> uuid.UUID | _Stored:
        """This call's attempt id when it holds the key, or the stored answer to replay."""
        deadline = time.monotonic() + self._wait_timeout
        delay = _POLL_FIRST
        claim = True
        while True:
            if claim:
                attempt = await self._claim(slot)
                if attempt is not None:
                    return attempt
            row = await self._pool.fetchrow(_LOAD, slot.merchant_id, slot.key, self._stale_after)
            if row is None:  # released or purged since the claim
                claim = True
                continue
            finished = row["state"] == "completed"
            if row["expired"] and (finished or row["stale"]):
                claim = True
                continue
            if row["method"] != slot.method or bytes(row["request_hash"]) != slot.request_hash:
                raise Aborted(
                    "this Idempotency-Key was already used with a different request; "
                    "send a new key for a new request",
                    reason=REASON_REUSED,
                )
            if finished:
                return _Stored(response=row["response"], error_status=row["error_status"])
            if row["stale"]:
                claim = True
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Aborted(
                    "a request with this Idempotency-Key is still being processed; retry later",
                    reason=REASON_IN_PROGRESS,
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)
            claim = False

    async def _claim(self, slot: _Slot) -> uuid.UUID | None:
        attempt: uuid.UUID | None = await self._pool.fetchval(
            _CLAIM,
            slot.merchant_id,
            slot.key,
            slot.method,
            slot.request_hash,
            uuid.uuid4(),
            self._ttl,
            self._stale_after,
        )
        return attempt

    async def _run_attempt(
        self, slot: _Slot, attempt: uuid.UUID, handler: Callable[[], Awaitable[M]]
    ) -> M:
        try:
            response = await self._with_heartbeat(slot, attempt, handler)
        except GatewayError as err:
            if _replayable(err):
                await self._write(_COMPLETE, slot, attempt, None, _encode_error(err))
            else:
                await self._write(_RELEASE, slot, attempt)
            raise
        except BaseException:
            await self._write(_RELEASE, slot, attempt)
            raise
        # Deterministic bytes, and the first caller gets the message rebuilt from them too:
        # every answer for this key is then the same, down to the order of map entries.
        stored = response.SerializeToString(deterministic=True)
        await self._write(_COMPLETE, slot, attempt, stored, None)
        return type(response).FromString(stored)

    async def _with_heartbeat(
        self, slot: _Slot, attempt: uuid.UUID, handler: Callable[[], Awaitable[M]]
    ) -> M:
        beat = asyncio.create_task(self._heartbeat(slot, attempt))
        try:
            return await handler()
        finally:
            beat.cancel()
            await asyncio.wait([beat])

    async def _heartbeat(self, slot: _Slot, attempt: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                status = await self._pool.execute(_HEARTBEAT, slot.merchant_id, slot.key, attempt)
            except Exception as exc:
                # The next beat may get through; if none does, the row turns stale.
                log.warning("idempotency heartbeat failed", method=slot.method, error=str(exc))
                continue
            if status == "UPDATE 0":
                log.warning(
                    "idempotency key taken over while its handler still runs",
                    merchant_id=slot.merchant_id,
                    method=slot.method,
                )
                return

    async def _write(self, sql: str, slot: _Slot, attempt: uuid.UUID, *values: object) -> None:
        """Record the attempt's outcome; shielded, so a cancelled call still frees its key.

        A failed write leaves the key in progress until it turns stale, then a retry takes it
        over; the caller still gets this attempt's answer, which beats a made-up failure.
        """
        write = self._pool.execute(sql, slot.merchant_id, slot.key, attempt, *values)
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
