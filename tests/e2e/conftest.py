"""One real stack per test session (ephemeral ports, throwaway state), and ways to call it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from devstack.stack import Stack, StackError
from devstack.token import mint_token as sign_token

TOKEN_TTL_SECONDS = 3600


class TokenMinter(Protocol):
    def __call__(self, merchant_id: str, role: str = "merchant", **overrides: Any) -> str: ...


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, Valkey, Tansu, every service and Envoy; logs under the session's tmp dir."""
    local = Stack(tmp_path_factory.mktemp("stack"), ports="ephemeral", seed=False, keep_data=False)
    try:
        local.start()
    except StackError as exc:
        # The message names the failing part and ends with the tail of its log.
        message = f"the local stack did not start: {exc}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="session")
def mint_token(stack: Stack) -> TokenMinter:
    """`mint_token(merchant_id, role="merchant", **overrides)`: a bearer token Envoy accepts.

    Overrides replace any argument of `devstack.token.mint_token` (secret, issuer, audience,
    ttl_seconds), to make the tokens Envoy must refuse.
    """

    def mint(merchant_id: str, role: str = "merchant", **overrides: Any) -> str:
        arguments: dict[str, Any] = {
            "secret": stack.env["JWT_SECRET"],
            "issuer": stack.env["JWT_ISSUER"],
            "audience": stack.env["JWT_AUDIENCE"],
            "ttl_seconds": TOKEN_TTL_SECONDS,
        }
        return sign_token(merchant_id=merchant_id, role=role, **(arguments | overrides))

    return mint
