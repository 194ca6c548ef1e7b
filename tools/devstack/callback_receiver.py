"""A stand-in for the gateway's provider-callback endpoint, for tests of the providers.

It records every signed callback a provider sends, and can answer 500 to the first tries for
a transaction to exercise the provider's retries. `Received.verify` checks a callback's
signature the way the gateway does: with the key of the provider it came from, and no other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway_core.config import CALLBACK_PROVIDERS
from gateway_core.errors import Unauthenticated
from gateway_core.signing import SIGNATURE_HEADER, verify_callback

PATH = "/api/v1/provider-callbacks/{provider}"
# Callback keys for tests, one per provider (PROVIDER_CALLBACK_SECRET_<PROVIDER>).
TEST_SECRETS = {
    provider: f"test-callback-secret-{provider}-0123456789" for provider in CALLBACK_PROVIDERS
}


@dataclass
class Received:
    provider: str
    body: bytes
    signature: str
    content_type: str

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    def verify(self, secrets: Mapping[str, str] = TEST_SECRETS) -> None:
        """Raise unless it is signed with its own provider's key, and with no other's."""
        verify_callback(secrets[self.provider], self.body, self.signature)
        for provider, key in secrets.items():
            if provider == self.provider:
                continue
            try:
                verify_callback(key, self.body, self.signature)
            except Unauthenticated:
                continue
            raise AssertionError(f"a {self.provider} callback verifies with {provider}'s key")


@dataclass
class Receiver:
    url: str = ""  # base URL once started, e.g. http://127.0.0.1:41234
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)  # transaction_ref -> tries to refuse
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(PATH, self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        callback = Received(
            provider=request.match_info["provider"],
            body=await request.read(),
            signature=request.headers.get(SIGNATURE_HEADER, ""),
            content_type=request.headers.get("content-type", ""),
        )
        self.received.append(callback)
        ref = callback.document["transaction_ref"]
        if self.refuse.get(ref, 0) > 0:
            self.refuse[ref] -= 1
            return web.json_response({"error": "try later"}, status=500)
        return web.json_response({"applied": True})

    def for_ref(self, ref: str) -> list[Received]:
        return [r for r in self.received if r.document["transaction_ref"] == ref]

    async def wait_for(self, ref: str, count: int = 1, within: float = 3.0) -> list[Received]:
        deadline = time.monotonic() + within
        while len(self.for_ref(ref)) < count:
            assert time.monotonic() < deadline, f"no callback for {ref} within {within} s"
            await asyncio.sleep(0.01)
        return self.for_ref(ref)
