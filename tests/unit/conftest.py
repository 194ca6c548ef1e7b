"""Real servers shared by the service-level tests in this folder.

One PostgreSQL per test session (started the way the local stack starts it: as an
unprivileged user when we are root), and a fresh role and database per test module, so
modules never see each other's rows.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator

import pytest

from devstack import postgres
from devstack.postgres import ScratchServer
from devstack.process import Child, stop_together

START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchServer]:
    state = tmp_path_factory.mktemp("postgres")
    instance = postgres.prepare(state)

    def spawn(name: str, argv: list[str], stop_signal: int = signal.SIGTERM) -> Child:
        return Child.spawn(
            name,
            argv,
            log_path=state / "postgres.log",
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            cwd=instance.home,
            run_as=instance.run_as,
            append=True,
            stop_signal=stop_signal,
        )

    initdb = spawn("initdb", instance.initdb_argv(fast=True))
    if initdb.wait(START_SECONDS) != 0:
        instance.discard()
        pytest.fail(f"initdb failed:\n{initdb.log_tail()}", pytrace=False)
    port = free_port()
    # SIGINT is PostgreSQL's fast shutdown.
    server = spawn("postgres", instance.server_argv(port, fast=True), stop_signal=signal.SIGINT)
    try:
        yield ScratchServer(instance, port, server)
    finally:
        stop_together([server], timeout=10)
        instance.discard()
