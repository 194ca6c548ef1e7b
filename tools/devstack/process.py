"""Child processes of the supervisor: their own process group, their own log, no orphans.

Each child leads a new session, so a terminal's Ctrl-C reaches only the supervisor (which then
stops children in order) and a signal to the group reaches every process a child started.
Each child also asks the kernel for a signal when the supervisor dies (PR_SET_PDEATHSIG), so
even a SIGKILLed supervisor or test run leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Resolved before any fork: the child only calls it.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a child as (PostgreSQL refuses to run as root)."""

    uid: int
    gid: int


class Child:
    """One long-lived or one-shot process of the stack, writing to its own log file."""

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log_path: Path, stop_signal: int
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        self._popen = popen

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path,
        stop_signal: int = signal.SIGTERM,
        death_signal: int | None = None,
        run_as: RunAs | None = None,
        append: bool = False,
    ) -> Child:
        """Start `argv` in a new session; must run on the thread that outlives the child.

        `death_signal` (default: `stop_signal`) is what the child gets if the supervisor dies:
        nobody is left then to SIGKILL a child that does not stop in time.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab" if append else "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                preexec_fn=_die_with_parent(death_signal or stop_signal, os.getpid()),
            )
        return cls(name, popen, log_path, stop_signal)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        """Exit code, or None while it runs."""
        return self._popen.poll()

    def signal_group(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self._popen.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


def stop_together(children: Iterable[Child], timeout: float) -> None:
    """Send each child its stop signal, give them `timeout` seconds together, then SIGKILL."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.signal_group(child.stop_signal)
    deadline = time.monotonic() + timeout
    for child in running:
        if child.wait(max(0.0, deadline - time.monotonic())) is None:
            child.signal_group(signal.SIGKILL)
            child.wait(5)
    for child in running:
        # Anything the child started and left behind in its group goes with it.
        child.signal_group(signal.SIGKILL)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent(sig: int, parent: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:
        _prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return set_parent_death_signal
