"""Mint the bearer tokens Envoy accepts (HS256, signed with JWT_SECRET).

    python -m gateway_core.tokens --merchant m_123            # a merchant's token
    python -m gateway_core.tokens --role admin                # an admin token (sub "admin")

JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE and JWT_MAX_LIFETIME come from the environment, then from
`.env` in the current directory, then the local stack's defaults (gateway_core.config; APP_ENV
is local unless set). Only the token is printed, so
`TOKEN=$(python -m gateway_core.tokens --merchant m_1)` works. `--ttl` longer than
JWT_MAX_LIFETIME is refused: Envoy would refuse the token. The tool ships in the application
image, so a cluster's first admin token can be minted from it (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import sys
import time

import jwt

from gateway_core.config import ConfigError, load_settings

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
        prog="python -m gateway_core.tokens", description="Print a bearer token for the gateway."
    )
    parser.add_argument("--merchant", help="merchant id (the token's sub); required for merchants")
    parser.add_argument("--role", choices=ROLES, default="merchant")
    parser.add_argument(
        "--ttl", type=int, default=3600, help="lifetime in seconds (at most JWT_MAX_LIFETIME)"
    )
    args = parser.parse_args(argv)

    merchant_id = args.merchant or (ADMIN_SUBJECT if args.role == "admin" else None)
    if not merchant_id:
        parser.error("--merchant is required for a merchant token")
    try:
        settings = load_settings(local_unless_set=True)
        secret = settings.secret("jwt_secret")
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    longest = int(settings.jwt_max_lifetime.total_seconds())
    if not 0 < args.ttl <= longest:
        parser.error(
            f"--ttl must be between 1 and {longest} seconds (JWT_MAX_LIFETIME): "
            f"Envoy refuses a token that lives longer, got {args.ttl}"
        )
    token = mint_token(
        secret,
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
