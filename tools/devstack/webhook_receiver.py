"""A merchant's webhook endpoint for tests and the benchmark: records every delivery and
answers as told (a status, a Retry-After, or no answer at all), per endpoint path.

`Delivery.verify(secret)` checks a delivery the way a merchant would: with the Standard
Webhooks reference library, and the seed's hex `X-Webhook-Signature`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

# Every loopback address is the machine itself; the test stack allows only this one to
# webhooks, so 127.0.0.1 stays a refused address for the SSRF tests.
HOST = "127.0.0.2"
HANG = -1  # a planned "answer": none (the request hangs until the client gives up)
HANG_SECONDS = 30.0
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()
    answered: int  # the status the receiver answered (HANG: none)

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str:
        return str(self.document["type"])

    def verify(self, secret: str | bytes) -> dict[str, Any]:
        """The body, once both signatures check out with `secret` (a `whsec_` secret, or the
        raw bytes of any other); raises otherwise."""
        if isinstance(secret, str) and secret.startswith(SECRET_PREFIX):
            raw = base64.b64decode(secret[len(SECRET_PREFIX) :])
        else:
            raw = secret if isinstance(secret, bytes) else secret.encode()
        document: dict[str, Any] = Webhook(raw).verify(self.body, self.headers)
        expected = hmac.new(raw, self.body, hashlib.sha256).hexdigest()
        seed = self.headers.get("x-webhook-signature", "").split(" ")
        if not any(hmac.compare_digest(expected, s) for s in seed):
            raise AssertionError("X-Webhook-Signature does not match the body")
        assert self.headers.get("x-webhook-event") == document["type"]
        return document


@dataclass
class WebhookReceiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    _plans: dict[str, deque[tuple[int, dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    _then: dict[str, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    async def start(self, host: str = HOST) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, 0, backlog=1024).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def endpoint(self, name: str) -> str:
        return f"{self.url}/hooks/{name}"

    def plan(
        self, name: str, *answers: int, then: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """Answer `name`'s next requests with `answers` (HANG: none), then always `then`."""
        self._plans[name].extend((status, headers or {}) for status in answers)
        self._then[name] = then

    def to(self, name: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == name]

    async def wait_for(
        self, name: str, count: int = 1, within: float = 30.0, *, answered: int | None = None
    ) -> list[Delivery]:
        """`name`'s deliveries once there are `count` (with that answer, if given)."""
        deadline = time.monotonic() + within
        while True:
            found = [d for d in self.to(name) if answered is None or d.answered == answered]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, (
                f"{len(found)} of {count} deliveries to {name} within {within} s"
            )
            await asyncio.sleep(0.05)

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        plan = self._plans[name]
        status, headers = plan.popleft() if plan else (self._then.get(name, 200), {})
        self.deliveries.append(
            Delivery(
                path=name,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.read(),
                received_at=time.time(),
                answered=status,
            )
        )
        if status == HANG:
            await asyncio.sleep(HANG_SECONDS)
            status = 200
        return web.Response(status=status, headers=headers, text="ok")
