"""Runners that reach lab nodes: SSH with the lab key, to the address recorded in the node's outputs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stacklab.engine.state import StateStore
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner
from stacklab.exec.ssh import SSHRunner, lab_ssh_runner


def _recorded_ssh(lab_dir: Path, node: str) -> Mapping[str, Any]:
    entry = StateStore(lab_dir.parent, lab_dir.name).get(f"node/{node}")
    ssh = (entry or {}).get("outputs", {}).get("ssh")
    if not ssh:
        raise StackLabError(f"node {node} is not up (no SSH address recorded)", resource=f"node/{node}")
    return dict(ssh)


def node_runner_for(lab_dir: Path) -> Callable[[str], Runner]:
    """A factory of new runners, each with its own SSH connection (for concurrent streams in suites)."""

    def factory(node: str) -> Runner:
        return lab_ssh_runner(lab_dir, _recorded_ssh(lab_dir, node))

    return factory


class NodeRunners:
    """One shared SSH runner per node for a whole run (SSHRunner is thread-safe); `close()` ends them all.

    The node's recorded address is read on every call: a node re-created at another address gets a new runner,
    and the old connection is closed.
    """

    def __init__(self, lab_dir: Path) -> None:
        self.lab_dir = lab_dir
        self._runners: dict[str, tuple[Mapping[str, Any], SSHRunner]] = {}
        self._lock = threading.Lock()

    def __call__(self, node: str) -> Runner:
        ssh = _recorded_ssh(self.lab_dir, node)
        with self._lock:
            cached = self._runners.get(node)
            if cached is not None and cached[0] == ssh:
                return cached[1]
            if cached is not None:
                cached[1].close()
            runner = lab_ssh_runner(self.lab_dir, ssh)
            self._runners[node] = (ssh, runner)
            return runner

    def close(self) -> None:
        with self._lock:
            for _ssh, runner in self._runners.values():
                runner.close()
            self._runners.clear()
