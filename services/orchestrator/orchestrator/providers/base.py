"""What every provider client returns, and how a provider's silence is reported."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import grpc

from gateway_core.errors import FailedPrecondition, GatewayError, InvalidArgument, Unavailable

T = TypeVar("T")


# The provider may have acted on the request: ask it later, never retry elsewhere. (Only
# UNAVAILABLE and the other refusals mean the request was not processed.)
_OUTCOME_UNKNOWN = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    PENDING = "PENDING"
    EXPIRED = "EXPIRED"
    # The provider has no such transaction: our request never reached it (or it forgot).
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True)
class ProviderResult:
    outcome: Outcome
    external_txn_id: str = ""
    gateway_response: dict[str, str] = field(default_factory=dict)
    failure_reason: str = ""


class ProviderTimeout(Exception):
    """The provider did not answer in time: the outcome is unknown, so ask again later."""


class ProviderNotFound(Exception):
    """The provider does not know the transaction the call named."""


async def call_provider(name: str, call: Awaitable[T]) -> T:
    """Await a provider RPC and say what its failure means for the payment.

    The channel's interceptor (gateway_core.grpc_client) has already turned a failed call into
    the typed error the provider sent. A deadline means "unknown", never "failed": the money
    may have moved. The provider's own refusals of our request (bad argument, wrong state) keep
    their meaning, and so does "no such transaction" (ProviderNotFound).
    """
    try:
        return await call
    except GatewayError as exc:
        code = exc.grpc_code
        if code in _OUTCOME_UNKNOWN:
            raise ProviderTimeout(f"{name} did not answer in time ({code.name})") from exc
        if code == grpc.StatusCode.NOT_FOUND:
            raise ProviderNotFound(f"{name} does not know this transaction") from exc
        if isinstance(exc, InvalidArgument | FailedPrecondition):
            raise
        raise Unavailable(
            f"{name} is unavailable; retry shortly", reason="PROVIDER_UNAVAILABLE"
        ) from exc
