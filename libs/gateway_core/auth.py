"""Who is calling: the merchant and role Envoy took from the verified JWT.

Envoy strips client-sent copies of these headers before authenticating, so a service trusts the
metadata and never takes the acting merchant from a request body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from gateway_core.errors import PermissionDenied, Unauthenticated

# What servicer methods receive; a string so grpc.aio's runtime class need not be generic.
RpcContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

MERCHANT_ID_KEY = "x-merchant-id"
ROLE_KEY = "x-caller-role"
ROLES = frozenset({"merchant", "admin"})


@dataclass(frozen=True)
class Caller:
    merchant_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def caller_from_context(context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    metadata = _first_values(context)
    merchant_id = metadata.get(MERCHANT_ID_KEY, "").strip()
    role = metadata.get(ROLE_KEY, "").strip()
    if not merchant_id or not role:
        raise Unauthenticated("caller identity missing", reason="CALLER_IDENTITY_MISSING")
    if role not in ROLES:
        raise PermissionDenied(f"unknown caller role {role!r}", reason="UNKNOWN_ROLE")
    return Caller(merchant_id=merchant_id, role=role)


def require_admin(context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    caller = caller_from_context(context)
    if not caller.is_admin:
        raise PermissionDenied("this operation needs the admin role", reason="ADMIN_REQUIRED")
    return caller


def _first_values(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            values.setdefault(key.lower(), value)
    return values
