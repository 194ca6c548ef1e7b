"""Least privilege in the database: each service with a schema logs in as its own role, which
owns that schema and can use nothing else (DESIGN §2: no service reads another's tables).

`python -m gateway_core.db provision` runs as an administrator (DB_USERNAME: a superuser, or,
as on managed PostgreSQL, the database's owner with CREATEROLE) and, for every service with a
schema, takes its role from DB_<SCHEMA>_USERNAME (default paygate_<schema>) and
DB_<SCHEMA>_PASSWORD. It then

- creates the role (LOGIN, no other attribute) or sets its password, and refuses a role that is
  a superuser or may create roles or databases, replicate or bypass row security;
- lets only the named roles (and the administrator) connect to the database: PUBLIC loses
  CONNECT and TEMP on it, and every privilege on the `public` schema;
- makes the role the owner of its schema (creating it, or taking over a schema and its objects
  that an earlier single-user install left to another owner), with nothing granted to PUBLIC;
- and applies the migrations as each schema's owner.

A role that owns its schema can do anything inside it and nothing outside it: it has no USAGE
on any other service's schema, no CREATE on the database or on `public`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from dotenv import dotenv_values

from gateway_core.config import Settings
from gateway_core.db import migratable_services

ROLE_PREFIX = "paygate_"
# Role attributes a service role must not have (pg_roles columns).
_FORBIDDEN_ATTRIBUTES = {
    "rolsuper": "SUPERUSER",
    "rolcreaterole": "CREATEROLE",
    "rolcreatedb": "CREATEDB",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}
_LOCK_KEY = "paygate.provision"

# Everything in a schema that has an owner, as the ALTER statement that hands it over.
# Sequences owned by a column follow their table; a table's row type follows the table.
_FOREIGN_OWNED = """
SELECT format('ALTER %s %s OWNER TO %I', kind, name, $2::text) FROM (
    SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                          WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                          ELSE 'TABLE' END AS kind,
           c.oid::regclass::text AS name
    FROM pg_class c
    WHERE c.relnamespace = $1::regnamespace AND c.relowner <> $2::regrole
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND NOT (c.relkind = 'S' AND EXISTS (
          SELECT 1 FROM pg_depend d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
    UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                          ELSE 'FUNCTION' END,
           p.oid::regprocedure::text
    FROM pg_proc p
    WHERE p.pronamespace = $1::regnamespace AND p.proowner <> $2::regrole
    UNION ALL
    SELECT 'TYPE', t.oid::regtype::text
    FROM pg_type t
    WHERE t.typnamespace = $1::regnamespace AND t.typowner <> $2::regrole
      AND t.typtype IN ('e', 'd', 'r', 'm') AND t.typcategory <> 'A'
) owned
"""


class ProvisionError(RuntimeError):
    """The roles cannot be provisioned as asked; the message says what to change."""


@dataclass(frozen=True)
class ServiceRole:
    schema: str
    username: str
    password: str = field(repr=False)


def role_variables(schema: str) -> tuple[str, str]:
    """The environment variables naming a schema's role and its password."""
    return f"DB_{schema.upper()}_USERNAME", f"DB_{schema.upper()}_PASSWORD"


def default_role(schema: str) -> str:
    return f"{ROLE_PREFIX}{schema}"


def roles_from_environment(environ: Mapping[str, str] | None = None) -> list[ServiceRole]:
    """Every migratable service's role, from the environment over `.env` (as Settings reads)."""
    if environ is None:
        from_file = {k: v for k, v in dotenv_values(".env").items() if v is not None}
        environ = from_file | dict(os.environ)
    roles: list[ServiceRole] = []
    missing: list[str] = []
    for service in migratable_services():
        assert service.schema is not None
        user_var, password_var = role_variables(service.schema)
        password = environ.get(password_var, "")
        if not password:
            missing.append(password_var)
        username = environ.get(user_var) or default_role(service.schema)
        roles.append(ServiceRole(service.schema, username, password))
    if missing:
        raise ProvisionError(f"set {', '.join(missing)}: each service role needs a password")
    return roles


async def provision(settings: Settings, roles: Sequence[ServiceRole]) -> None:
    """Create or update the service roles and hand each its schema (see the module doc).

    Runs in one transaction under an advisory lock: concurrent runs queue, a failed one
    changes nothing.
    """
    names = [role.username for role in roles]
    if len(set(names)) != len(names):
        raise ProvisionError(f"each service needs a role of its own, got {names}")
    conn: asyncpg.Connection = await asyncpg.connect(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_username,
        password=settings.db_password,
        database=settings.db_database,
        ssl=settings.db_ssl_mode,
        server_settings={"application_name": "paygate-provision"},
    )
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _LOCK_KEY)
            admin = await conn.fetchrow(
                "SELECT current_user AS name, rolsuper AS superuser FROM pg_roles"
                " WHERE rolname = current_user"
            )
            if admin["name"] in names:
                raise ProvisionError(
                    f"DB_USERNAME {admin['name']} is the administrator and cannot also be a "
                    "service role"
                )
            await _close_the_database(conn, settings.db_database)
            for role in roles:
                await _ensure_role(conn, role, settings.db_database, admin["superuser"])
                await _hand_over_schema(conn, role)
    finally:
        await conn.close()


async def _close_the_database(conn: asyncpg.Connection, database: str) -> None:
    # PUBLIC may connect and make temporary tables by default, and use (on PostgreSQL before
    # 15 also create in) the `public` schema. Nothing of ours lives there.
    await _execute(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
    if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = 'public'"):
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")


async def _ensure_role(
    conn: asyncpg.Connection, role: ServiceRole, database: str, admin_is_superuser: bool
) -> None:
    found = await conn.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", role.username)
    if found is None:
        await _execute(conn, "CREATE ROLE %I LOGIN PASSWORD %L", role.username, role.password)
    else:
        granted = [name for column, name in _FORBIDDEN_ATTRIBUTES.items() if found[column]]
        if granted:
            raise ProvisionError(
                f"role {role.username} has {', '.join(granted)}: a service role must have none "
                "of these; drop them or name another role in "
                f"{role_variables(role.schema)[0]}"
            )
        await _execute(conn, "ALTER ROLE %I LOGIN PASSWORD %L", role.username, role.password)
    await _execute(conn, "GRANT CONNECT ON DATABASE %I TO %I", database, role.username)
    if not admin_is_superuser:
        # Handing objects to a role, and migrating as it (SET ROLE), needs membership in it.
        await _execute(conn, "GRANT %I TO CURRENT_USER", role.username)


async def _hand_over_schema(conn: asyncpg.Connection, role: ServiceRole) -> None:
    owner = await conn.fetchval(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", role.schema
    )
    if owner is None:
        await _execute(conn, "CREATE SCHEMA %I AUTHORIZATION %I", role.schema, role.username)
    else:
        # A schema from before per-service roles: it and everything in it change hands.
        await _execute(conn, "ALTER SCHEMA %I OWNER TO %I", role.schema, role.username)
        statements = await conn.fetch(_FOREIGN_OWNED, role.schema, role.username)
        for (statement,) in statements:
            await conn.execute(statement)
    await _execute(conn, "REVOKE ALL ON SCHEMA %I FROM PUBLIC", role.schema)


async def _execute(conn: asyncpg.Connection, template: str, *values: str) -> None:
    """Run DDL built by the server's format(): %I quotes identifiers, %L literals (DDL takes
    no bind parameters)."""
    placeholders = ", ".join(f"${n}::text" for n in range(2, len(values) + 2))
    statement = await conn.fetchval(f"SELECT format($1, {placeholders})", template, *values)
    try:
        await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ProvisionError(
            f"{exc}: DB_USERNAME must be a superuser, or own the database and have CREATEROLE"
        ) from exc
