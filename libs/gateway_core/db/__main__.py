"""`python -m gateway_core.db migrate [--service NAME]`: apply pending migrations, say what ran.

`python -m gateway_core.db provision`: as an administrator, create each service's own role and
schema (gateway_core.db.roles), then apply every pending migration as the schemas' owners.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from gateway_core.config import ConfigError, Settings, load_settings
from gateway_core.db import MigrationError, migratable_services, migrate
from gateway_core.db.roles import ProvisionError, provision, roles_from_environment


async def _migrate(settings: Settings, only: str | None) -> None:
    services = [s for s in migratable_services() if only in (None, s.name)]
    if not services:
        print("no service has migrations yet")
    for service in services:
        assert service.schema is not None
        applied = await migrate(settings, service.schema, service.migrations_dir)
        done = ", ".join(applied) if applied else "up to date"
        print(f"{service.name} (schema {service.schema}): {done}", flush=True)


async def _provision(settings: Settings) -> None:
    roles = roles_from_environment()
    await provision(settings, roles)
    for role in roles:
        print(f"role {role.username} owns schema {role.schema}", flush=True)
    await _migrate(settings, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway_core.db")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = commands.add_parser(
        "migrate", help="apply every service's pending SQL migrations (DB_* variables)"
    )
    migrate_cmd.add_argument("--service", help="only this service (its directory name)")
    commands.add_parser(
        "provision",
        help="as an administrator (DB_USERNAME), give each service its own role and schema "
        "(DB_<SCHEMA>_USERNAME, DB_<SCHEMA>_PASSWORD), then migrate",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(local_unless_set=True)
        print(
            f"{args.command}: {settings.db_database} at {settings.db_host}:{settings.db_port}",
            flush=True,
        )
        if args.command == "provision":
            asyncio.run(_provision(settings))
        else:
            asyncio.run(_migrate(settings, args.service))
    except (ConfigError, MigrationError, ProvisionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot migrate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
