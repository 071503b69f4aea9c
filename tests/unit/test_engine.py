"""Engine behaviour with fake drivers: ordering, failure mid-apply, resume, idempotence, lock, down."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.base import BaseDriver, DriverContext
from stacklab.engine.core import Engine
from stacklab.engine.events import EventBus, JsonlSink
from stacklab.engine.state import StateStore, lab_lock
from stacklab.errors import LockedError, PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.plan.resource import Action, Change, Observed, Resource

LAB = """
name: fake-lab
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.250.1.0/24}
  storage: {bridge: br-storage, cidr: 10.250.2.0/24}
images:
  base: {recipe: debian-12-base}
nodes:
  a: {image: base, nics: [mgmt, storage]}
  b: {image: base, nics: [mgmt, storage]}
"""


class World:
    """A pretend host shared by the fake drivers: id -> spec hash of what 'exists'."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}
        self.foreign: set[str] = set()
        self.fail_on: set[str] = set()
        self.log: list[str] = []
        self.lock = threading.Lock()


class FakeDriver(BaseDriver):
    def __init__(self, kind: str, world: World) -> None:
        self.kind = kind
        self.world = world
        self.updatable = frozenset({"mtu"})

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        if resource.id in self.world.foreign:
            return Observed(owned=False)
        return Observed(facts={"hash": self.world.objects[resource.id]}) if resource.id in self.world.objects else None

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        for dep in change.resource.deps:  # dependencies are applied and their outputs readable
            assert ctx.output(dep, "made") is True
        if change.id in self.world.fail_on:
            raise RuntimeError(f"boom in {change.id}")
        with self.world.lock:
            self.world.objects[change.id] = change.resource.hash
            self.world.log.append(f"{change.action.value} {change.id}")
        return {"made": True}

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        with self.world.lock:
            self.world.objects.pop(resource_id, None)
            self.world.log.append(f"delete {resource_id}")


@pytest.fixture
def world() -> World:
    return World()


def make_engine(tmp_path: Path, world: World, text: str = LAB) -> Engine:
    lab = load_lab_text_fake(text)
    drivers = {k: FakeDriver(k, world) for k in ("bridge", "sshkey", "image", "node")}
    bus = EventBus(run_id="test")
    bus.add_sink(JsonlSink(tmp_path / "events.jsonl"))
    return Engine(lab, state_root=tmp_path / "state", runner=FakeRunner(), bus=bus, drivers=drivers)


def load_lab_text_fake(text: str) -> Any:
    from stacklab.model.load import load_lab_text

    return load_lab_text(text, "fake.yml")


def test_first_up_creates_everything_in_dependency_order(tmp_path: Path, world: World) -> None:
    engine = make_engine(tmp_path, world)
    plan = engine.plan()
    assert plan.summary()["create"] == 6
    result = engine.apply(plan)
    assert result.ok, result.failed
    order = [line.split()[1] for line in world.log]
    assert order.index("bridge/mgmt") < order.index("node/a")
    assert order.index("image/base") < order.index("node/b")
    assert set(engine.state.resources) == set(world.objects)


def test_second_up_plans_zero_changes(tmp_path: Path, world: World) -> None:
    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    again = make_engine(tmp_path, world).plan()
    assert again.is_empty
    assert again.summary()["noop"] == 6


def test_failure_mid_apply_keeps_state_skips_dependents_and_resume_finishes(tmp_path: Path, world: World) -> None:
    world.fail_on = {"image/base"}
    engine = make_engine(tmp_path, world)
    result = engine.apply(engine.plan())
    assert [f.id for f in result.failed] == ["image/base"]
    assert set(result.skipped) == {"node/a", "node/b"}
    assert all("image/base failed" in why for why in result.skipped.values())
    # What succeeded is recorded; nodes were never started.
    state = StateStore(tmp_path / "state", "fake-lab")
    assert set(state.resources) == {"bridge/mgmt", "bridge/storage", "sshkey/fake-lab"}
    assert "node/a" not in world.objects
    # Resume: only what is missing gets done.
    world.fail_on = set()
    world.log.clear()
    engine = make_engine(tmp_path, world)
    plan = engine.plan()
    assert sorted(c.id for c in plan.actionable) == ["image/base", "node/a", "node/b"]
    assert engine.apply(plan).ok
    assert make_engine(tmp_path, world).plan().is_empty


def test_object_lost_on_host_is_recreated(tmp_path: Path, world: World) -> None:
    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    del world.objects["node/b"]
    plan = make_engine(tmp_path, world).plan()
    assert [(c.id, c.action, c.reasons) for c in plan.actionable] == [
        ("node/b", Action.CREATE, ("recorded in state but missing on the host",))
    ]


def test_spec_change_updates_or_replaces(tmp_path: Path, world: World) -> None:
    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    changed = LAB.replace(
        "storage: {bridge: br-storage, cidr: 10.250.2.0/24}",
        "storage: {bridge: br-storage, cidr: 10.250.2.0/24, mtu: 9000}",
    )
    plan = make_engine(tmp_path, world, changed).plan()
    actions = {c.id: c.action for c in plan.actionable}
    assert actions["bridge/storage"] is Action.UPDATE  # mtu is updatable in place
    assert actions["node/a"] is Action.REPLACE  # the NIC's mtu is part of the node spec
    result = make_engine(tmp_path, world, changed).apply(plan)
    assert result.ok
    assert "delete node/a" in world.log
    assert make_engine(tmp_path, world, changed).plan().is_empty


def test_removed_resource_is_deleted(tmp_path: Path, world: World) -> None:
    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    smaller = LAB.replace("  b: {image: base, nics: [mgmt, storage]}\n", "")
    plan = make_engine(tmp_path, world, smaller).plan()
    assert [(c.id, c.action) for c in plan.deletions] == [("node/b", Action.DELETE)]
    assert make_engine(tmp_path, world, smaller).apply(plan).ok
    assert "node/b" not in world.objects


def test_foreign_object_is_a_plan_error_and_nothing_changes(tmp_path: Path, world: World) -> None:
    world.foreign = {"bridge/mgmt"}
    engine = make_engine(tmp_path, world)
    with pytest.raises(PlanError, match="not owned by this lab"):
        engine.plan()
    assert world.log == []


def test_down_deletes_in_reverse_order_everything_recorded(tmp_path: Path, world: World) -> None:
    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    world.log.clear()
    result = make_engine(tmp_path, world).destroy()
    assert result.ok
    order = [line.split()[1] for line in world.log]
    assert order.index("node/a") < order.index("bridge/mgmt")
    assert order.index("node/b") < order.index("image/base")
    assert world.objects == {}
    assert StateStore(tmp_path / "state", "fake-lab").resources == {}


def test_down_after_partial_up_removes_only_what_was_made(tmp_path: Path, world: World) -> None:
    world.fail_on = {"sshkey/fake-lab"}
    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    world.log.clear()
    assert make_engine(tmp_path, world).destroy().ok
    assert sorted(world.log) == ["delete bridge/mgmt", "delete bridge/storage", "delete image/base"]


def test_lock_refuses_a_second_run(tmp_path: Path) -> None:
    with (
        lab_lock(tmp_path / "lab"),
        pytest.raises(LockedError, match="locked by another stacklab run"),
        lab_lock(tmp_path / "lab"),
    ):
        pass
    with lab_lock(tmp_path / "lab"):  # released after the first exits
        pass


def test_event_log_has_timed_steps(tmp_path: Path, world: World) -> None:
    import json

    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ends = [e for e in events if e["type"] == "step_end"]
    assert len(ends) == 6
    assert all(e["outcome"] == "ok" and e["duration"] >= 0 for e in ends)
    assert {e["phase"] for e in events if e["type"] == "phase_end"} >= {"observe", "apply"}


def test_down_does_not_clean_inside_a_vm_that_goes_in_the_same_run(tmp_path: Path, world: World) -> None:
    """What lives in a VM node goes with its disk: `down` asks no runner for it (a container is still cleaned)."""
    lab = LAB.replace("a: {image: base", "a: {kind: vm, image: base").replace("b: {image", "b: {kind: container, image")
    engine = make_engine(tmp_path, world, lab)
    engine.apply(engine.plan())
    asked: dict[str, object] = {}

    class Inside(FakeDriver):  # a resource on each node whose delete wants the node's runner
        def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
            node = resource_id.split("/", 1)[1]
            asked[node] = ctx.node_for_delete(resource_id, node, "it goes")

    engine = make_engine(tmp_path, world, lab)
    for node in ("a", "b"):
        engine.state.record(Resource("inside", node, {}, (f"node/{node}",)), {"made": True})
    assert engine._drivers is not None
    engine._drivers["inside"] = Inside("inside", world)
    engine.ctx = dataclasses.replace(engine.ctx, node_runner=lambda node: FakeRunner())  # every node is up
    assert engine.destroy().ok
    assert asked["a"] is None  # the VM: skipped, it goes with its disk
    assert isinstance(asked["b"], FakeRunner)  # the container shares the host's kernel: cleaned from inside
    assert engine.state.resources == {}


# -- observe: every resource at once, timed, drift still found ---------------------------------------------------
WIDE_LAB = LAB + "".join(f"  {n}: {{image: base, nics: [mgmt, storage]}}\n" for n in "cdefgh")  # 12 resources


def test_observe_runs_every_resource_at_once(tmp_path: Path, world: World) -> None:
    """A no-op `up` waits for its slowest observe, not for the queue: 12 observes that each wait until all 12 are
    running pass only when the engine runs them side by side (DEFAULT_WORKERS at a time would break the barrier)."""
    engine = make_engine(tmp_path, world, WIDE_LAB)
    engine.apply(engine.plan())
    barrier = threading.Barrier(12, timeout=10)

    class Waiting(FakeDriver):
        def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
            barrier.wait()
            return super().observe(resource, ctx)

    engine = make_engine(tmp_path, world, WIDE_LAB)
    engine._drivers = {k: Waiting(k, world) for k in ("bridge", "sshkey", "image", "node")}
    assert engine.workers < 12
    plan = engine.plan()
    assert plan.is_empty and plan.summary()["noop"] == 12
    assert not barrier.broken


def test_observe_at_once_still_plans_drift(tmp_path: Path, world: World) -> None:
    """Observing side by side changes nothing in what is found: a lost node is created, a stopped one updated,
    the other ten stay unchanged."""

    class Drifting(FakeDriver):
        def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
            found = super().observe(resource, ctx)
            if found is not None and self.world.objects[resource.id] == "stopped by hand":
                return dataclasses.replace(found, drift=("stopped",))
            return found

    engine = make_engine(tmp_path, world, WIDE_LAB)
    engine.apply(engine.plan())
    del world.objects["node/c"]
    world.objects["node/f"] = "stopped by hand"
    engine = make_engine(tmp_path, world, WIDE_LAB)
    engine._drivers = {k: Drifting(k, world) for k in ("bridge", "sshkey", "image", "node")}
    plan = engine.plan()
    assert {c.id: (c.action, c.reasons) for c in plan.actionable} == {
        "node/c": (Action.CREATE, ("recorded in state but missing on the host",)),
        "node/f": (Action.UPDATE, ("drift: stopped",)),
    }
    assert plan.summary()["noop"] == 10


def test_each_observe_is_timed_in_the_event_log(tmp_path: Path, world: World) -> None:
    import json

    engine = make_engine(tmp_path, world)
    engine.apply(engine.plan())
    del world.objects["node/b"]
    world.fail_on = set()

    class Broken(FakeDriver):
        def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
            if resource.id == "image/base":
                raise RuntimeError("cannot read the cache")
            return super().observe(resource, ctx)

    engine = make_engine(tmp_path, world)
    engine._drivers = {k: Broken(k, world) for k in ("bridge", "sshkey", "image", "node")}
    with pytest.raises(RuntimeError, match="cannot read the cache"):
        engine.plan()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    observed = {e["resource"]: e for e in events if e["type"] == "observed"}
    assert set(observed) == {"bridge/mgmt", "bridge/storage", "sshkey/fake-lab", "image/base", "node/a", "node/b"}
    assert {rid: e["outcome"] for rid, e in observed.items() if e["outcome"] != "found"} == {
        "image/base": "failed",
        "node/b": "absent",
    }
    assert all(e["duration"] >= 0 for e in observed.values())
