"""The event stream of a run: every phase and step with start, end, duration and outcome.

Sinks: a JSONL log per run (the basis of our benchmarks), plain lines when stderr is not a TTY, and a rich
live view on a terminal.

What a person reads: each progress line names its resource once (a driver's "service/swift: rings ..." is
said as "service/swift: rings ..." with the prefix not repeated) with the seconds since its step started, and a
wait says what it waits for and its budget, counting down while it lasts: a progress message ending in
"(budget 240s)" starts one, and so does `exec.readiness.announce_wait` (Ceph's waiter calls it) from the
thread that runs the step: the bus binds that thread's announcer at step_start and unbinds it at step_end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from stacklab.exec.readiness import set_wait_announcer


@dataclass(frozen=True)
class Event:
    type: str  # run_start run_end phase_start phase_end step_start step_progress step_end note observed
    run: str
    ts: float = field(default_factory=time.time)
    phase: str | None = None
    resource: str | None = None
    action: str | None = None
    outcome: str | None = None  # ok failed skipped; `observed`: found absent failed
    duration: float | None = None
    message: str | None = None
    budget: float | None = None  # step_progress of a wait: seconds it may take from `ts`

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...
    def close(self) -> None: ...


_BUDGET = re.compile(r"\bbudget (\d+(?:\.\d+)?)s\)\s*$")  # "... (budget 240s)" or "(12 packages, budget 1800s)"
# The step each worker thread runs, so a wait deep in a driver can report itself: (bus, resource id).
_CURRENT = threading.local()


def own_words(resource: str, message: str) -> str:
    """`message` without a leading "<resource>: " (drivers often start with their id; the line says it already)."""
    prefix = f"{resource}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


class EventBus:
    def __init__(self, *, run_id: str | None = None) -> None:
        self.run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, type: str, **fields: Any) -> None:
        event = Event(type=type, run=self.run_id, **fields)
        if type == "step_start" and event.resource:
            _CURRENT.step = (self, event.resource)  # the engine emits step_start/step_end in the step's thread
            set_wait_announcer(functools.partial(self._announce_wait, event.resource))
        elif type == "step_end" and getattr(_CURRENT, "step", None) == (self, event.resource):
            _CURRENT.step = None
            set_wait_announcer(None)
        with self._lock:
            for sink in self._sinks:
                sink.handle(event)

    def _announce_wait(self, resource: str, what: str, budget: float) -> None:
        self.emit("step_progress", resource=resource, message=f"waiting for {what}", budget=budget)

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
        def progress(message: str) -> None:
            text = own_words(resource, message)
            match = _BUDGET.search(text)
            self.emit("step_progress", resource=resource, message=text, budget=float(match[1]) if match else None)

        return progress

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


def _budget_left(budget: float, since: float, now: float) -> str:
    return f"{max(0.0, budget - (now - since)):.0f}s of {budget:g}s budget left"


class _Steps:
    """Start times of running steps and their current waits, to say "[12.3s]" and "180s of 240s budget left"."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.waits: dict[str, Event] = {}  # resource -> its step_progress event with a budget

    def track(self, event: Event) -> None:
        resource = event.resource or ""
        if event.type == "step_start":
            self.started[resource] = event.ts
        elif event.type == "step_progress":
            if event.budget is not None:
                self.waits[resource] = event
            else:
                self.waits.pop(resource, None)
        elif event.type == "step_end":
            self.started.pop(resource, None)
            self.waits.pop(resource, None)

    def elapsed(self, event: Event) -> float:
        return event.ts - self.started.get(event.resource or "", event.ts)


def _describe(event: Event, elapsed: float = 0.0) -> str | None:
    if event.type == "phase_start":
        return f"== {event.phase}"
    if event.type == "phase_end" and event.outcome != "ok":
        return f"== {event.phase} {event.outcome} after {event.duration:.1f}s"
    if event.type == "step_start":
        return f"   {event.action} {event.resource} ..."
    if event.type == "step_progress":
        return f"   [{elapsed:6.1f}s] {event.resource}: {event.message}"
    if event.type == "step_end":
        tail = f": {own_words(event.resource or '', event.message)}" if event.message else ""
        return f"   {event.action} {event.resource} {event.outcome} ({event.duration or 0:.1f}s){tail}"
    if event.type == "note":
        return f"   {event.message}"
    return None


class PlainSink:
    """One line per event, for logs and CI (no colours, no cursor movement).

    While a step waits with a budget, a line every `remind` seconds says it still waits and how much budget is
    left, so a log shows a slow Ceph or cinder wait as it happens rather than only when it fails.
    """

    def __init__(self, stream: IO[str], *, remind: float = 30.0) -> None:
        self.stream = stream
        self.remind = remind
        self._steps = _Steps()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def handle(self, event: Event) -> None:
        with self._lock:
            self._steps.track(event)
            line = _describe(event, self._steps.elapsed(event))
            if line and event.budget is not None:
                line += "" if _BUDGET.search(event.message or "") else f" (budget {event.budget:g}s)"
            if line:
                self._write(line)
            if self._steps.waits and self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="stacklab-wait-reminder", daemon=True)
                self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.remind):
            now = time.time()
            with self._lock:
                for resource, wait in list(self._steps.waits.items()):
                    if now - wait.ts >= self.remind:
                        elapsed = now - self._steps.started.get(resource, wait.ts)
                        left = _budget_left(wait.budget or 0.0, wait.ts, now)
                        self._write(f"   [{elapsed:6.1f}s] {resource}: still {wait.message} ({left})")

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)


class RichSink:
    """A live progress view on a terminal: one spinner line per running step, a mark when it ends.

    Columns: spinner, what the step does now, the budget left of its current wait (counting down), elapsed.
    """

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class BudgetColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                wait = task.fields.get("wait")
                if not isinstance(wait, Event) or wait.budget is None or task.finished:
                    return Text("")
                return Text(_budget_left(wait.budget, wait.ts, time.time()), style="yellow")

        self.console = Console(file=stream)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BudgetColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def handle(self, event: Event) -> None:
        from rich.markup import escape

        if event.type == "phase_start":
            self.console.print(f"[bold]== {escape(event.phase or '')}[/bold]")
        elif event.type == "step_start" and event.resource:
            self.tasks[event.resource] = self.progress.add_task(f"{event.action} {event.resource}", total=None)
        elif event.type == "step_progress" and event.resource in self.tasks:
            self.progress.update(
                self.tasks[event.resource],
                description=escape(f"{event.resource}: {event.message}"),
                wait=event if event.budget is not None else None,
            )
        elif event.type == "step_end" and event.resource in self.tasks:
            task = self.tasks.pop(event.resource)
            mark = {"ok": "[green]✓[/green]", "failed": "[red]✗[/red]"}.get(event.outcome or "", "[yellow]-[/yellow]")
            tail = f": {own_words(event.resource or '', event.message)}" if event.message else ""
            self.progress.update(
                task,
                description=f"{mark} " + escape(f"{event.action} {event.resource} ({event.duration or 0:.1f}s){tail}"),
                total=1,
                completed=1,
                wait=None,
            )
            self.progress.stop_task(task)
        elif event.type == "note":
            self.console.print(f"   {escape(event.message or '')}")

    def close(self) -> None:
        self.progress.stop()
