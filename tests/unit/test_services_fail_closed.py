"""Every service process fails closed on its secrets outside APP_ENV=local.

The real entry points (`python -m <module>`) are started as a production pod would start them,
with no infrastructure at all: a service must refuse before it opens a port or a connection,
with one log line naming each variable and its rule, and exit 78 (EX_CONFIG). With strong
secrets the same process starts and serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway_core.server import EX_CONFIG
from gateway_core.services import BY_NAME, SERVICES, ServiceInfo

HOLDERS = [s for s in SERVICES if s.secrets]
STRONG = "Vb4nQ8wE2rT6yU1iO9pA3sD7fG5hJ0kL"  # 32 bytes, published nowhere


def production_env(**variables: str) -> dict[str, str]:
    """A pod's environment: APP_ENV=production, nothing else but what the test gives."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "APP_ENV": "production",
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "0",
        "SANDBOX_HTTP_PORT": "0",
        "ENABLE_METRICS": "false",
        **variables,
    }


async def start(service: ServiceInfo, env: dict[str, str], cwd: Path) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", service.module, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE
    )


async def refusal(service: ServiceInfo, env: dict[str, str], cwd: Path) -> str:
    process = await start(service, env, cwd)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == EX_CONFIG, out.decode()
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["event"] == "refusing to start: invalid configuration"
    assert line["level"] == "error"
    assert "Traceback" not in out.decode()
    error: str = line["error"]
    return error


@pytest.mark.parametrize("service", HOLDERS, ids=[s.name for s in HOLDERS])
async def test_a_service_without_its_secrets_refuses_to_start(
    service: ServiceInfo, tmp_path: Path
) -> None:
    error = await refusal(service, production_env(), tmp_path)

    for variable in service.secrets:
        assert f"{variable} is not set" in error, variable


async def test_a_short_or_published_secret_is_named_with_its_rule_and_never_printed(
    tmp_path: Path,
) -> None:
    orchestrator = BY_NAME["orchestrator"]
    env = production_env(**{variable: STRONG + variable for variable in orchestrator.secrets})
    env |= {
        "PROVIDER_CALLBACK_SECRET_ACS": "acs-key-too-short",
        "DB_PASSWORD": "postgres",
        "ORCHESTRATOR_SERVICE_KEY": "local-dev-orchestrator-service-key-0123456789",
    }

    error = await refusal(orchestrator, env, tmp_path)

    assert "PROVIDER_CALLBACK_SECRET_ACS is 17 bytes, shorter than 32" in error
    assert "DB_PASSWORD is a value published in .env.example or the code" in error
    assert "ORCHESTRATOR_SERVICE_KEY is a value published" in error
    assert "PROVIDER_CALLBACK_SECRET_UPI_CORE" not in error
    assert "acs-key-too-short" not in error
    assert "local-dev-orchestrator" not in error


async def test_with_strong_secrets_the_service_starts_in_production(tmp_path: Path) -> None:
    sandbox = BY_NAME["sandbox"]
    keys = {variable: f"{STRONG}-{variable}" for variable in sandbox.secrets}
    keys["PROVIDER_REPORT_KEYS"] = json.dumps({"upi_core": f"{STRONG}-upi_core"})
    process = await start(sandbox, production_env(**keys), tmp_path)
    assert process.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        assert first["event"] == "listening", first
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0


def test_the_local_stack_runs_in_local_mode_whatever_the_shell_says() -> None:
    from devstack.config import fixed_ports, stack_env

    env = stack_env({"APP_ENV": "production"}, fixed_ports({}), frozenset())

    assert env["APP_ENV"] == "local"
    for variable in BY_NAME["orchestrator"].secrets:
        if variable.startswith("PROVIDER_CALLBACK_SECRET_"):
            assert env[variable], variable
