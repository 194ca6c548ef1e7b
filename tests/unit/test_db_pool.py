"""The service pool's timeouts against a real PostgreSQL: a statement that runs too long and a
wait for a connection that never comes free both end in DatabaseTimeout (UNAVAILABLE, HTTP
503, retryable) within their bound, whichever way the pool is used, and the pool keeps working.
A connection the database loses (a restart) or refuses is DatabaseUnavailable: also a
retryable 503, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import grpc
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import DatabaseTimeout, DatabaseUnavailable, create_pool
from gateway_core.errors import Unavailable

COMMAND_TIMEOUT = 0.5
ACQUIRE_TIMEOUT = 0.5
# Far above either bound, far below the sleep: a hang shows up as a failure, not a stuck run.
PATIENCE = 8.0
SLEEP_SECONDS = 60


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    settings = await postgres_server.database("pool", "orchestrator")
    return settings.model_copy(
        update={"db_command_timeout": COMMAND_TIMEOUT, "db_acquire_timeout": ACQUIRE_TIMEOUT}
    )


@pytest.fixture(scope="module")
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(database, "orchestrator", "pool-tests")
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def single(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool of exactly one connection."""
    settings = database.model_copy(update={"db_max_open_conns": 1, "db_max_idle_conns": 1})
    created = await create_pool(settings, "orchestrator", "pool-tests-single")
    try:
        yield created
    finally:
        await created.close()


async def fails_in_time(call: Awaitable[object], bound: float) -> DatabaseTimeout:
    """The DatabaseTimeout `call` raises, after checking it came about when it should."""
    started = time.monotonic()
    with pytest.raises(DatabaseTimeout) as info:
        await asyncio.wait_for(call, PATIENCE)
    elapsed = time.monotonic() - started
    assert bound * 0.8 <= elapsed < bound + 3, f"gave up after {elapsed:.2f} s"
    return info.value


def is_retryable_unavailable(error: Unavailable, reason: str = "DATABASE_TIMEOUT") -> None:
    assert isinstance(error, Unavailable)
    assert error.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert error.http_status == 503
    assert error.reason == reason
    assert "retry" in error.message


async def sleepers(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active' AND pid <> pg_backend_pid()"
    )
    return count


# -- the command timeout ----------------------------------------------------------------------

SLEEP = f"SELECT pg_sleep({SLEEP_SECONDS})"


async def through_pool_fetch(pool: asyncpg.Pool) -> object:
    return await pool.fetch(SLEEP)


async def through_pool_fetchval(pool: asyncpg.Pool) -> object:
    return await pool.fetchval(SLEEP)


async def through_pool_fetchrow(pool: asyncpg.Pool) -> object:
    return await pool.fetchrow(SLEEP)


async def through_pool_execute(pool: asyncpg.Pool) -> object:
    return await pool.execute(SLEEP)


async def through_an_acquired_connection(pool: asyncpg.Pool) -> object:
    async with pool.acquire() as conn:
        return await conn.fetchval(SLEEP)


async def inside_a_transaction(pool: asyncpg.Pool) -> object:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO merchants (merchant_id, name, vpa) VALUES ($1, $1, $1)", "MER_timeout"
        )
        return await conn.execute(SLEEP)


@pytest.mark.parametrize(
    "run",
    [
        through_pool_fetch,
        through_pool_fetchval,
        through_pool_fetchrow,
        through_pool_execute,
        through_an_acquired_connection,
        inside_a_transaction,
    ],
)
async def test_a_statement_past_the_command_timeout_is_cancelled_with_a_retryable_error(
    pool: asyncpg.Pool, run: Callable[[asyncpg.Pool], Awaitable[object]]
) -> None:
    error = await fails_in_time(run(pool), COMMAND_TIMEOUT)
    is_retryable_unavailable(error)

    deadline = time.monotonic() + PATIENCE
    while await sleepers(pool):  # asyncpg asks the server to cancel; it takes a moment
        assert time.monotonic() < deadline, "the timed-out statement still runs on the server"
        await asyncio.sleep(0.05)
    # Nothing of the timed-out transaction stays, and the pool answers as before.
    left = await pool.fetchval("SELECT count(*) FROM merchants WHERE merchant_id = 'MER_timeout'")
    assert left == 0
    assert await pool.fetchval("SELECT 1") == 1


async def test_a_quick_statement_is_not_affected(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT 1 FROM pg_sleep($1::float8 / 4)", COMMAND_TIMEOUT) == 1


# -- the acquire timeout ----------------------------------------------------------------------


async def acquire_with_async_with(pool: asyncpg.Pool) -> object:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT 1")


async def acquire_with_await(pool: asyncpg.Pool) -> object:
    conn = await pool.acquire()
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await pool.release(conn)


@pytest.mark.parametrize(
    "use",
    [
        lambda pool: pool.fetch("SELECT 1"),
        lambda pool: pool.fetchval("SELECT 1"),
        lambda pool: pool.fetchrow("SELECT 1"),
        lambda pool: pool.execute("SELECT 1"),
        acquire_with_async_with,
        acquire_with_await,
    ],
    ids=["fetch", "fetchval", "fetchrow", "execute", "async-with-acquire", "await-acquire"],
)
async def test_waiting_past_the_acquire_timeout_for_a_busy_pool_is_a_retryable_error(
    single: asyncpg.Pool, use: Callable[[asyncpg.Pool], Awaitable[object]]
) -> None:
    async with single.acquire() as held:
        error = await fails_in_time(use(single), ACQUIRE_TIMEOUT)
        is_retryable_unavailable(error)
        assert await held.fetchval("SELECT 1") == 1
    # Free again: the same call goes through.
    assert await asyncio.wait_for(use(single), PATIENCE) is not None


async def test_an_explicit_acquire_timeout_still_wins(single: asyncpg.Pool) -> None:
    async with single.acquire():
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout):
            async with single.acquire(timeout=0.05):
                pass
        assert time.monotonic() - started < ACQUIRE_TIMEOUT


# -- a database lost or out of reach ------------------------------------------------------------


async def superuser(server: ScratchServer) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=str(server.instance.socket_dir), port=server.port, user="postgres", database="postgres"
    )


async def end_sessions(admin: asyncpg.Connection, application_name: str) -> None:
    """What a database restart does to every open session of the pool."""
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        application_name,
    )


async def test_a_transaction_whose_connection_the_database_ends_is_a_retryable_error(
    database: Settings, postgres_server: ScratchServer
) -> None:
    name = "pool-tests-lost-transaction"
    lost = await create_pool(database, "orchestrator", name)
    admin = await superuser(postgres_server)

    async def cut_off_mid_transaction() -> None:
        async with lost.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO merchants (merchant_id, name, vpa) VALUES ($1, $1, $1)", "MER_lost"
            )
            await end_sessions(admin, name)
            await conn.execute("SELECT 1")

    try:
        with pytest.raises(DatabaseUnavailable) as info:
            await cut_off_mid_transaction()
        is_retryable_unavailable(info.value, "DATABASE_UNAVAILABLE")
        # Nothing of it committed. (Each idle connection the restart ended fails its next use
        # the same retryable way, then the pool has replaced it: retry, as a client does.)
        for _ in range(database.db_max_open_conns + 1):
            with contextlib.suppress(DatabaseUnavailable):
                left = await lost.fetchval(
                    "SELECT count(*) FROM merchants WHERE merchant_id = 'MER_lost'"
                )
                break
        assert left == 0
    finally:
        await admin.close()
        await lost.close()


async def test_a_connection_the_database_ends_mid_statement_is_a_retryable_error(
    pool: asyncpg.Pool, postgres_server: ScratchServer
) -> None:
    admin = await superuser(postgres_server)
    try:
        running = asyncio.create_task(
            pool.fetchval(f"SELECT pg_sleep({SLEEP_SECONDS})", timeout=30)
        )
        deadline = time.monotonic() + PATIENCE
        while not await sleepers(pool):
            assert time.monotonic() < deadline, "the statement never started"
            await asyncio.sleep(0.05)
        # What a database restart does to every open session.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()"
        )
        with pytest.raises(DatabaseUnavailable) as info:
            await asyncio.wait_for(running, PATIENCE)
    finally:
        await admin.close()
    is_retryable_unavailable(info.value, "DATABASE_UNAVAILABLE")
    # The pool replaces the lost connection by itself.
    assert await pool.fetchval("SELECT 1") == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # closed again on leaving: nothing listens there


@pytest.mark.parametrize(
    "use",
    [lambda pool: pool.fetchval("SELECT 1"), acquire_with_async_with, acquire_with_await],
    ids=["fetchval", "async-with-acquire", "await-acquire"],
)
async def test_a_database_that_refuses_connections_is_a_retryable_error(
    database: Settings, use: Callable[[asyncpg.Pool], Awaitable[object]]
) -> None:
    # No idle connections: the pool connects on first use, when the database is down.
    settings = database.model_copy(update={"db_port": closed_port(), "db_max_idle_conns": 0})
    unreachable = await create_pool(settings, "orchestrator", "pool-tests-unreachable")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            await asyncio.wait_for(use(unreachable), PATIENCE)
    finally:
        await unreachable.close()
    is_retryable_unavailable(info.value, "DATABASE_UNAVAILABLE")


async def statements_of_release(pool: asyncpg.Pool, work: str) -> list[str]:
    """The statements a pooled connection sends from `work` until it is back in the pool."""
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
        await conn.execute(work)
    return [q for q in sent if q != work]


async def test_a_connection_without_session_state_goes_back_without_a_reset(
    single: asyncpg.Pool,
) -> None:
    assert await statements_of_release(single, "SELECT 1") == []
    # A transaction left open is still rolled back on release.
    async with single.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TABLE IF NOT EXISTS left_open (n int)")
    async with single.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('left_open')") is None


@pytest.mark.parametrize(
    ("work", "left_behind"),
    [
        (
            "SELECT pg_try_advisory_lock(4242)",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ),
        ("LISTEN some_channel", "SELECT count(*) FROM pg_listening_channels()"),
        (
            "SET statement_timeout = 1234",
            "SELECT count(*) FROM pg_settings WHERE name = 'statement_timeout'"
            " AND setting = '1234'",
        ),
    ],
)
async def test_a_connection_with_session_state_is_reset_before_anyone_else_gets_it(
    single: asyncpg.Pool, work: str, left_behind: str
) -> None:
    assert await statements_of_release(single, work) != []
    async with single.acquire() as conn:
        assert await conn.fetchval(left_behind) == 0
    # ... and the reset is paid once, not by every later user of the connection.
    assert await statements_of_release(single, "SELECT 1") == []
