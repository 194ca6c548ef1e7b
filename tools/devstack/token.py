"""Mint the bearer tokens Envoy accepts (HS256, signed with JWT_SECRET).

    python -m devstack.token --merchant m_123            # a merchant's token
    python -m devstack.token --role admin                # an admin token (sub "admin")

JWT_SECRET, JWT_ISSUER and JWT_AUDIENCE come from the environment, then from `.env` in the
current directory, then the local stack's defaults (gateway_core.config). Only the token is
printed, so `TOKEN=$(python -m devstack.token --merchant m_1)` works.
"""

from __future__ import annotations

import argparse
import sys
import time

import jwt

from gateway_core.config import get_settings

ROLES = ("merchant", "admin")
DEFAULT_ISSUER = "payment-gateway"
DEFAULT_AUDIENCE = "payments-api"
ADMIN_SUBJECT = "admin"


def mint_token(
    secret: str,
    merchant_id: str,
    role: str = "merchant",
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    ttl_seconds: int = 3600,
) -> str:
    """An HS256 JWT whose `sub` is the merchant Envoy will forward as `x-merchant-id`."""
    if not secret:
        raise ValueError("a signing secret is required")
    if not merchant_id:
        raise ValueError("a merchant id is required")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    now = int(time.time())
    claims = {
        "sub": merchant_id,
        "role": role,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.token", description="Print a bearer token for the gateway."
    )
    parser.add_argument("--merchant", help="merchant id (the token's sub); required for merchants")
    parser.add_argument("--role", choices=ROLES, default="merchant")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    args = parser.parse_args(argv)

    merchant_id = args.merchant or (ADMIN_SUBJECT if args.role == "admin" else None)
    if not merchant_id:
        parser.error("--merchant is required for a merchant token")
    settings = get_settings()
    token = mint_token(
        settings.secret("jwt_secret"),
        merchant_id,
        role=args.role,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=args.ttl,
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
