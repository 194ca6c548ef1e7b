"""Service identity inside the mesh: a caller proves who it is with a token only its key signs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio

from gateway_core.auth import RpcContext
from gateway_core.config import Settings
from gateway_core.errors import (
    GatewayError,
    PermissionDenied,
    Unauthenticated,
    from_rpc_error,
)
from gateway_core.server import ServiceApp
from gateway_core.service_auth import (
    MAX_TTL_SECONDS,
    SERVICE_TOKEN_HEADER,
    ServiceIdentity,
    claimed_service,
    mint_service_token,
    service_channel,
    verify_service_token,
    verify_token,
)

ORCHESTRATOR_KEY = "orchestrator-test-service-key-0123456789abcdef"
WEBHOOK_KEY = "webhook-test-service-key-0123456789abcdefghij"
TRUSTED = {"orchestrator": ORCHESTRATOR_KEY}
AUDIENCE = "tokenization-vault"
NOW = 1_800_000_000.0


def refusal(token: str, *, now: float = NOW) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        verify_token(token, AUDIENCE, TRUSTED, now=now)
    return raised.value


def test_a_token_signed_with_the_callers_key_names_the_caller() -> None:
    token = mint_service_token("orchestrator", AUDIENCE, ORCHESTRATOR_KEY, now=NOW)

    assert verify_token(token, AUDIENCE, TRUSTED, now=NOW + 30) == "orchestrator"


def test_no_token_is_unauthenticated() -> None:
    error = refusal("")

    assert isinstance(error, Unauthenticated)
    assert error.reason == "SERVICE_TOKEN_MISSING"


def test_a_service_the_callee_does_not_trust_is_denied() -> None:
    token = mint_service_token("webhook", AUDIENCE, WEBHOOK_KEY, now=NOW)

    error = refusal(token)

    assert isinstance(error, PermissionDenied)
    assert error.reason == "SERVICE_NOT_ALLOWED"


def test_a_token_claiming_a_trusted_service_but_signed_with_another_key_is_refused() -> None:
    forged = mint_service_token("orchestrator", AUDIENCE, WEBHOOK_KEY, now=NOW)

    error = refusal(forged)

    assert isinstance(error, Unauthenticated)
    assert error.reason == "SERVICE_TOKEN_INVALID"


def test_an_expired_token_is_refused_after_the_leeway() -> None:
    token = mint_service_token("orchestrator", AUDIENCE, ORCHESTRATOR_KEY, ttl_seconds=60, now=NOW)

    assert verify_token(token, AUDIENCE, TRUSTED, now=NOW + 63) == "orchestrator"
    error = refusal(token, now=NOW + 66)
    assert isinstance(error, Unauthenticated)
    assert error.reason == "SERVICE_TOKEN_EXPIRED"


def test_a_token_for_another_service_is_refused() -> None:
    token = mint_service_token("orchestrator", "fraud", ORCHESTRATOR_KEY, now=NOW)

    error = refusal(token)

    assert isinstance(error, Unauthenticated)
    assert "another service" in error.message


@pytest.mark.parametrize(
    "claims",
    [
        # Correctly signed, but living an hour: a leaked token must not stay useful that long.
        {"iss": "orchestrator", "aud": AUDIENCE, "iat": int(NOW), "exp": int(NOW) + 3600},
        # Issued in the future.
        {"iss": "orchestrator", "aud": AUDIENCE, "iat": int(NOW) + 600, "exp": int(NOW) + 660},
        # No expiry at all.
        {"iss": "orchestrator", "aud": AUDIENCE, "iat": int(NOW)},
        # No issue time.
        {"iss": "orchestrator", "aud": AUDIENCE, "exp": int(NOW) + 60},
    ],
)
def test_tokens_that_are_not_short_lived_are_refused(claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, ORCHESTRATOR_KEY.encode(), algorithm="HS256")

    error = refusal(token)

    assert isinstance(error, Unauthenticated)
    assert error.reason == "SERVICE_TOKEN_INVALID"


def test_unsigned_and_other_algorithm_tokens_are_refused() -> None:
    claims = {"iss": "orchestrator", "aud": AUDIENCE, "iat": int(NOW), "exp": int(NOW) + 60}
    unsigned = jwt.encode(claims, "", algorithm="none")  # PyJWT reads "" as no key
    hs512 = jwt.encode(claims, (ORCHESTRATOR_KEY * 2).encode(), algorithm="HS512")

    for token in (unsigned, hs512, "not-a-jwt", "a.b.c"):
        assert isinstance(refusal(token), Unauthenticated), token


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_service_token("orchestrator", AUDIENCE, "short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ServiceIdentity("orchestrator", "short", AUDIENCE)


def test_lifetimes_beyond_the_maximum_cannot_be_minted() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        mint_service_token("orchestrator", AUDIENCE, ORCHESTRATOR_KEY, ttl_seconds=3600)
    assert MAX_TTL_SECONDS == 300


def test_the_interceptor_reuses_a_token_until_a_third_of_its_life_is_left() -> None:
    clock = [NOW]
    identity = ServiceIdentity(
        "orchestrator", ORCHESTRATOR_KEY, AUDIENCE, ttl_seconds=60, clock=lambda: clock[0]
    )

    first = identity.token()
    clock[0] = NOW + 39
    assert identity.token() == first
    clock[0] = NOW + 41
    renewed = identity.token()
    assert renewed != first
    assert verify_token(renewed, AUDIENCE, TRUSTED, now=clock[0]) == "orchestrator"


# --- over a real channel -----------------------------------------------------------------

WHO = "/test.Identity/Who"


class _Who:
    """A method that answers with the verified caller (or the claimed one, when refused)."""

    async def who(self, request: bytes, context: RpcContext) -> bytes:
        assert ("idempotency-key", "kept") in list(context.invocation_metadata() or ())
        tokens = [k for k, _ in context.invocation_metadata() or () if k == SERVICE_TOKEN_HEADER]
        assert len(tokens) <= 1
        return verify_service_token(context, AUDIENCE, TRUSTED).encode()

    def add_to(self, _: object, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            "test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(self.who)}
        )
        server.add_generic_rpc_handlers((handler,))


@pytest_asyncio.fixture(scope="module")
async def address() -> AsyncIterator[str]:
    settings = Settings.model_validate(
        {"server_port": 0, "enable_metrics": False, "shutdown_grace_seconds": 0}
    )
    app = ServiceApp("identity-test", settings)
    who = _Who()
    app.add_service("test.Identity", who.add_to, who)
    run = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    yield f"127.0.0.1:{port}"
    app.stop()
    await asyncio.wait_for(run, 10)


async def call_who(channel: grpc.aio.Channel, token: str | None = None) -> str:
    metadata = [("idempotency-key", "kept")]
    if token is not None:
        metadata.append((SERVICE_TOKEN_HEADER, token))
    method = channel.unary_unary(WHO, request_serializer=None, response_deserializer=None)
    answer: bytes = await method(b"", metadata=metadata, timeout=5)
    return answer.decode()


async def test_a_channel_with_the_identity_interceptor_is_recognised(address: str) -> None:
    channel = service_channel(address, ServiceIdentity("orchestrator", ORCHESTRATOR_KEY, AUDIENCE))
    try:
        assert await call_who(channel) == "orchestrator"
        # A token the application set by hand is replaced, not sent twice.
        assert await call_who(channel, token="forged") == "orchestrator"
    finally:
        await channel.close(None)


@pytest.mark.parametrize(
    ("identity", "code", "reason"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED, "SERVICE_TOKEN_MISSING"),
        (
            ServiceIdentity("webhook", WEBHOOK_KEY, AUDIENCE),
            grpc.StatusCode.PERMISSION_DENIED,
            "SERVICE_NOT_ALLOWED",
        ),
        (
            ServiceIdentity("orchestrator", WEBHOOK_KEY, AUDIENCE),
            grpc.StatusCode.UNAUTHENTICATED,
            "SERVICE_TOKEN_INVALID",
        ),
    ],
)
async def test_other_callers_are_refused_over_the_wire(
    address: str, identity: ServiceIdentity | None, code: grpc.StatusCode, reason: str
) -> None:
    channel = (
        service_channel(address, identity, typed_errors=False)
        if identity is not None
        else grpc.aio.insecure_channel(address)
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_who(channel)
    finally:
        await channel.close(None)

    assert raised.value.code() == code
    assert from_rpc_error(raised.value).reason == reason


def test_the_claimed_service_is_readable_for_audits_without_trusting_it() -> None:
    class Context:
        def __init__(self, token: str) -> None:
            self._token = token

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return ((SERVICE_TOKEN_HEADER, self._token),)

    forged = mint_service_token("orchestrator", AUDIENCE, WEBHOOK_KEY, now=time.time())

    assert claimed_service(Context(forged)) == "orchestrator"  # type: ignore[arg-type]
    assert claimed_service(Context("garbage")) == ""  # type: ignore[arg-type]
