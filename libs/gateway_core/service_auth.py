"""Which service is calling: short-lived HS256 tokens each service signs with its OWN key.

Merchant identity comes from Envoy (`gateway_core.auth`); calls inside the mesh carry no JWT
from Envoy, so a service that must know its caller (the vault: only the orchestrator may
detokenize) asks for `x-service-token` metadata: a JWT `{iss: caller, aud: callee, iat, exp}`
signed with the caller's key. The callee is configured with the keys of the callers it trusts
and nothing else, so no other service can mint a trusted identity (a network policy is the
second lock on the same door).

Caller side: a channel whose calls carry the token.

    identity = ServiceIdentity("orchestrator", settings.secret("orchestrator_service_key"),
                               audience="tokenization-vault")
    channel = service_channel(settings.vault_addr, identity)

Callee side, in a servicer method:

    caller = verify_service_token(context, "tokenization-vault", {"orchestrator": key})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import grpc
import jwt

from gateway_core.auth import RpcContext
from gateway_core.errors import PermissionDenied, Unauthenticated
from gateway_core.grpc_client import CHANNEL_OPTIONS, channel_interceptors
from gateway_core.services import grpc_target

# grpc-stubs makes interceptors generic; at runtime grpc's classes are not subscriptable.
if TYPE_CHECKING:
    _UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    _UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor

SERVICE_TOKEN_HEADER = "x-service-token"  # noqa: S105 - a metadata name, not a secret
ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 60
# A token living longer than this is refused even when correctly signed: a leaked one must not
# stay useful for long.
MAX_TTL_SECONDS = 300
# Clock skew tolerated between caller and callee.
LEEWAY_SECONDS = 5
# RFC 7518 §3.2: an HS256 key has at least as many bits as the hash.
MIN_KEY_BYTES = 32
_REQUIRED_CLAIMS = ["iss", "aud", "iat", "exp"]


def mint_service_token(
    service: str,
    audience: str,
    key: str,
    *,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """A token saying "I am `service`, calling `audience`", valid for `ttl_seconds`."""
    _check_key(service, key)
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be between 1 and {MAX_TTL_SECONDS}")
    issued = int(time.time() if now is None else now)
    claims = {"iss": service, "aud": audience, "iat": issued, "exp": issued + ttl_seconds}
    return jwt.encode(claims, key.encode(), algorithm=ALGORITHM)


def verify_token(
    token: str, audience: str, trusted: Mapping[str, str], *, now: float | None = None
) -> str:
    """The calling service's name, once `token` proves it; raises otherwise.

    Unauthenticated: no usable token (malformed, bad signature, expired, not for `audience`,
    living too long). PermissionDenied: a service this callee does not trust (its claim is not
    even checked: we hold no key to check it with).
    """
    if not token:
        raise Unauthenticated(
            f"service identity missing: send {SERVICE_TOKEN_HEADER} metadata",
            reason="SERVICE_TOKEN_MISSING",
        )
    claimed = _claimed_issuer(token)
    if claimed is None:
        raise Unauthenticated("service token is malformed", reason="SERVICE_TOKEN_INVALID")
    key = trusted.get(claimed)
    if key is None:
        raise PermissionDenied(
            f"service {claimed!r} may not call this method", reason="SERVICE_NOT_ALLOWED"
        )
    _check_key(claimed, key)
    current = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token,
            key.encode(),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=claimed,
            leeway=LEEWAY_SECONDS,
            options={"require": _REQUIRED_CLAIMS, "verify_iat": False, "verify_exp": False},
        )
    except jwt.InvalidAudienceError:
        raise Unauthenticated(
            "service token is for another service", reason="SERVICE_TOKEN_INVALID"
        ) from None
    except jwt.InvalidTokenError:
        raise Unauthenticated(
            "service token is invalid (signature or claims)", reason="SERVICE_TOKEN_INVALID"
        ) from None
    issued, expires = claims["iat"], claims["exp"]
    if not isinstance(issued, int) or not isinstance(expires, int):
        raise Unauthenticated(
            "service token times must be integers", reason="SERVICE_TOKEN_INVALID"
        )
    # Checked here rather than by PyJWT so `now` is injectable and the lifetime bounded.
    if expires <= current - LEEWAY_SECONDS:
        raise Unauthenticated("service token has expired", reason="SERVICE_TOKEN_EXPIRED")
    if issued > current + LEEWAY_SECONDS or expires - issued > MAX_TTL_SECONDS:
        raise Unauthenticated(
            f"service token must be issued now and live at most {MAX_TTL_SECONDS} s",
            reason="SERVICE_TOKEN_INVALID",
        )
    return claimed


def verify_service_token(
    context: RpcContext, audience: str, trusted: Mapping[str, str], *, now: float | None = None
) -> str:
    """The calling service's name from the call's `x-service-token`; raises as `verify_token`."""
    return verify_token(_metadata_token(context), audience, trusted, now=now)


def claimed_service(context: RpcContext) -> str:
    """The `iss` a call's token CLAIMS, unverified: for audit records of refused calls only."""
    return _claimed_issuer(_metadata_token(context)) or ""


class ServiceIdentity(_UnaryUnaryInterceptor):
    """Adds this service's `x-service-token` to every unary call of a channel.

    Tokens are reused until a third of their lifetime is left, so signing costs nothing
    per call. Unary-unary only: every internal API that needs an identity today is unary.
    """

    def __init__(
        self,
        service: str,
        key: str,
        audience: str,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_key(service, key)
        self._service = service
        self._key = key
        self._audience = audience
        self._ttl = ttl_seconds
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = self._clock()
        if now >= self._renew_at:
            self._token = mint_service_token(
                self._service, self._audience, self._key, ttl_seconds=self._ttl, now=now
            )
            self._renew_at = now + self._ttl * 2 / 3
        return self._token

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = grpc.aio.Metadata()
        for key, value in client_call_details.metadata or ():
            if key != SERVICE_TOKEN_HEADER:
                metadata.add(key, value)
        metadata.add(SERVICE_TOKEN_HEADER, self.token())
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=metadata,
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def service_channel(
    address: str, identity: ServiceIdentity, *, typed_errors: bool = True
) -> grpc.aio.Channel:
    """`gateway_core.grpc_client.insecure_channel`, with every call carrying `identity`."""
    return grpc.aio.insecure_channel(
        grpc_target(address),
        options=CHANNEL_OPTIONS,
        interceptors=channel_interceptors(
            cast(grpc.aio.ClientInterceptor, identity), typed_errors=typed_errors
        ),
    )


def _metadata_token(context: RpcContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == SERVICE_TOKEN_HEADER and isinstance(value, str):
            return value.strip()
    return ""


def _claimed_issuer(token: str) -> str | None:
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) and issuer else None


def _check_key(service: str, key: str) -> None:
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ValueError(f"the service key of {service!r} must be at least {MIN_KEY_BYTES} bytes")
