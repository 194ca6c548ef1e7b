"""Provider faults that take time: answers that come late.

A provider that has done the work but answers late is the dangerous fault for a gateway: the
money moved, the caller does not know. The simulated providers do the work first and only then
wait here, so whatever ends the wait early (the caller's deadline cancels the RPC; the server's
shutdown cancels it after its grace period) never undoes what was done. The wait is an
asyncio sleep: it holds no lock and blocks no other request.
"""

from __future__ import annotations

import asyncio

from gateway_core.logging import get_logger

log = get_logger(__name__)


async def answer_late(seconds: float, operation: str, **context: str) -> None:
    """Hold the answer to `operation` back for `seconds` (a slow or hanging provider)."""
    log.info("sandbox provider answers late", operation=operation, seconds=seconds, **context)
    await asyncio.sleep(seconds)
