"""The engine: observe -> diff -> plan -> apply over the DAG on a thread pool; and `down` in reverse.

Failures never start dependents; running steps finish; state is saved after every success, so the next `up`
resumes where this one stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import graphlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacklab.drivers.base import Driver, DriverContext, driver_for, registered_kinds
from stacklab.engine.events import EventBus
from stacklab.engine.plan import Pending, Plan
from stacklab.engine.state import StateStore
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner
from stacklab.model.lab import Lab
from stacklab.plan.dag import build_graph, dependents, topological_order
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from stacklab.plan.resource import Action, Change, Resource
from stacklab.plan.ripple import ripple_rebuilds

LOG = logging.getLogger(__name__)
DEFAULT_WORKERS = 6
# Observing only reads, and each observe mostly waits on a node (SSH round trips, a `ceph` or `openstack` CLI):
# every resource is observed at once rather than DEFAULT_WORKERS at a time, so a no-op `up` takes the slowest
# observe, not the sum of the queue (a node's SSH runner still bounds its own sessions).
OBSERVE_WORKERS = 64


@dataclass
class StepFailure:
    id: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.id}: {self.error}"


@dataclass
class RunResult:
    applied: list[str] = field(default_factory=list)
    failed: list[StepFailure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # id -> reason

    @property
    def ok(self) -> bool:
        return not self.failed


class Engine:
    def __init__(
        self,
        lab: Lab,
        *,
        state_root: Path,
        runner: Runner,
        bus: EventBus,
        choices: Mapping[str, str] = USERSPACE_CHOICES,
        drivers: Mapping[str, Driver] | None = None,
        node_runner: Callable[[str], Runner] | None = None,
        host: Any = None,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.lab = lab
        self.state = StateStore(state_root, lab.name)
        self.bus = bus
        self.choices = dict(choices)
        self.workers = workers
        self._drivers = dict(drivers) if drivers is not None else None
        self.ctx = DriverContext(
            lab=lab,
            runner=runner,
            state_dir=self.state.dir,
            outputs=_LiveOutputs(self.state),
            host=host,
            node_runner=node_runner,
        )

    # -- drivers -------------------------------------------------------------------------------------------
    def _driver(self, kind: str) -> Driver | None:
        if self._drivers is not None:
            return self._drivers.get(kind)
        return driver_for(kind) if kind in registered_kinds() else None

    def _step_ctx(self, resource_id: str) -> DriverContext:
        return dataclasses.replace(self.ctx, progress=self.bus.progress_for(resource_id))

    # -- plan ----------------------------------------------------------------------------------------------
    def _unsupported(self, resource: Resource) -> str | None:
        """Why this resource cannot be built by this stacklab (then it is pending), or None."""
        driver = self._driver(resource.kind)
        if driver is None:
            return f"no {resource.kind} driver in this stacklab yet"
        check = getattr(driver, "unsupported", None)  # drivers that serve only some names of their kind
        return check(resource) if callable(check) else None

    def plan(self) -> Plan:
        resources = expand(self.lab, self.choices)
        graph = build_graph(resources)
        order = topological_order(graph)
        by_id = {r.id: r for r in resources}
        pending: dict[str, str] = {}
        for rid in order:
            why = self._unsupported(by_id[rid])
            if why is not None:
                pending[rid] = why
                for child in dependents(graph, rid):
                    pending.setdefault(child, f"depends on {rid}, which is pending")
        buildable = [by_id[rid] for rid in order if rid not in pending]
        with self.bus.phase("observe"):
            changes = ripple_rebuilds(self._diff_all(buildable))
        desired = {r.id for r in resources}
        deletions = [
            Change(_resource_from_record(rid, rec), Action.DELETE, ("no longer in the lab file",), None, rec)
            for rid, rec in self.state.resources.items()
            if rid not in desired
        ]
        return Plan(
            lab=self.lab.name,
            changes=changes,
            deletions=deletions,
            pending=[Pending(rid, pending[rid]) for rid in order if rid in pending],
            choices=self.choices,
        )

    def _diff_all(self, resources: list[Resource]) -> list[Change]:
        def observe_and_diff(resource: Resource) -> Change:
            driver = self._driver(resource.kind)
            assert driver is not None
            start = time.monotonic()
            outcome = "failed"
            try:
                observed = driver.observe(resource, self._step_ctx(resource.id))
                outcome = "absent" if observed is None else "found"
            finally:  # each resource's observe time in the event log: what a no-op `up` waits on
                self.bus.emit(
                    "observed", resource=resource.id, outcome=outcome, duration=round(time.monotonic() - start, 4)
                )
            return driver.diff(resource, observed, self.state.get(resource.id))

        with cf.ThreadPoolExecutor(max(1, min(len(resources), OBSERVE_WORKERS))) as pool:
            return list(pool.map(observe_and_diff, resources))

    # -- apply ---------------------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> RunResult:
        result = RunResult()
        with self.bus.phase("delete-removed"):
            self._run_deletions({c.id: c.recorded or {} for c in plan.deletions}, result)
        if not result.ok:
            return result
        changes = {c.id: c for c in plan.changes}
        graph = {rid: tuple(d for d in c.resource.deps if d in changes) for rid, c in changes.items()}
        with self.bus.phase("apply"):
            self._schedule(graph, lambda rid: self._apply_one(changes[rid]), changes, result)
        return result

    def _schedule(
        self,
        graph: Mapping[str, tuple[str, ...]],
        work: Callable[[str], Any],
        changes: Mapping[str, Change] | None,
        result: RunResult,
    ) -> None:
        """Run `work` over the DAG, each node once its deps are done; a failure blocks its dependents."""
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        blocked: dict[str, str] = {}
        with cf.ThreadPoolExecutor(self.workers) as pool:
            running: dict[cf.Future[Any], str] = {}
            while sorter.is_active():
                for rid in sorter.get_ready():
                    if rid in blocked:
                        result.skipped[rid] = blocked[rid]
                        self.bus.emit(
                            "step_end",
                            resource=rid,
                            action="skip",
                            outcome="skipped",
                            duration=0.0,
                            message=blocked[rid],
                        )
                        sorter.done(rid)
                    elif changes is not None and changes[rid].action is Action.NOOP:
                        sorter.done(rid)
                    else:
                        running[pool.submit(work, rid)] = rid
                if not running:
                    continue
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    rid = running.pop(future)
                    error = future.exception()
                    if error is None:
                        result.applied.append(rid)
                    else:
                        result.failed.append(StepFailure(rid, error))
                        for child in dependents(graph, rid):
                            blocked.setdefault(child, f"not started: {rid} failed")
                    sorter.done(rid)

    def _apply_one(self, change: Change) -> None:
        driver = self._driver(change.resource.kind)
        assert driver is not None
        ctx = self._step_ctx(change.id)
        start = time.monotonic()
        self.bus.emit("step_start", resource=change.id, action=change.action.value)
        try:
            if change.action is Action.REPLACE and change.recorded is not None:
                driver.delete(change.id, change.recorded, ctx)
                self.state.forget(change.id)
            outputs = driver.apply(change, ctx)
        except BaseException as exc:
            LOG.debug("step %s failed", change.id, exc_info=True)
            self.bus.emit(
                "step_end",
                resource=change.id,
                action=change.action.value,
                outcome="failed",
                duration=round(time.monotonic() - start, 4),
                message=str(exc).splitlines()[0],
            )
            raise
        self.state.record(change.resource, outputs)
        self.bus.emit(
            "step_end",
            resource=change.id,
            action=change.action.value,
            outcome="ok",
            duration=round(time.monotonic() - start, 4),
        )

    # -- down ----------------------------------------------------------------------------------------------
    def destroy(self) -> RunResult:
        result = RunResult()
        with self.bus.phase("delete"):
            self._run_deletions(self.state.resources, result)
        return result

    def _run_deletions(self, recorded: Mapping[str, Mapping[str, Any]], result: RunResult) -> None:
        """Delete recorded resources, dependents before what they depend on."""
        if not recorded:
            return
        # Reverse edges: a resource can go once everything depending on it is gone.
        reverse: dict[str, set[str]] = {rid: set() for rid in recorded}
        for rid, rec in recorded.items():
            for dep in rec.get("deps", ()):
                if dep in reverse:
                    reverse[dep].add(rid)
        graph = {rid: tuple(sorted(children)) for rid, children in reverse.items()}
        vanishing = vanishing_vms(recorded)
        nodes = frozenset(rid.split("/", 1)[1] for rid in recorded if rid.startswith("node/"))
        self._schedule(graph, lambda rid: self._delete_one(rid, recorded[rid], vanishing, nodes), None, result)

    def _delete_one(
        self,
        rid: str,
        record: Mapping[str, Any],
        vanishing: frozenset[str] = frozenset(),
        vanishing_nodes: frozenset[str] = frozenset(),
    ) -> None:
        kind = str(record.get("kind") or rid.split("/", 1)[0])
        driver = self._driver(kind)
        start = time.monotonic()
        self.bus.emit("step_start", resource=rid, action="delete")
        try:
            if driver is None:
                raise StackLabError(f"no {kind} driver to delete it with", resource=rid)
            ctx = dataclasses.replace(self._step_ctx(rid), vanishing=vanishing, vanishing_nodes=vanishing_nodes)
            driver.delete(rid, record, ctx)
        except BaseException as exc:
            self.bus.emit(
                "step_end",
                resource=rid,
                action="delete",
                outcome="failed",
                duration=round(time.monotonic() - start, 4),
                message=str(exc).splitlines()[0],
            )
            raise
        self.state.forget(rid)
        self.bus.emit(
            "step_end",
            resource=rid,
            action="delete",
            outcome="ok",
            duration=round(time.monotonic() - start, 4),
        )


def vanishing_vms(recorded: Mapping[str, Mapping[str, Any]]) -> frozenset[str]:
    """The VM nodes among the recorded resources about to be deleted (see DriverContext.vanishing)."""
    return frozenset(
        rid.split("/", 1)[1]
        for rid, rec in recorded.items()
        if rid.startswith("node/") and (rec.get("spec") or {}).get("kind") == "vm"
    )


class _LiveOutputs(Mapping[str, Mapping[str, Any]]):
    """Outputs as the state file has them now (drivers read their dependencies' outputs through this)."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        entry = self._state.get(key)
        if entry is None:
            raise KeyError(key)
        outputs: Mapping[str, Any] = entry.get("outputs", {})
        return outputs

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._state.resources)

    def __len__(self) -> int:
        return len(self._state.resources)


def _resource_from_record(rid: str, record: Mapping[str, Any]) -> Resource:
    kind, _, name = rid.partition("/")
    return Resource(
        record.get("kind", kind),
        record.get("name", name),
        record.get("spec", {}),
        tuple(record.get("deps", ())),
    )
