"""Per-service database roles against a real PostgreSQL (`python -m gateway_core.db provision`).

Provisioned by a superuser into a fresh database, and by a non-superuser administrator (the
database's owner with CREATEROLE, as on managed PostgreSQL) into a database an earlier
single-user install had already migrated: either way each service's role owns its schema and
everything in it, reads its own tables, and is refused every other schema, the `public` schema
and the database itself. The administrator's later migrations still land in the owner's hands.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import MigrationError, migratable_services, migrate, migrate_all
from gateway_core.db.roles import (
    ProvisionError,
    ServiceRole,
    provision,
    role_variables,
    roles_from_environment,
)

SCHEMAS = [s.schema for s in migratable_services() if s.schema]
# A table of each schema, to read.
TABLES = {
    "orchestrator": "payments",
    "vault": "cards",
    "webhook": "webhooks",
    "reconciliation": "settlement_files",
    "web": "checkout_sessions",
}


def roles_for(prefix: str) -> list[ServiceRole]:
    """Role names of their own per scenario: roles are shared by the whole server."""
    return [
        ServiceRole(schema, f"{prefix}_{schema}", f"{prefix}-{schema}-pw") for schema in SCHEMAS
    ]


def as_role(admin: Settings, role: ServiceRole) -> Settings:
    return Settings.model_construct(
        db_host="127.0.0.1",
        db_port=admin.db_port,
        db_username=role.username,
        db_password=role.password,
        db_database=admin.db_database,
    )


async def connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_username,
        password=settings.db_password,
        database=settings.db_database,
    )


@pytest.fixture(scope="module")
async def fresh(
    postgres_server: ScratchServer,
) -> tuple[Settings, list[ServiceRole]]:
    """A new database provisioned and migrated by the superuser."""
    admin = await postgres_server.superuser_database("roles_fresh")
    roles = roles_for("fresh")
    await provision(admin, roles)
    await migrate_all(admin)
    return admin, roles


@pytest.fixture(scope="module")
async def adopted(postgres_server: ScratchServer) -> tuple[Settings, list[ServiceRole]]:
    """A database migrated by one shared user, then provisioned by that user (CREATEROLE)."""
    admin = await postgres_server.database(
        "roles_adopted", *(s.name for s in migratable_services())
    )
    roles = roles_for("adopted")
    await provision(admin, roles)
    await migrate_all(admin)
    return admin, roles


@pytest.fixture(params=["fresh", "adopted"])
def provisioned(
    request: pytest.FixtureRequest,
) -> tuple[Settings, list[ServiceRole]]:
    found: tuple[Settings, list[ServiceRole]] = request.getfixturevalue(request.param)
    return found


async def test_each_role_owns_its_schema_and_everything_in_it(
    provisioned: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = provisioned
    conn = await connect(admin)
    try:
        for role in roles:
            owners = await conn.fetch(
                "SELECT nspowner::regrole::text AS owner FROM pg_namespace WHERE nspname = $1"
                " UNION SELECT relowner::regrole::text FROM pg_class"
                " WHERE relnamespace = $1::regnamespace"
                " UNION SELECT proowner::regrole::text FROM pg_proc"
                " WHERE pronamespace = $1::regnamespace",
                role.schema,
            )
            assert {row["owner"] for row in owners} == {role.username}, role.schema
    finally:
        await conn.close()


async def test_a_role_reads_its_own_tables_and_is_refused_every_other_schema(
    provisioned: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = provisioned
    for role in roles:
        conn = await connect(as_role(admin, role))
        try:
            own = f"{role.schema}.{TABLES[role.schema]}"
            assert await conn.fetchval(f"SELECT count(*) FROM {own}") == 0  # noqa: S608
            for other in roles:
                if other is role:
                    continue
                table = f"{other.schema}.{TABLES[other.schema]}"
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
                assert not await conn.fetchval(
                    "SELECT has_schema_privilege($1, 'USAGE')", other.schema
                )
        finally:
            await conn.close()


async def test_a_role_has_no_power_outside_its_schema(
    provisioned: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = provisioned
    for role in roles:
        conn = await connect(as_role(admin, role))
        try:
            attributes = await conn.fetchrow(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
                " FROM pg_roles WHERE rolname = current_user"
            )
            assert not any(attributes.values()), role.username
            for statement in (
                "CREATE TABLE public.smuggled (x int)",
                "CREATE SCHEMA smuggled",
                "CREATE TEMP TABLE smuggled (x int)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()


async def test_only_the_named_roles_may_connect(
    fresh: tuple[Settings, list[ServiceRole]], postgres_server: ScratchServer
) -> None:
    admin, _ = fresh
    conn = await connect(admin)
    try:
        await conn.execute("DROP ROLE IF EXISTS fresh_intruder")
        await conn.execute("CREATE ROLE fresh_intruder LOGIN PASSWORD 'intruder-pw'")
    finally:
        await conn.close()
    intruder = ServiceRole("none", "fresh_intruder", "intruder-pw")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await connect(as_role(admin, intruder))


async def test_provisioning_again_changes_passwords_and_nothing_else(
    fresh: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = fresh
    renewed = [ServiceRole(r.schema, r.username, r.password + "-renewed") for r in roles]
    await provision(admin, renewed)
    try:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect(as_role(admin, roles[0]))
        conn = await connect(as_role(admin, renewed[0]))
        await conn.close()
    finally:
        await provision(admin, roles)


async def test_migrations_run_by_the_administrator_belong_to_the_schema_owner(
    adopted: tuple[Settings, list[ServiceRole]], tmp_path: Path
) -> None:
    admin, roles = adopted
    orchestrator = next(r for r in roles if r.schema == "orchestrator")
    service = next(s for s in migratable_services() if s.schema == "orchestrator")
    migrations = tmp_path / "migrations"
    shutil.copytree(service.migrations_dir, migrations)
    (migrations / "9999_later_table.sql").write_text("CREATE TABLE later_table (x int);\n")

    assert await migrate(admin, "orchestrator", migrations) == ["9999_later_table"]

    conn = await connect(as_role(admin, orchestrator))
    try:
        assert (
            await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'later_table'")
            == orchestrator.username
        )
        assert await conn.fetchval("SELECT count(*) FROM orchestrator.later_table") == 0
        await conn.execute("DROP TABLE orchestrator.later_table")
        await conn.execute(
            "DELETE FROM orchestrator.schema_migrations WHERE version = '9999_later_table'"
        )
    finally:
        await conn.close()


async def test_a_service_role_can_migrate_its_own_schema(
    fresh: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = fresh
    for role in roles:
        service = next(s for s in migratable_services() if s.schema == role.schema)
        assert await migrate(as_role(admin, role), role.schema, service.migrations_dir) == []


async def test_a_role_may_not_migrate_a_schema_it_does_not_own(
    fresh: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = fresh
    orchestrator = next(r for r in roles if r.schema == "orchestrator")
    vault = next(s for s in migratable_services() if s.schema == "vault")
    with pytest.raises(MigrationError, match="vault"):
        await migrate(as_role(admin, orchestrator), "vault", vault.migrations_dir)


# -- refusals ----------------------------------------------------------------------------------


async def test_a_privileged_role_is_refused_naming_the_attribute(
    fresh: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = fresh
    conn = await connect(admin)
    try:
        await conn.execute("ALTER ROLE fresh_webhook CREATEDB")
        with pytest.raises(ProvisionError, match="fresh_webhook has CREATEDB"):
            await provision(admin, roles)
    finally:
        await conn.execute("ALTER ROLE fresh_webhook NOCREATEDB")
        await conn.close()


async def test_two_services_may_not_share_a_role(fresh: tuple[Settings, list[ServiceRole]]) -> None:
    admin, roles = fresh
    shared = [ServiceRole(r.schema, "fresh_shared", "pw") for r in roles]
    with pytest.raises(ProvisionError, match="role of its own"):
        await provision(admin, shared)


async def test_the_administrator_may_not_be_a_service_role(
    adopted: tuple[Settings, list[ServiceRole]],
) -> None:
    admin, roles = adopted
    mixed = [ServiceRole(roles[0].schema, admin.db_username, "pw"), *roles[1:]]
    with pytest.raises(ProvisionError, match="administrator"):
        await provision(admin, mixed)


def test_roles_come_from_the_environment_with_default_names() -> None:
    environ = {role_variables(schema)[1]: f"{schema}-secret" for schema in SCHEMAS}
    environ[role_variables("vault")[0]] = "pci_vault"
    roles = {role.schema: role for role in roles_from_environment(environ)}
    assert set(roles) == set(SCHEMAS)
    assert roles["vault"].username == "pci_vault"
    assert roles["orchestrator"].username == "paygate_orchestrator"
    assert roles["orchestrator"].password == "orchestrator-secret"
    assert "secret" not in repr(roles["orchestrator"])


def test_a_missing_role_password_is_named() -> None:
    with pytest.raises(ProvisionError, match="DB_WEBHOOK_PASSWORD"):
        roles_from_environment({role_variables(s)[1]: "pw" for s in SCHEMAS if s != "webhook"})
