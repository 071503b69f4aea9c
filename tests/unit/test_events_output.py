"""What a person reads during `up`: each line names its resource once, with elapsed time; waits count down."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from stacklab.engine.events import Event, EventBus, JsonlSink, PlainSink, RichSink
from stacklab.exec.readiness import announce_wait


class Recorder:
    """A sink that keeps every event."""

    def __init__(self, seen: list[Event]) -> None:
        self.seen = seen

    def handle(self, event: Event) -> None:
        self.seen.append(event)

    def close(self) -> None:
        pass


def _plain(remind: float = 30.0) -> tuple[EventBus, PlainSink, io.StringIO]:
    stream = io.StringIO()
    bus = EventBus(run_id="t")
    sink = PlainSink(stream, remind=remind)
    bus.add_sink(sink)
    return bus, sink, stream


def test_a_progress_line_names_its_resource_once_with_elapsed_seconds() -> None:
    bus, sink, stream = _plain()
    bus.emit("step_start", resource="service/swift", action="create")
    bus.progress_for("service/swift")("service/swift: storage servers on storage1 (10.0.0.21)")
    bus.emit("step_end", resource="service/swift", action="create", outcome="ok", duration=1.5)
    sink.close()
    lines = stream.getvalue().splitlines()
    progress = next(line for line in lines if "storage servers" in line)
    assert progress.count("service/swift") == 1, progress
    assert progress.strip().startswith("[") and "s] service/swift: storage servers on storage1" in progress


def test_a_failed_steps_message_does_not_repeat_the_resource() -> None:
    bus, sink, stream = _plain()
    bus.emit("step_start", resource="node/n1", action="create")
    bus.emit("step_end", resource="node/n1", action="create", outcome="failed", duration=2, message="node/n1: boom")
    sink.close()
    assert "create node/n1 failed (2.0s): boom" in stream.getvalue()


def test_elapsed_is_counted_from_the_steps_start() -> None:
    stream = io.StringIO()
    sink = PlainSink(stream)
    sink.handle(Event("step_start", "t", ts=100.0, resource="ceph/lab", action="create"))
    sink.handle(Event("step_progress", "t", ts=142.5, resource="ceph/lab", message="monitors"))
    assert "[  42.5s] ceph/lab: monitors" in stream.getvalue()


def test_a_wait_announced_from_the_steps_thread_shows_its_budget_and_counts_down() -> None:
    bus, sink, stream = _plain(remind=0.05)
    seen: list[Event] = []

    bus.add_sink(Recorder(seen))

    def step() -> None:  # the engine runs each step in a worker thread that emits its step_start
        bus.emit("step_start", resource="service/cinder", action="create")
        announce_wait("cinder-volume to report lab@rbd", 120.0)
        time.sleep(0.3)
        bus.emit("step_end", resource="service/cinder", action="create", outcome="ok", duration=0.3)

    worker = threading.Thread(target=step)
    worker.start()
    worker.join()
    announce_wait("nothing: no step runs in this thread", 5.0)  # outside a step: no event
    text = stream.getvalue()
    sink.close()
    assert "service/cinder: waiting for cinder-volume to report lab@rbd (budget 120s)" in text
    reminders = [line for line in text.splitlines() if "still waiting for cinder-volume" in line]
    assert reminders and all("s of 120s budget left" in line for line in reminders)
    # the countdown goes down (or stays, within a second's rounding), never up
    lefts = [int(line.rsplit("(", 1)[1].split("s of")[0]) for line in reminders]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] <= 120
    assert [e.budget for e in seen if e.type == "step_progress"] == [120.0]
    # after the step ends no more reminders are written
    size = len(stream.getvalue())
    time.sleep(0.15)
    assert len(stream.getvalue()) == size


def test_a_budget_in_a_drivers_message_is_recorded_as_a_wait(tmp_path: Path) -> None:
    bus = EventBus(run_id="t")
    bus.add_sink(JsonlSink(tmp_path / "events.jsonl"))
    bus.emit("step_start", resource="node/n1", action="create")
    bus.progress_for("node/n1")("waiting for n1: cloud-init (budget 240s)")
    bus.close()
    rows = (tmp_path / "events.jsonl").read_text().splitlines()
    assert '"budget": 240.0' in rows[-1] and '"message": "waiting for n1: cloud-init (budget 240s)"' in rows[-1]


def test_the_terminal_view_shows_the_budget_left() -> None:
    stream = io.StringIO()
    sink = RichSink(stream)
    sink.handle(Event("step_start", "t", resource="ceph/lab", action="create"))
    sink.handle(Event("step_progress", "t", resource="ceph/lab", message="waiting for HEALTH_OK", budget=300.0))
    sink.progress.refresh()
    sink.close()
    assert "of 300s budget left" in stream.getvalue()


def test_cephs_waiter_says_what_it_waits_on_and_the_budget_left() -> None:
    from stacklab.drivers.storage.ceph.cluster import Waiter

    bus, sink, stream = _plain()
    now = [1000.0]
    seen = iter([(False, "HEALTH_WARN: 1 osds down"), (False, "HEALTH_WARN: 1 osds down"), (True, "HEALTH_OK")])
    waiter = Waiter(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s), interval=5.0)

    def step() -> None:
        bus.emit("step_start", resource="ceph/lab", action="create")
        waiter.until("HEALTH_OK", 300.0, lambda: next(seen), resource="ceph/lab", hint="")
        bus.emit("step_end", resource="ceph/lab", action="create", outcome="ok", duration=10)

    worker = threading.Thread(target=step)
    worker.start()
    worker.join()
    sink.close()
    waits = [line for line in stream.getvalue().splitlines() if "waiting for" in line]
    # one line per new observation (the repeated HEALTH_WARN is not said twice), with the budget left then
    assert len(waits) == 1 and "ceph/lab: waiting for HEALTH_OK (now: HEALTH_WARN: 1 osds down)" in waits[0]
    assert "(budget 300s)" in waits[0]


def test_an_image_builds_budget_is_parsed_from_its_progress_message() -> None:
    bus = EventBus(run_id="t")
    seen: list[Event] = []
    bus.add_sink(Recorder(seen))
    bus.emit("step_start", resource="image/base", action="create")
    bus.progress_for("image/base")("image debian-12-base: mmdebstrap bookworm (12 packages requested, budget 1800s)")
    bus.progress_for("image/base")("image debian-12-base: building, 80 packages installed, 30s (budget 1770s)")
    assert [e.budget for e in seen if e.type == "step_progress"] == [1800.0, 1770.0]
