"""The driver contract every resource kind implements.

observe() is read-only; diff() is pure; apply() makes the host match the change and returns the outputs later
resources need (addresses, paths, ids); delete() removes what the state file recorded. If apply() fails it
removes what it half-made, or leaves only objects carrying the lab's ownership mark so that `down` finds them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from stacklab.errors import PlanError, StackLabError
from stacklab.exec.runner import Runner
from stacklab.plan.diff import default_diff
from stacklab.plan.resource import Change, Observed, Resource

if TYPE_CHECKING:
    from stacklab.host.capabilities import HostReport
    from stacklab.model.lab import Lab

LOG = logging.getLogger(__name__)


def recorded_spec(resource_id: str, recorded: Mapping[str, Any]) -> tuple[Mapping[str, Any], str] | None:
    """For delete(): the spec `up` recorded and the resource's name, or None (logged) when nothing was recorded."""
    raw = recorded.get("spec")
    if not raw:
        LOG.info("%s: nothing recorded to delete", resource_id)
        return None
    return raw, str(recorded.get("name") or resource_id.partition("/")[2])


def known_implementation(
    resource_id: str, spec: Mapping[str, Any], known: tuple[str, ...], role: str, hint: str
) -> str:
    """The spec's `implementation`; a PlanError naming the role (e.g. "iSCSI target") when it is not in `known`."""
    implementation = str(spec["implementation"])
    if implementation not in known:
        raise PlanError(f"unknown {role} implementation {implementation!r}", resource=resource_id, hint=hint)
    return implementation


@dataclass
class DriverContext:
    """Everything a driver may use to reach the host. Tests build one with fakes."""

    lab: Lab
    runner: Runner
    state_dir: Path
    # Outputs of already-applied resources by id (read from the state file); filled by the engine.
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    host: HostReport | None = None
    # Progress callback for long steps (image builds, boots): message -> None.
    progress: Callable[[str], None] = lambda _msg: None
    # Drivers that share one host object (e.g. the libvirt connection) keep it here.
    shared: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Runner that executes on a lab node (SSH with the lab key); provided by the engine once nodes exist.
    node_runner: Callable[[str], Runner] | None = None
    # VM nodes deleted in the same run (`down`): what lives inside one (its LVs, targets, exports, services) goes
    # with its disk and kernel, so deleting it from inside first is wasted time (25-86 s a resource under TCG).
    # Container nodes are never listed: they share the host's kernel (loop devices, for one, outlive them).
    vanishing: frozenset[str] = frozenset()
    # Every node deleted in the same run, containers included: an OpenStack service holds nothing of the host's
    # kernel (its units, files and databases live in the node's root), so when all its nodes go, it goes with them.
    vanishing_nodes: frozenset[str] = frozenset()

    def on_node(self, node: str) -> Runner:
        if self.node_runner is None:
            raise RuntimeError("this context has no node runner (nodes are not part of this run)")
        return self.node_runner(node)

    def on_node_if_up(self, node: str) -> Runner | None:
        """The node's runner, or None when it is not up (first `up`: nothing of ours can exist there yet)."""
        try:
            return self.on_node(node)
        except (StackLabError, RuntimeError) as exc:
            LOG.debug("node %s not reachable: %s", node, exc)
            return None

    def node_for_delete(self, resource_id: str, node: str, what: str) -> Runner | None:
        """For delete(): the node's runner, or None (logged) when it is not up or is a VM going in this run
        ("`what` with the node")."""
        if node in self.vanishing:
            LOG.info("%s: VM %s is deleted in this run; %s with it", resource_id, node, what)
            return None
        runner = self.on_node_if_up(node)
        if runner is None:
            LOG.warning("%s: node %s is not up; %s with the node", resource_id, node, what)
        return runner

    def output(self, resource_id: str, key: str) -> Any:
        try:
            return self.outputs[resource_id][key]
        except KeyError as exc:
            raise KeyError(f"{resource_id} has no recorded output {key!r} (was it applied?)") from exc

    @property
    def lab_dir(self) -> Path:
        return self.state_dir

    @property
    def lab_file_dir(self) -> Path:
        """The directory of the lab file, where its own images/ and cloud-init/ are looked up first (the current
        directory for a lab that came from a string)."""
        source = str(getattr(self.lab, "source", "") or "")
        return Path(source).resolve().parent if source and not source.startswith("<") else Path.cwd()


class Driver(Protocol):
    kind: str

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        """Read-only: what exists on the host for this resource, or None."""
        ...

    def diff(self, resource: Resource, observed: Observed | None, recorded: Mapping[str, Any] | None) -> Change:
        """Pure: what to do. Most drivers use default_diff."""
        ...

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        """Create/update/replace; returns outputs recorded in the state file."""
        ...

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        """Remove what `recorded` names; must succeed if it is already gone."""
        ...


class BaseDriver:
    """Convenience base: default diff with the driver's in-place updatable keys."""

    kind = "base"
    updatable: frozenset[str] = frozenset()
    added: frozenset[str] = frozenset()  # spec keys added after labs were recorded (plan/diff.default_diff)

    def diff(self, resource: Resource, observed: Observed | None, recorded: Mapping[str, Any] | None) -> Change:
        return default_diff(resource, observed, recorded, updatable=self.updatable, added=self.added)


DriverFactory = Callable[[], Driver]
_REGISTRY: dict[str, DriverFactory] = {}


def register(kind: str) -> Callable[[DriverFactory], DriverFactory]:
    def deco(factory: DriverFactory) -> DriverFactory:
        _REGISTRY[kind] = factory
        return factory

    return deco


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


def driver_for(kind: str) -> Driver:
    try:
        return _REGISTRY[kind]()
    except KeyError:
        raise KeyError(f"no driver registered for resource kind {kind!r}") from None
