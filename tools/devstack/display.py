"""What the stack is doing, for people: one line per component, and how to use it once up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn

State = Literal["starting", "ready", "external", "skipped", "failed", "exited", "stopped"]
_MARKS: dict[str, str] = {
    "starting": " ",
    "ready": "[green]✓[/]",
    "external": "[cyan]↗[/]",
    "skipped": "[yellow]![/]",
    "failed": "[red]✗[/]",
    "exited": "[red]✗[/]",
    "stopped": "[dim]·[/]",
}


@dataclass
class Component:
    name: str
    detail: str  # where it listens or what it runs
    state: State = "starting"
    seconds: float | None = None  # how long it took to become ready
    pid: int | None = None
    note: str = ""

    @property
    def summary(self) -> str:
        took = f" in {self.seconds:.2f} s" if self.seconds is not None else ""
        note = escape(self.note)
        texts: dict[str, str] = {
            "starting": "starting…",
            "ready": f"ready{took}",
            "external": f"[cyan]external, answering{took}[/]",
            "skipped": f"[yellow]skipped: {note}[/]",
            "failed": f"[red]failed: {note}[/]" if note else "[red]failed[/]",
            "exited": f"[red]exited: {note}[/]",
            "stopped": "[dim]stopped[/]",
        }
        return texts[self.state]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Component:
        return cls(**data)


class StatusView:
    """A live line per component on a terminal; a plain line per change anywhere else."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._shown: dict[str, str] = {}
        if console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(finished_text=""),
                TextColumn("{task.fields[mark]}"),
                TextColumn("[bold]{task.fields[name]:<18}"),
                TextColumn("{task.fields[detail]:<34}"),
                TextColumn("{task.description}"),
                console=console,
            )
            self._progress.start()

    def update(self, components: Iterable[Component]) -> None:
        for component in components:
            mark = _MARKS[component.state]
            done = component.state != "starting"
            if self._progress is None:
                line = f"{mark} {component.name:<18} {component.detail:<34} {component.summary}"
                if self._shown.get(component.name) != line:
                    self._shown[component.name] = line
                    self._console.print(line, highlight=False, soft_wrap=True)
                continue
            task = self._tasks.get(component.name)
            if task is None:
                task = self._progress.add_task(
                    component.summary,
                    total=1,
                    name=component.name,
                    detail=component.detail,
                    mark="",
                )
                self._tasks[component.name] = task
            self._progress.update(
                task, description=component.summary, mark=mark, completed=1 if done else 0
            )

    def note(self, text: str) -> None:
        """A line above the live display (or in sequence with the plain lines)."""
        self._console.print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def print_ready(
    console: Console, gateway_url: str, logs_dir: str, *, background: bool, mail_dir: str = ""
) -> None:
    """How to use the stack that is now up."""
    stop = "make down" if background else "Ctrl-C"
    mail = f"  mail:         {mail_dir}  (every email sent, one file each)\n" if mail_dir else ""
    console.print(
        f"\n[bold green]The gateway is up:[/] {gateway_url}  (REST and gRPC)\n"
        "  admin token:  [bold]make token MERCHANT=admin ROLE=admin[/]\n"
        f"  logs:         {logs_dir}\n"
        f"{mail}"
        f"  stop:         {stop}",
        highlight=False,
    )
