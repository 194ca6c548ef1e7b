"""`make run-prod`: the local stack under production settings refuses development secrets
before it starts anything, and brings no local conveniences."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from dotenv import dotenv_values

from devstack.config import production_secret_problems
from devstack.stack import Stack, StackError
from gateway_core.config import CALLBACK_PROVIDERS, SECRET_RULES
from gateway_core.services import REPO_ROOT

PUBLISHED = {k: v for k, v in dotenv_values(REPO_ROOT / ".env.example").items() if v is not None}


def strong_secrets() -> dict[str, str]:
    given = {name.upper(): secrets.token_urlsafe(48) for name in SECRET_RULES}
    given["PROVIDER_REPORT_KEYS"] = json.dumps({"upi_core": secrets.token_urlsafe(48)})
    return given


def test_published_development_secrets_are_refused_naming_each(tmp_path: Path) -> None:
    with pytest.raises(StackError) as refused:
        Stack(tmp_path / "state", production=True, environ=PUBLISHED)
    message = str(refused.value)
    assert "APP_ENV=production" in message
    for name in ("JWT_SECRET", "ENCRYPTION_KEY", "ORCHESTRATOR_SERVICE_KEY", "DB_PASSWORD"):
        assert name in message
    assert not (tmp_path / "state" / "logs").exists(), "something started"


def test_no_development_secret_is_filled_in_when_none_is_given(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="JWT_SECRET"):
        Stack(tmp_path / "state", production=True, environ={})


def test_strong_secrets_of_ones_own_make_a_production_stack(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path / "state", production=True, environ=PUBLISHED | strong_secrets(), seed=False
    )
    assert stack.env["APP_ENV"] == "production"
    assert production_secret_problems(stack.env) is None
    assert stack.env["JWT_SECRET"] != PUBLISHED["JWT_SECRET"]


def test_two_providers_sharing_a_callback_secret_are_refused() -> None:
    env = PUBLISHED | strong_secrets() | {"APP_ENV": "production"}
    shared = secrets.token_urlsafe(48)
    for provider in CALLBACK_PROVIDERS[:2]:
        env[f"PROVIDER_CALLBACK_SECRET_{provider.upper()}"] = shared
    problems = production_secret_problems(env)
    assert problems is not None
    assert "PROVIDER_CALLBACK_SECRET" in problems


def test_the_local_stack_still_runs_on_the_published_values(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "state", environ=PUBLISHED)
    assert stack.env["APP_ENV"] == "local"
