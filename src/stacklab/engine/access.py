"""Runners that reach lab nodes: SSH with the lab key, to the address recorded in the node's outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stacklab.engine.state import StateStore
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner


def node_runner_for(lab_dir: Path) -> Callable[[str], Runner]:
    def factory(node: str) -> Runner:
        from stacklab.exec.ssh import SSHRunner

        state = StateStore(lab_dir.parent, lab_dir.name)
        entry = state.get(f"node/{node}")
        ssh = (entry or {}).get("outputs", {}).get("ssh")
        if not ssh:
            raise StackLabError(f"node {node} is not up (no SSH address recorded)", resource=f"node/{node}")
        return SSHRunner(
            ssh["host"],
            user=ssh.get("user", "root"),
            key_file=Path(ssh["key"]),
            port=int(ssh.get("port", 22)),
            known_hosts=lab_dir / "known_hosts",
        )

    return factory
