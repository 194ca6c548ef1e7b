"""`make token` (python -m gateway_core.tokens): tokens Envoy accepts, and none it would refuse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from gateway_core.config import Settings, get_settings
from gateway_core.tokens import main

LOCAL_SECRET = Settings.model_fields["jwt_secret"].default.get_secret_value()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No configuration from the outside and no .env: each test sets what it needs."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def minted(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    token = capsys.readouterr().out.strip()
    claims: dict[str, object] = jwt.decode(
        token, LOCAL_SECRET, algorithms=["HS256"], audience="payments-api"
    )
    return claims


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as raised:
        main(list(argv))
    assert raised.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no token on stdout
    return captured.err


def test_a_merchant_token_lives_an_hour_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    claims = minted(capsys, "--merchant", "MER_1")

    assert (claims["sub"], claims["role"], claims["iss"]) == (
        "MER_1",
        "merchant",
        "payment-gateway",
    )
    assert isinstance(claims["exp"], int)
    assert isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == 3600


def test_a_token_may_live_up_to_jwt_max_lifetime(capsys: pytest.CaptureFixture[str]) -> None:
    claims = minted(capsys, "--role", "admin", "--ttl", str(24 * 3600))

    assert isinstance(claims["exp"], int)
    assert isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == 24 * 3600


@pytest.mark.parametrize("ttl", [24 * 3600 + 1, 25 * 3600, 0, -60])
def test_a_longer_or_empty_lifetime_is_refused(
    capsys: pytest.CaptureFixture[str], ttl: int
) -> None:
    error = refused(capsys, "--merchant", "MER_1", "--ttl", str(ttl))

    assert "--ttl must be between 1 and 86400 seconds (JWT_MAX_LIFETIME)" in error


def test_the_limit_follows_jwt_max_lifetime(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_MAX_LIFETIME", "2h")

    assert minted(capsys, "--merchant", "MER_1", "--ttl", "7200")["sub"] == "MER_1"
    assert "between 1 and 7200 seconds" in refused(capsys, "--merchant", "MER_1", "--ttl", "7201")


def test_outside_local_mode_the_published_secret_mints_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_ENV", "production")

    assert "JWT_SECRET is not set" in refused(capsys, "--merchant", "MER_1")

    monkeypatch.setenv("JWT_SECRET", LOCAL_SECRET)
    assert "JWT_SECRET is a value published" in refused(capsys, "--merchant", "MER_1")


def test_a_short_jwt_secret_is_refused_even_locally(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "short-local-secret")

    assert "JWT_SECRET is 18 bytes, shorter than 32" in refused(capsys, "--merchant", "MER_1")
