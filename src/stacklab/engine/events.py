"""The event stream of a run: every phase and step with start, end, duration and outcome.

Sinks: a JSONL log per run (the basis of our benchmarks), plain lines when stderr is not a TTY, and a rich
live view on a terminal.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol


@dataclass(frozen=True)
class Event:
    type: str  # run_start run_end phase_start phase_end step_start step_progress step_end note
    run: str
    ts: float = field(default_factory=time.time)
    phase: str | None = None
    resource: str | None = None
    action: str | None = None
    outcome: str | None = None  # ok failed skipped
    duration: float | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...
    def close(self) -> None: ...


class EventBus:
    def __init__(self, *, run_id: str | None = None) -> None:
        self.run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, type: str, **fields: Any) -> None:
        event = Event(type=type, run=self.run_id, **fields)
        with self._lock:
            for sink in self._sinks:
                sink.handle(event)

    def note(self, message: str) -> None:
        self.emit("note", message=message)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.emit("phase_start", phase=name)
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            self.emit("phase_end", phase=name, outcome=outcome, duration=round(time.monotonic() - start, 4))

    def progress_for(self, resource: str) -> Callable[[str], None]:
        return lambda message: self.emit("step_progress", resource=resource, message=message)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()


class JsonlSink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("a", buffering=1)

    def handle(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_json(), sort_keys=True) + "\n")

    def close(self) -> None:
        self._file.close()


def _describe(event: Event) -> str | None:
    if event.type == "phase_start":
        return f"== {event.phase}"
    if event.type == "phase_end" and event.outcome != "ok":
        return f"== {event.phase} {event.outcome} after {event.duration:.1f}s"
    if event.type == "step_start":
        return f"   {event.action} {event.resource} ..."
    if event.type == "step_progress":
        return f"   {event.resource}: {event.message}"
    if event.type == "step_end":
        tail = f": {event.message}" if event.message else ""
        return f"   {event.action} {event.resource} {event.outcome} ({event.duration or 0:.1f}s){tail}"
    if event.type == "note":
        return f"   {event.message}"
    return None


class PlainSink:
    """One line per event, for logs and CI (no colours, no cursor movement)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def handle(self, event: Event) -> None:
        line = _describe(event)
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class RichSink:
    """A live progress view on a terminal: one spinner line per running step, a mark when it ends."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def handle(self, event: Event) -> None:
        if event.type == "phase_start":
            self.console.print(f"[bold]== {event.phase}[/bold]")
        elif event.type == "step_start" and event.resource:
            self.tasks[event.resource] = self.progress.add_task(f"{event.action} {event.resource}", total=None)
        elif event.type == "step_progress" and event.resource in self.tasks:
            self.progress.update(self.tasks[event.resource], description=f"{event.resource}: {event.message}")
        elif event.type == "step_end" and event.resource in self.tasks:
            task = self.tasks.pop(event.resource)
            mark = {"ok": "[green]✓[/green]", "failed": "[red]✗[/red]"}.get(event.outcome or "", "[yellow]-[/yellow]")
            tail = f": {event.message}" if event.message else ""
            self.progress.update(
                task,
                description=f"{mark} {event.action} {event.resource} ({event.duration or 0:.1f}s){tail}",
                total=1,
                completed=1,
            )
            self.progress.stop_task(task)
        elif event.type == "note":
            self.console.print(f"   {event.message}")

    def close(self) -> None:
        self.progress.stop()
