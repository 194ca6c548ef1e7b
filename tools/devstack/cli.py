"""`python -m devstack run|up|down|status`: the local stack from the command line.

`run` is the supervisor: it starts everything in the foreground and stops it all on Ctrl-C or
SIGTERM. `up` starts a `run` in the background (its own session, output in
`<state>/logs/supervisor.log`) and returns once the gateway is ready; `down` sends that
supervisor SIGTERM and waits until everything is gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape

from devstack.config import DEFAULT_STATE_DIR
from devstack.display import Component, StatusView, print_ready
from devstack.process import pid_alive, tail
from devstack.stack import (
    PID_FILE,
    Stack,
    StackError,
    read_state,
    running_pid,
)
from gateway_core.services import REPO_ROOT

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The supervisor's own stop is bounded (drain + per-tier timeouts); this is a backstop.
DOWN_PATIENCE_S = 90.0
# After a killed supervisor, how long its children get to act on their parent-death signal.
STRAGGLER_PATIENCE_S = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: .stack/"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "start the stack in the foreground (Ctrl-C stops it)"),
        ("up", "start the stack in the background and wait until it is ready"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--ephemeral", action="store_true", help="free ports instead of the fixed ones"
        )
        command.add_argument("--no-seed", action="store_true", help="skip the demo data")
        command.add_argument(
            "--production",
            action="store_true",
            help="APP_ENV=production: refuse development secrets, no demo data",
        )
    commands.add_parser("down", help="stop the background stack")
    commands.add_parser("status", help="show what the stack runs")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    console = Console()
    if args.command in ("run", "up"):
        # Demo data is a local convenience: a production stack starts without it.
        seed = not (args.no_seed or args.production)
        start = run if args.command == "run" else up
        return start(
            console, state_dir, ephemeral=args.ephemeral, seed=seed, production=args.production
        )
    if args.command == "down":
        return down(console, state_dir)
    return status(console, state_dir)


def run(
    console: Console, state_dir: Path, *, ephemeral: bool, seed: bool, production: bool = False
) -> int:
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    try:
        stack = Stack(
            state_dir,
            ports="ephemeral" if ephemeral else "fixed",
            seed=seed,
            production=production,
        )
        stack.start(progress=True)
    except StackError as exc:
        console.print(
            f"[bold red]The stack did not start:[/] {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    except KeyboardInterrupt:
        console.print("interrupted: everything started so far is stopped")
        return 130
    try:
        print_ready(
            console,
            stack.gateway_url,
            str(stack.logs_dir),
            background=False,
            mail_dir=str(stack.mail_dir or ""),
        )
        while True:
            time.sleep(0.5)
            for component in stack.exited():
                _report_death(console, component, stack.logs_dir)
    except KeyboardInterrupt:
        pass
    with ignoring_signals(*STOP_SIGNALS):
        console.print("stopping…")
        started = time.monotonic()
        stack.stop()
        console.print(f"stopped in {time.monotonic() - started:.1f} s")
    return 0


def up(
    console: Console, state_dir: Path, *, ephemeral: bool, seed: bool, production: bool = False
) -> int:
    holder = running_pid(state_dir)
    if holder is not None:
        console.print(f"already running (supervisor pid {holder})")
        return status(console, state_dir)
    log = state_dir / "logs" / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "devstack", "--state-dir", str(state_dir), "run"]
    argv += ["--ephemeral"] if ephemeral else []
    argv += [] if seed else ["--no-seed"]
    argv += ["--production"] if production else []
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the terminal's session: no SIGHUP on logout
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
    view = StatusView(console)
    started = time.monotonic()
    try:
        while True:
            state = read_state(state_dir)
            if state is not None and state.get("pid") == supervisor.pid:
                view.update(Component.from_json(c) for c in state["components"])
                if state["phase"] == "ready":
                    view.close()
                    console.print(f"up in {time.monotonic() - started:.1f} s")
                    print_ready(
                        console,
                        state["gateway_url"],
                        state["logs_dir"],
                        background=True,
                        mail_dir=state.get("mail_dir", ""),
                    )
                    return 0
            if supervisor.poll() is not None:
                view.close()
                console.print(f"[bold red]The stack did not start.[/] Last lines of {log}:")
                console.print(tail(log), highlight=False, markup=False)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        view.close()
        console.print("interrupted: stopping the background stack")
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait()
        return 130


def down(console: Console, state_dir: Path) -> int:
    pid = running_pid(state_dir)
    if pid is None:
        console.print("not running")
        (state_dir / PID_FILE).unlink(missing_ok=True)
        return 0
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    with console.status(f"stopping the stack (supervisor pid {pid})…"):
        while pid_alive(pid) and time.monotonic() - started < DOWN_PATIENCE_S:
            time.sleep(0.1)
    if pid_alive(pid):
        # Its children get their stop signal from the kernel when it dies (PR_SET_PDEATHSIG).
        os.kill(pid, signal.SIGKILL)
        console.print(f"[red]the supervisor did not stop in {DOWN_PATIENCE_S:.0f} s: killed[/]")
    components = (read_state(state_dir) or {}).get("components", [])
    deadline = time.monotonic() + STRAGGLER_PATIENCE_S
    while leftovers := [c["name"] for c in components if _alive(c.get("pid"))]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if leftovers:
        console.print(f"[bold red]still running after stop:[/] {', '.join(leftovers)}")
        return 1
    console.print(f"stopped in {time.monotonic() - started:.1f} s")
    return 0


def status(console: Console, state_dir: Path) -> int:
    pid = running_pid(state_dir)
    state = read_state(state_dir)
    if pid is None or state is None:
        console.print("not running")
        return 3
    console.print(f"supervisor pid {pid}: {state['phase']} ({state['ports']} ports)")
    components = [Component.from_json(c) for c in state["components"]]
    for component in components:
        dead = component.pid is not None and not _alive(component.pid)
        mark = "[red]✗ not running[/]" if dead and component.state == "ready" else component.summary
        pid_text = f"pid {component.pid}" if component.pid else ""
        console.print(
            f"  {component.name:<18} {component.detail:<34} {pid_text:<10} {mark}",
            highlight=False,
            soft_wrap=True,
        )
    for warning in state.get("warnings", []):
        console.print(f"  [yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if state["phase"] == "ready":
        print_ready(
            console,
            state["gateway_url"],
            state["logs_dir"],
            background=True,
            mail_dir=state.get("mail_dir", ""),
        )
    unhealthy = any(c.state in ("exited", "failed") for c in components)
    return 1 if unhealthy else 0


def _report_death(console: Console, component: Component, logs_dir: Path) -> None:
    log = logs_dir / f"{component.name}.log"
    console.rule(f"[bold red]{component.name} DIED")
    console.print(f"{component.note}; its last lines:", markup=False, soft_wrap=True)
    console.print(tail(log), highlight=False, markup=False, soft_wrap=True)
    console.rule("[bold red]the rest keeps running (Ctrl-C or `make down` stops it)")


@contextmanager
def ignoring_signals(*signals: signal.Signals) -> Iterator[None]:
    """Let a stop run to the end: a second Ctrl-C must not leave half the stack running."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and pid_alive(pid)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
