"""Least privilege in the running stack's database: each service connects as its own role,
which reads its own schema and is refused every other one (the orchestrator cannot read the
card vault's tables, nor the vault the orchestrator's), and which cannot step outside its
schema. The rest of the e2e suite passing shows the services work under these roles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from devstack.stack import Stack
from gateway_core.services import BY_NAME, SERVICES

DB_SERVICES = [s.name for s in SERVICES if s.schema]
# A table of each service's schema, to read.
TABLES = {
    "orchestrator": "orchestrator.payments",
    "tokenization-vault": "vault.cards",
    "webhook": "webhook.webhooks",
    "reconciliation": "reconciliation.settlement_files",
    "web": "web.checkout_sessions",
}


@pytest.fixture
async def as_service(stack: Stack) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    """A connection per database service, made the way that service connects."""
    connections = {name: await asyncpg.connect(stack.service_dsn(name)) for name in DB_SERVICES}
    try:
        yield connections
    finally:
        for conn in connections.values():
            await conn.close()


def test_every_service_with_a_schema_has_a_table_listed() -> None:
    assert set(TABLES) == set(DB_SERVICES)


async def test_the_orchestrator_cannot_read_the_vaults_cards_and_the_vault_not_the_payments(
    as_service: dict[str, asyncpg.Connection],
) -> None:
    orchestrator, vault = as_service["orchestrator"], as_service["tokenization-vault"]
    with pytest.raises(
        asyncpg.InsufficientPrivilegeError, match="permission denied for schema vault"
    ):
        await orchestrator.fetch("SELECT * FROM vault.cards")
    with pytest.raises(
        asyncpg.InsufficientPrivilegeError, match="permission denied for schema orchestrator"
    ):
        await vault.fetch("SELECT * FROM orchestrator.payments")
    # Their own tables they read.
    assert await orchestrator.fetchval("SELECT count(*) FROM orchestrator.payments") >= 0
    assert await vault.fetchval("SELECT count(*) FROM vault.cards") >= 0


@pytest.mark.parametrize("service", DB_SERVICES)
async def test_each_service_reads_only_its_own_schema(
    as_service: dict[str, asyncpg.Connection], service: str
) -> None:
    conn = as_service[service]
    assert await conn.fetchval(f"SELECT count(*) FROM {TABLES[service]}") >= 0  # noqa: S608
    for other, table in TABLES.items():
        if other == service:
            continue
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        schema = BY_NAME[other].schema
        assert not await conn.fetchval("SELECT has_schema_privilege($1, 'USAGE')", schema)


@pytest.mark.parametrize("service", DB_SERVICES)
async def test_a_service_role_is_no_superuser_and_cannot_create_outside_its_schema(
    as_service: dict[str, asyncpg.Connection], stack: Stack, service: str
) -> None:
    conn = as_service[service]
    attributes = dict(
        await conn.fetchrow(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        )
    )
    assert attributes.pop("rolname") not in (stack.env["DB_USERNAME"], "postgres")
    assert not any(attributes.values()), attributes
    for statement in (
        "CREATE TABLE public.smuggled (x int)",
        "CREATE SCHEMA smuggled",
        "CREATE TEMP TABLE smuggled (x int)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


@pytest.mark.parametrize("service", DB_SERVICES)
async def test_the_running_service_connects_as_its_own_role(stack: Stack, service: str) -> None:
    schema = BY_NAME[service].schema
    expected = await asyncpg.connect(stack.service_dsn(service))
    try:
        role = await expected.fetchval("SELECT current_user")
    finally:
        await expected.close()
    admin = await asyncpg.connect(stack.dsn)
    try:
        users = await admin.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = $1",
            f"paygate-{schema}",
        )
    finally:
        await admin.close()
    assert [row["usename"] for row in users] == [role]
