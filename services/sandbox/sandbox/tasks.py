"""Fire-and-forget work the sandbox still owns: timers and callback deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gateway_core.logging import get_logger

log = get_logger(__name__)


async def sleep_until(due: float, now: Callable[[], float]) -> None:
    """Sleep until the wall-clock moment `due` by the clock `now` (a provider's).

    The event loop sleeps by a monotonic clock, a provider decides by the wall clock: the caller
    then settles "as of" `due`, so a timer that woke a hair early does not miss it."""
    await asyncio.sleep(max(0.0, due - now()))


class BackgroundTasks:
    """Tasks kept referenced until they end (the event loop holds only weak references, so an
    unreferenced task can be garbage collected mid-flight), their crashes logged, and all of
    them cancelled together at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        if self._closed:
            work.close()
            log.warning("background work dropped: shutting down", task=name)
            return
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def aclose(self) -> None:
        """Cancel every task still running and wait until they have all ended."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background task failed", task=task.get_name(), exc_info=error)
