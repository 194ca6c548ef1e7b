"""PostgreSQL access: one asyncpg pool per service, confined to the service's own schema, and
forward-only SQL migrations (`services/<name>/migrations/NNNN_name.sql`).

`python -m gateway_core.db migrate` applies every service's pending migrations.

Every pooled statement is bounded by DB_COMMAND_TIMEOUT and every wait for a pooled connection
by DB_ACQUIRE_TIMEOUT, however the pool is used (`pool.fetch(...)` and friends acquire
internally, with no timeout of their own in asyncpg). Either raises DatabaseTimeout, an
Unavailable error: the caller gets UNAVAILABLE (HTTP 503) and may retry, instead of a hang.
A connection the database drops (a restart, a failover) or refuses raises DatabaseUnavailable,
the same retryable 503, instead of an internal error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import asyncpg.transaction

from gateway_core.config import Settings
from gateway_core.errors import Unavailable
from gateway_core.services import SERVICES, ServiceInfo

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
CHECK_TIMEOUT_SECONDS = 2.0


class MigrationError(RuntimeError):
    """The database and the migrations directory disagree; the service must not start."""


class DatabaseTimeout(Unavailable):
    """No pooled connection came free in time, or a statement ran past its timeout (it was
    cancelled, and its transaction rolls back). Retryable."""

    reason = "DATABASE_TIMEOUT"


class DatabaseUnavailable(Unavailable):
    """The database dropped the connection (it restarted, failed over, or the network cut it)
    or could not be reached. Retryable: a transaction cut off this way did not commit, or its
    outcome is unknown, which a retry with the same Idempotency-Key settles."""

    reason = "DATABASE_UNAVAILABLE"


# How a lost or refused connection surfaces from asyncpg and the socket under it.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08: closed in the middle of an operation, ...
    asyncpg.AdminShutdownError,  # 57P01: the server ended the session (shutdown, terminate)
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed; every session is ended
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down or recovering
    ConnectionError,  # refused or reset by the network
)


@contextlib.contextmanager
def _database_errors_as(message: str, conn: asyncpg.Connection | None = None) -> Generator[None]:
    try:
        yield
    except TimeoutError:
        raise DatabaseTimeout(message) from None
    except _CONNECTION_LOST:
        raise DatabaseUnavailable(_LOST) from None
    except asyncpg.exceptions.OutdatedSchemaCacheError:
        # A table's row type changed under a connection that had decoded it (a migration
        # while this replica serves): the connection is fine; its caller reloads and retries.
        raise
    except asyncpg.InternalClientError:
        # asyncpg's protocol state after the socket died mid-operation: the connection is
        # unusable, so it goes (the pool opens another) and the caller may retry.
        if conn is None:
            raise
        conn.terminate()
        raise DatabaseUnavailable(_LOST) from None
    except asyncpg.InterfaceError:
        # "the underlying connection is closed": lost while in use. Other interface errors
        # are misuse, raised as they are.
        if conn is None or not conn.is_closed():
            raise
        raise DatabaseUnavailable(_LOST) from None


_STATEMENT_TIMED_OUT = "the database did not answer in time; retry the request"
_NO_CONNECTION = "the database is busy (no connection free in time); retry the request"
_LOST = "the database cannot be reached right now; retry the request"


# Statements that leave state in the session rather than in a transaction: a session advisory
# lock, LISTEN, a session SET, a cursor or prepared statement by name, a temporary table.
_SESSION_STATE = re.compile(
    r"pg_(?:try_)?advisory_lock(?:_shared)?\s*\("
    r"|\A\s*(?:set\s+(?!local\b)|listen\b|declare\b|prepare\b|create\s+temp)",
    re.IGNORECASE,
)


# Every statement passes here; the services send a few hundred distinct query strings.
@functools.lru_cache(maxsize=1024)
def _takes_session_state(query: str) -> bool:
    return _SESSION_STATE.search(query) is not None


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, whose statement timeouts raise DatabaseTimeout. Transactions and
    pool methods run their statements through these methods too.

    Going back to the pool, asyncpg resets every connection with a round trip of four
    statements (unlock all advisory locks, CLOSE ALL, UNLISTEN *, RESET ALL): the most
    frequent statement of the stack, for connections that almost never hold such state. Here
    only a connection that ran a statement leaving state in its session gets that reset; an
    open transaction is rolled back on release either way (asyncpg always does that part).
    """

    _session_state = False

    def _note_session_state(self, query: object) -> None:
        if isinstance(query, str) and _takes_session_state(query):
            self._session_state = True

    def get_reset_query(self) -> str:
        return super().get_reset_query() if self._session_state else ""

    async def reset(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's
        await super().reset(timeout=timeout)
        self._session_state = False

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        with _database_errors_as(_STATEMENT_TIMED_OUT, self):
            return await super().execute(query, *args, **kwargs)

    async def executemany(self, command: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(command)
        with _database_errors_as(_STATEMENT_TIMED_OUT, self):
            return await super().executemany(command, *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        with _database_errors_as(_STATEMENT_TIMED_OUT, self):
            return await super().fetch(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        with _database_errors_as(_STATEMENT_TIMED_OUT, self):
            return await super().fetchval(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        with _database_errors_as(_STATEMENT_TIMED_OUT, self):
            return await super().fetchrow(query, *args, **kwargs)

    async def fetchmany(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        with _database_errors_as(_STATEMENT_TIMED_OUT, self):
            return await super().fetchmany(query, *args, **kwargs)

    async def add_listener(self, channel: str, callback: Any) -> None:
        self._session_state = True
        await super().add_listener(channel, callback)

    async def prepare(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        return await super().prepare(query, *args, **kwargs)

    def cursor(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._note_session_state(query)
        return super().cursor(query, *args, **kwargs)

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> _Transaction:
        self._check_open()
        return _Transaction(self, isolation, readonly, deferrable)


class _Transaction(asyncpg.transaction.Transaction):  # type: ignore[misc]
    """asyncpg's transaction, whose BEGIN, COMMIT and ROLLBACK on a lost connection raise
    DatabaseUnavailable (a transaction cut off this way never committed)."""

    async def __aexit__(self, *exc_info: Any) -> None:
        with _database_errors_as(_STATEMENT_TIMED_OUT, self._connection):
            await super().__aexit__(*exc_info)


class Pool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool with a default acquire timeout that holds for `pool.acquire()` and for
    every method that borrows a connection itself (`pool.fetch`, `pool.execute`, ...)."""

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        chosen = self._acquire_timeout if timeout is None else timeout
        return _Acquire(super().acquire(timeout=chosen))


class _Acquire:
    """asyncpg's acquire context (`async with` or `await`), its timeout as DatabaseTimeout."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aenter__(self) -> Any:
        with _database_errors_as(_NO_CONNECTION):
            return await self._inner.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.__aexit__(*exc_info)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._acquired().__await__()

    async def _acquired(self) -> Any:
        with _database_errors_as(_NO_CONNECTION):
            return await self._inner


@dataclass(frozen=True)
class Migration:
    version: str  # file name without ".sql", e.g. "0001_init"
    path: Path
    checksum: str  # sha256 of the file's bytes

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


async def create_pool(
    settings: Settings, schema: str, application_name: str | None = None
) -> asyncpg.Pool:
    """A pool whose connections see only `schema` and convert dicts to and from json/jsonb.

    jsonb parameters take Python objects (dicts, lists), not pre-serialized JSON strings.
    Statements are cancelled after DB_COMMAND_TIMEOUT and waits for a connection end after
    DB_ACQUIRE_TIMEOUT, both as DatabaseTimeout; an explicit `timeout=` argument wins.
    """
    _check_schema_name(schema)
    # Built directly (create_pool cannot make a subclass), with create_pool's defaults.
    pool = Pool(
        min_size=min(settings.db_max_idle_conns, settings.db_max_open_conns),
        max_size=settings.db_max_open_conns,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_register_json_codecs,
        loop=None,
        connection_class=_Connection,
        record_class=asyncpg.Record,
        acquire_timeout=settings.db_acquire_timeout,
        command_timeout=settings.db_command_timeout,
        server_settings={
            "search_path": schema,
            "application_name": application_name or f"paygate-{schema}",
        },
        **_connect_args(settings),
    )
    await pool
    return pool


async def check_pool(pool: asyncpg.Pool) -> None:
    """A dependency check: raises unless the database answers a query."""
    async with pool.acquire(timeout=CHECK_TIMEOUT_SECONDS) as conn:
        await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS)


async def migrate(settings: Settings, schema: str, migrations_dir: Path) -> list[str]:
    """Apply the pending migrations of `schema` in order; returns the versions applied.

    Each file runs in its own transaction with `search_path` set to the schema, as the
    schema's owner: an administrator (DB_USERNAME) who connects switches to the owning service
    role first (SET ROLE), so everything a migration creates belongs to that role. A missing
    schema is created, owned by the connecting user. A session advisory lock serializes
    concurrent starters, so several replicas may call this at once. Statements have no
    timeout here: a migration may rewrite a large table.
    Refuses (MigrationError) when an applied file changed or disappeared, or a new file sorts
    before one already applied: history is forward-only.
    """
    _check_schema_name(schema)
    migrations = discover_migrations(migrations_dir)
    conn: asyncpg.Connection = await asyncpg.connect(
        server_settings={"search_path": schema, "application_name": "paygate-migrate"},
        **_connect_args(settings),
    )
    try:
        # Session-level: released when this connection closes, whatever happened in between.
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", _lock_key(schema))
        await _act_as_owner(conn, schema)
        applied = await _apply_pending(conn, schema, migrations)
        await _apply_derived(conn, schema, migrations_dir)
        return applied
    finally:
        await conn.close()


# A migrations directory may hold this file: `statements()` renders (SQL, parameters) pairs
# from the service's own Python tables (a state machine, a price list), so those rows have one
# home, the code. They run after every migration run, in one transaction: idempotent.
DERIVED_FILE = "derived.py"


async def _apply_derived(conn: asyncpg.Connection, schema: str, migrations_dir: Path) -> None:
    path = migrations_dir / DERIVED_FILE
    if not path.is_file():
        return
    # Loaded by path: the runner (a library) imports no service.
    spec = importlib.util.spec_from_file_location(f"_derived_{schema}", path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"{path}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    statements: list[tuple[str, tuple[object, ...]]] = module.statements()
    async with conn.transaction():
        for sql, args in statements:
            await conn.execute(sql, *args)


async def migrate_all(settings: Settings) -> dict[str, list[str]]:
    """Migrate every service that has a schema and a migrations directory.

    Returns the versions applied, by schema.
    """
    applied: dict[str, list[str]] = {}
    for service in migratable_services():
        assert service.schema is not None
        applied[service.schema] = await migrate(settings, service.schema, service.migrations_dir)
    return applied


def migratable_services() -> list[ServiceInfo]:
    return [s for s in SERVICES if s.schema and s.migrations_dir.is_dir()]


def discover_migrations(migrations_dir: Path) -> list[Migration]:
    """The directory's migrations in order; misnamed or duplicate-numbered files are errors."""
    migrations: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake_name.sql")
        number = match.group(1)
        if number in numbers:
            raise MigrationError(f"{path}: number {number} is also used by {numbers[number]}")
        numbers[number] = path.name
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations.append(Migration(version=path.stem, path=path, checksum=checksum))
    return migrations


async def _act_as_owner(conn: asyncpg.Connection, schema: str) -> None:
    """Become the schema's owner for this session, creating the schema if there is none.

    Only a missing schema is created: CREATE SCHEMA IF NOT EXISTS needs CREATE on the
    database even when the schema exists, which a service role does not have.
    """
    row = await conn.fetchrow(
        "SELECT r.rolname AS owner, r.rolname = current_user AS mine"
        " FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = $1",
        schema,
    )
    if row is None:
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        except asyncpg.InsufficientPrivilegeError as exc:
            raise MigrationError(
                f"{schema}: the schema does not exist and this user may not create it ({exc}); "
                "create it with `python -m gateway_core.db provision`, or as an administrator"
            ) from exc
    elif not row["mine"]:
        try:
            await conn.execute(
                await conn.fetchval("SELECT format('SET ROLE %I', $1::text)", row["owner"])
            )
        except asyncpg.InsufficientPrivilegeError as exc:
            raise MigrationError(
                f"{schema}: the schema belongs to {row['owner']} and migrations run as its owner; "
                f"connect as {row['owner']}, or as a role allowed to SET ROLE {row['owner']} "
                f"({exc})"
            ) from exc


async def _apply_pending(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration]
) -> list[str]:
    await conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
            version text PRIMARY KEY,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Unqualified from here on: the session's search_path is the schema.
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    applied = {row["version"]: row["checksum"] for row in rows}
    on_disk = {m.version: m for m in migrations}
    for version, checksum in sorted(applied.items()):
        if version not in on_disk:
            raise MigrationError(
                f"{schema}: migration {version} was applied but its file is gone; "
                "migrations are forward-only, restore the file"
            )
        if on_disk[version].checksum != checksum:
            raise MigrationError(
                f"{schema}: migration {version} changed after it was applied; "
                "write a new migration instead of editing an applied one"
            )
    pending = [m for m in migrations if m.version not in applied]
    latest = max(applied, default="")
    for migration in pending:
        if migration.version < latest:
            raise MigrationError(
                f"{schema}: migration {migration.version} sorts before the applied {latest}; "
                "renumber it after the latest"
            )
    for migration in pending:
        try:
            await _apply(conn, schema, migration)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{schema}: {migration.path} failed: {exc}") from exc
    return [m.version for m in pending]


async def _apply(conn: asyncpg.Connection, schema: str, migration: Migration) -> None:
    async with conn.transaction():
        # Per transaction: an earlier file may have changed the session's search_path.
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        # Recorded before the file runs, so a `SET search_path` inside it cannot misdirect the
        # row; the transaction keeps both or neither.
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
            migration.version,
            migration.checksum,
        )
        await conn.execute(migration.sql)


def _connect_args(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.db_host,
        "port": settings.db_port,
        "user": settings.db_username,
        # Checked: outside APP_ENV=local a published password (the local stack's) is refused.
        "password": settings.secret("db_password"),
        "database": settings.db_database,
        "ssl": settings.db_ssl_mode,
    }


async def _register_json_codecs(conn: asyncpg.Connection) -> None:
    # In the binary format: asyncpg decodes a composite value (a table's row type, as the
    # orchestrator reads a payment's children) only in binary, so each type in it needs a
    # binary codec. json's binary form is its text; jsonb's is a version byte, then the text.
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=_encode_json, decoder=json.loads, format="binary"
    )
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


_JSONB_VERSION = b"\x01"


def _encode_json(value: object) -> bytes:
    return json.dumps(value).encode()


def _encode_jsonb(value: object) -> bytes:
    return _JSONB_VERSION + json.dumps(value).encode()


def _decode_jsonb(data: bytes) -> Any:
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"unknown jsonb binary format version {data[:1]!r}")
    return json.loads(data[1:])


def _check_schema_name(schema: str) -> None:
    # The name is interpolated into DDL (identifiers cannot be bound parameters).
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name must be lower_snake_case, got {schema!r}")


def _lock_key(schema: str) -> str:
    return f"paygate.migrate.{schema}"
