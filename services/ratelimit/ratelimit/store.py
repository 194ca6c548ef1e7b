"""Fixed-window counters in Redis: one atomic script increments every window of a request."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from ratelimit.limits import Window

# INCRBY and the first EXPIRE happen in one atomic step, so a counter can never be left
# without a TTL (which would block its descriptor forever) by a crash between the two.
_INCREMENT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCRBY', key, ARGV[2 * i - 1])
  if redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, ARGV[2 * i])
  end
end
return counts
"""


class RedisCounterStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._increment = redis.register_script(_INCREMENT)

    async def increment(self, hits: Sequence[tuple[Window, int]]) -> list[int]:
        """Add each window's hits to its counter; the totals after adding, in the same order."""
        if not hits:
            return []
        args: list[int] = []
        for window, count in hits:
            args += [count, window.ttl_seconds]
        counts = await self._increment(keys=[w.key for w, _ in hits], args=args)
        return [int(c) for c in counts]

    async def ping(self) -> None:
        await self._redis.ping()
