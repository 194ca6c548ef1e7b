"""Where settlement files come from: each provider's report API, as a bank serves reports.

`GET {SETTLEMENT_REPORTS_URL}/settlements/providers` lists the providers and their methods;
`GET {SETTLEMENT_REPORTS_URL}/settlements/{provider}/{YYYY-MM-DD}.csv` with
`Authorization: Bearer <the provider's key>` (PROVIDER_REPORT_KEYS) serves a day's file. The
file is streamed into a spooled temporary file (memory up to a few MB, disk beyond), so a large
file never sits in memory whole.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import IO

import httpx

from gateway_core.errors import FailedPrecondition, InvalidArgument, Unavailable, invalid_field
from reconciliation.settlement_file import METHODS

SPOOL_IN_MEMORY_BYTES = 8 << 20
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class Provider:
    name: str
    method: str


class ReportSource:
    """A client of the providers' settlement report API."""

    def __init__(self, base_url: str, keys: Mapping[str, str]) -> None:
        self._base_url = base_url.rstrip("/")
        self._keys = dict(keys)

    async def providers(self) -> list[Provider]:
        try:
            async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
                reply = await client.get(f"{self._base_url}/settlements/providers")
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the settlement report API is unreachable: {type(exc).__name__}",
                reason="SETTLEMENT_SOURCE_UNAVAILABLE",
            ) from None
        if reply.status_code != 200:
            raise Unavailable(
                f"the settlement report API answered {reply.status_code} listing providers",
                reason="SETTLEMENT_SOURCE_UNAVAILABLE",
            )
        return sorted(
            (Provider(str(entry["provider"]), str(entry["method"])) for entry in reply.json()),
            key=lambda p: p.name,
        )

    async def resolve(self, name: str) -> list[Provider]:
        """The providers `name` means: itself, or every provider of a method name."""
        known = await self.providers()
        if name in METHODS:
            return [p for p in known if p.method == name]
        found = [p for p in known if p.name == name]
        if not found:
            names = ", ".join(p.name for p in known)
            raise invalid_field(
                "provider",
                f"unknown provider {name!r}: use one of {names}, or a method "
                f"({', '.join(sorted(METHODS))})",
                reason="UNKNOWN_PROVIDER",
            )
        return found

    async def fetch(self, provider: str, day: date) -> IO[bytes]:
        """The provider's file for `day`, spooled; the caller closes it."""
        key = self._keys.get(provider)
        if not key:
            raise FailedPrecondition(
                f"no settlement report key for {provider} in PROVIDER_REPORT_KEYS",
                reason="REPORT_KEY_MISSING",
            )
        url = f"{self._base_url}/settlements/{provider}/{day.isoformat()}.csv"
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
        try:
            async with (
                httpx.AsyncClient(timeout=_TIMEOUT) as client,
                client.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as reply,
            ):
                if reply.status_code == 404:
                    raise invalid_field(
                        "provider",
                        f"the report API has no provider {provider!r}",
                        "UNKNOWN_PROVIDER",
                    )
                if reply.status_code in (401, 403):
                    raise FailedPrecondition(
                        f"the report API refused {provider}'s key ({reply.status_code})",
                        reason="REPORT_KEY_REFUSED",
                    )
                if reply.status_code != 200:
                    raise Unavailable(
                        f"the report API answered {reply.status_code} for {provider}'s file",
                        reason="SETTLEMENT_SOURCE_UNAVAILABLE",
                    )
                async for block in reply.aiter_bytes():
                    spool.write(block)
        except httpx.HTTPError as exc:
            spool.close()
            raise Unavailable(
                f"could not fetch {provider}'s settlement file: {type(exc).__name__}",
                reason="SETTLEMENT_SOURCE_UNAVAILABLE",
            ) from None
        except (InvalidArgument, FailedPrecondition, Unavailable):
            spool.close()
            raise
        spool.seek(0)
        return spool
