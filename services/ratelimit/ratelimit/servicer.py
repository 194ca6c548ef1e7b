"""envoy.service.ratelimit.v3.RateLimitService: Envoy asks, per request, whether to let it pass."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from prometheus_client import Counter
from redis.exceptions import RedisError

from gateway_core.logging import get_logger
from ratelimit.limits import (
    Decision,
    Descriptor,
    LimitConfig,
    RateLimit,
    Unit,
    Window,
    decide,
    window_for,
)

log = get_logger(__name__)

Code = rls_pb2.RateLimitResponse.Code
ProtoLimit = rls_pb2.RateLimitResponse.RateLimit
_PROTO_UNITS = {
    Unit.SECOND: ProtoLimit.SECOND,
    Unit.MINUTE: ProtoLimit.MINUTE,
    Unit.HOUR: ProtoLimit.HOUR,
    Unit.DAY: ProtoLimit.DAY,
}

DESCRIPTORS_CHECKED = Counter(
    "ratelimit_descriptors_total",
    "Descriptors checked, by their first key (never its value) and the answer.",
    ["domain", "key", "code"],
)
FAILED_OPEN = Counter(
    "ratelimit_store_errors_total",
    "Requests let through uncounted because the counter store failed (the limiter fails open).",
)


class CounterStore(Protocol):
    async def increment(self, hits: Sequence[tuple[Window, int]]) -> list[int]: ...


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        config: LimitConfig,
        store: CounterStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._store_failing = False

    async def ShouldRateLimit(
        self,
        request: rls_pb2.RateLimitRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> rls_pb2.RateLimitResponse:
        descriptors: list[Descriptor] = [
            [(e.key, e.value) for e in d.entries] for d in request.descriptors
        ]
        request_hits = request.hits_addend or 1
        now = self._clock()
        # (descriptor index, its limit, its window, its hits) for every limited descriptor
        limited: list[tuple[int, RateLimit, Window, int]] = []
        decisions: list[Decision | None] = [None] * len(descriptors)
        if request.domain == self._config.domain:
            pairs = zip(request.descriptors, descriptors, strict=True)
            for i, (proto, descriptor) in enumerate(pairs):
                limit = self._config.limit_for(descriptor)
                if limit is None:
                    continue
                hits = proto.hits_addend.value if proto.HasField("hits_addend") else request_hits
                window = window_for(self._config.domain, descriptor, limit, now)
                limited.append((i, limit, window, hits))

        try:
            counts = await self._store.increment([(w, hits) for _, _, w, hits in limited])
        except (TimeoutError, RedisError, OSError) as exc:
            # A limiter outage must never stop payments: answer OK, count it, log the transition.
            FAILED_OPEN.inc()
            if not self._store_failing:
                log.warning("counter store failing, letting requests through", error=repr(exc))
            self._store_failing = True
            counts = None
        else:
            if self._store_failing:
                log.info("counter store recovered")
            self._store_failing = False

        if counts is not None:
            for (i, limit, window, _), count in zip(limited, counts, strict=True):
                decisions[i] = decide(limit, count, window)

        statuses = [_status(d) for d in decisions]
        over = any(d is not None and d.over_limit for d in decisions)
        for descriptor, status in zip(descriptors, statuses, strict=True):
            key = descriptor[0][0] if descriptor else ""
            DESCRIPTORS_CHECKED.labels(request.domain, key, Code.Name(status.code)).inc()
        # A refused client learns when to come back (RFC 9110 Retry-After, whole seconds): when
        # the last window it exceeded starts over.
        headers: list[HeaderValue] = []
        if over:
            wait = max(d.seconds_until_reset for d in decisions if d is not None and d.over_limit)
            headers.append(HeaderValue(key="retry-after", value=str(max(1, wait))))
        return rls_pb2.RateLimitResponse(
            overall_code=Code.OVER_LIMIT if over else Code.OK,
            statuses=statuses,
            response_headers_to_add=headers,
        )


def _status(decision: Decision | None) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    if decision is None:
        return rls_pb2.RateLimitResponse.DescriptorStatus(code=Code.OK)
    return rls_pb2.RateLimitResponse.DescriptorStatus(
        code=Code.OVER_LIMIT if decision.over_limit else Code.OK,
        current_limit=ProtoLimit(
            name=decision.limit.name,
            requests_per_unit=decision.limit.requests_per_unit,
            unit=_PROTO_UNITS[decision.limit.unit],
        ),
        limit_remaining=decision.remaining,
        duration_until_reset=Duration(seconds=decision.seconds_until_reset),
    )
