"""Types shared by the NFS driver and its backends: ports, the resolved layout of one `nfs/<node>` resource, what a
backend observed, the backend interface and the pure helpers both backends use (the backends import this, never
the driver)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stacklab.exec.node_files import FILE_TIMEOUT
from stacklab.exec.runner import Runner

# The node's port filter (nodes/firewall.py): rpcbind, nfs and the pinned MOUNT, statd and lockd ports reachable from
# `clients` only. statd and lockd (NFSv3 locking, knfsd) default to random ports the filter could not name.
FILTER = "nfs"
MOUNT_PORT = 20048
STATD_PORT = 32765
STATD_OUTGOING_PORT = 32766
LOCKD_PORT = 32768
FILTER_PORTS = (111, 2049, MOUNT_PORT, STATD_PORT, LOCKD_PORT)


@dataclass(frozen=True)
class ExportLayout:
    name: str
    path: str
    export_id: int
    size_mib: int | None = None


@dataclass(frozen=True)
class NfsLayout:
    lab: str
    node: str
    implementation: str
    address: str
    versions: tuple[int, ...]
    clients: str
    exports: tuple[ExportLayout, ...]

    @property
    def marker(self) -> str:
        """First line of every file the backends write: the ownership mark `observe` and `delete` look for."""
        return f"# stacklab lab={self.lab}"


@dataclass(frozen=True)
class NfsSeen:
    """What a backend found: `owned` (its files carry the lab's marker), the normalized configuration state
    (comparable with the backend's `desired_state`), and problems such as a stopped service."""

    owned: bool
    state: Mapping[str, Any]
    problems: tuple[str, ...] = ()


class NfsServerBackend(Protocol):
    implementation: str

    def check_node(self, runner: Runner, plan: NfsLayout, resource_id: str) -> None:
        """Raise PlanError when the node cannot run this server (before anything is touched)."""
        ...

    def desired_state(self, plan: NfsLayout) -> Mapping[str, Any]:
        """Pure: the normalized state the rendered configuration parses to."""
        ...

    def ensure(self, runner: Runner, plan: NfsLayout, resource_id: str) -> None:
        """Write the configuration, make the directories, (re)start or reload the service. Idempotent."""
        ...

    def observe(self, runner: Runner, plan: NfsLayout) -> NfsSeen | None:
        """Read-only: the server's configuration on the node, or None when there is none of ours."""
        ...

    def delete(self, runner: Runner, plan: NfsLayout) -> None:
        """Stop serving the lab's exports and remove the configuration files carrying the lab's marker."""
        ...


def state_drift(desired: Mapping[str, Any], seen: Mapping[str, Any]) -> list[str]:
    """Pure: differences between two normalized states, one line per top-level key or export path."""
    out: list[str] = []
    for key in sorted(set(desired) | set(seen)):
        want, have = desired.get(key), seen.get(key)
        if want == have:
            continue
        if key == "exports" and isinstance(want, Mapping) and isinstance(have, Mapping):
            for path in sorted(set(want) | set(have)):
                if path not in have:
                    out.append(f"export {path} missing")
                elif path not in want:
                    out.append(f"export {path} is not in the lab file")
                elif want[path] != have[path]:
                    out.append(f"export {path}: {have[path]} != {want[path]}")
        else:
            out.append(f"{key}: {have!r} != {want!r}")
    return out


def make_dirs(runner: Runner, plan: NfsLayout) -> None:
    for export in plan.exports:
        runner.run(["mkdir", "-p", export.path], timeout=FILE_TIMEOUT)
