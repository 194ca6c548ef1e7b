"""Signed server-to-server callbacks, as real providers send them to the gateway.

Each outcome becomes one JSON document POSTed to the callback URL with an
`x-provider-signature` header (gateway_core.signing), keyed by the secret of the provider that
reports it: the UPI switch, the bank and the ACS each hold their own. Deliveries run in the
background, so an RPC or a bank page never waits on the gateway, and are retried with
exponential backoff on network errors and non-2xx answers; the same `event_id` on every attempt
lets the receiver drop duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from gateway_core.signing import SIGNATURE_HEADER, sign_callback
from sandbox.tasks import BackgroundTasks

log = get_logger(__name__)

CALLBACK_PATH = "/api/v1/provider-callbacks/{provider}"
# 6 attempts, 1+2+4+8+16 s apart: about 30 s before the sandbox gives up.
DEFAULT_ATTEMPTS = 6
DEFAULT_FIRST_BACKOFF_SECONDS = 1.0
ATTEMPT_TIMEOUT_SECONDS = 5.0


def return_url(url: str, outcome: Sequence[tuple[str, str]]) -> str:
    """`url` with the outcome added to its query, keeping what it had: the browser's way back to
    the merchant, the front-channel twin of a callback."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *outcome]
    return urlunsplit(parts._replace(query=urlencode(query)))


def rfc3339(moment: datetime | float) -> str:
    """A moment (or epoch seconds) as RFC 3339 in UTC, to the millisecond: `...T03:06:00.000Z`."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ProviderCallback:
    """One outcome reported to the gateway; empty strings for what does not apply."""

    provider: str  # "upi_core", "netbanking", "acs"
    transaction_ref: str  # the gateway's payment id
    provider_txn_id: str
    status: str  # "SUCCESS", "FAILED" or "EXPIRED"
    amount_paisa: int
    occurred_at: datetime
    rrn: str = ""
    approval_code: str = ""
    response_code: str = ""
    # Provider-specific fields added to the document, e.g. the ACS's eci and
    # authentication_value; they never replace the common ones above.
    extra: Mapping[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: new_id("EVT"))

    def body(self) -> bytes:
        document: dict[str, object] = {
            "event_id": self.event_id,
            "provider": self.provider,
            "transaction_ref": self.transaction_ref,
            "provider_txn_id": self.provider_txn_id,
            "status": self.status,
            "amount_paisa": self.amount_paisa,
            "rrn": self.rrn,
            "approval_code": self.approval_code,
            "response_code": self.response_code,
            "occurred_at": rfc3339(self.occurred_at),
        }
        for key, value in self.extra.items():
            document.setdefault(key, value)
        return json.dumps(document, separators=(",", ":")).encode()


class CallbackRejected(Exception):
    """The receiver answered, but not with 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"callback answered HTTP {status}")
        self.status = status


class CallbackSender:
    """Delivers ProviderCallbacks in the background; `aclose()` cancels what is still pending."""

    def __init__(
        self,
        secrets: Mapping[str, str],
        gateway_public_url: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        first_backoff_seconds: float = DEFAULT_FIRST_BACKOFF_SECONDS,
    ) -> None:
        self._secrets = dict(secrets)  # provider name -> its HMAC key
        self._gateway_public_url = gateway_public_url.rstrip("/")
        self._attempts = attempts
        self._first_backoff = first_backoff_seconds
        self._tasks = BackgroundTasks()
        self._session: aiohttp.ClientSession | None = None

    @property
    def pending(self) -> int:
        """Deliveries not finished yet (still trying or waiting to retry)."""
        return len(self._tasks)

    def default_url(self, provider: str) -> str:
        """Where a provider calls back when the request named no callback URL: the gateway's."""
        return self._gateway_public_url + CALLBACK_PATH.format(provider=provider)

    def send(self, callback: ProviderCallback, url: str = "") -> None:
        """Schedule the delivery of `callback` to `url` (the gateway's default when empty)."""
        target = url or self.default_url(callback.provider)
        self._tasks.spawn(self.deliver(callback, target), name=f"callback {callback.event_id}")

    async def deliver(self, callback: ProviderCallback, url: str) -> bool:
        """POST until the receiver answers 2xx or the attempts are spent; True if delivered."""
        secret = self._secrets[callback.provider]
        body = callback.body()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._first_backoff),
            retry=retry_if_exception_type((aiohttp.ClientError, TimeoutError, CallbackRejected)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(url, body, secret)
        except (aiohttp.ClientError, TimeoutError, CallbackRejected) as exc:
            log.warning(
                "provider callback abandoned",
                event_id=callback.event_id,
                url=url,
                attempts=self._attempts,
                error=str(exc) or type(exc).__name__,
            )
            return False
        log.info("provider callback delivered", event_id=callback.event_id, url=url)
        return True

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self._session is not None:
            await self._session.close()

    async def _post(self, url: str, body: bytes, secret: str) -> None:
        # Signed per attempt: a retry half a minute later still carries a fresh timestamp.
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign_callback(secret, body),
        }
        async with self._client().post(url, data=body, headers=headers) as response:
            if not 200 <= response.status < 300:
                raise CallbackRejected(response.status)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_SECONDS)
            )
        return self._session

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.info(
            "provider callback failed; retrying",
            attempt=state.attempt_number,
            retry_in_seconds=state.upcoming_sleep,
            error=(str(error) or type(error).__name__) if error else "",
        )
