"""`python -m gateway_core.db migrate [--service NAME]`: apply pending migrations, say what ran."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from gateway_core.config import ConfigError, Settings, load_settings
from gateway_core.db import MigrationError, migratable_services, migrate


async def _migrate(settings: Settings, only: str | None) -> None:
    services = [s for s in migratable_services() if only in (None, s.name)]
    if not services:
        print("no service has migrations yet")
    for service in services:
        assert service.schema is not None
        applied = await migrate(settings, service.schema, service.migrations_dir)
        done = ", ".join(applied) if applied else "up to date"
        print(f"{service.name} (schema {service.schema}): {done}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway_core.db")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = commands.add_parser(
        "migrate", help="apply every service's pending SQL migrations (DB_* variables)"
    )
    migrate_cmd.add_argument("--service", help="only this service (its directory name)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(local_unless_set=True)
        print(
            f"migrating {settings.db_database} at {settings.db_host}:{settings.db_port}",
            flush=True,
        )
        asyncio.run(_migrate(settings, args.service))
    except (ConfigError, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot migrate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
