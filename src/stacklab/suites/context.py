"""The lab context the suites read: built from the state file, no I/O on the host."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacklab.errors import StackLabError
from stacklab.exec.ssh import SSHRunner, lab_ssh_runner

ENV = "STACKLAB_LAB_CONTEXT"


@dataclass(frozen=True)
class LabContext:
    lab: str
    state_dir: Path
    ssh_config: Path
    nodes: Mapping[str, Mapping[str, Any]]  # name -> {"addresses": {net: ip}, "roles": [...], "kind": ...}
    outputs: Mapping[str, Mapping[str, Any]]  # resource id -> outputs
    networks: Mapping[str, Mapping[str, Any]]  # name -> bridge spec (ifname, cidr, address)
    declared: Mapping[str, Any] = field(default_factory=dict)  # the lab file as `up` stored it (what it promises)

    @classmethod
    def load(cls, path: Path | None = None) -> LabContext:
        path = path or Path(os.environ[ENV])
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabContext:
        """From build_context()'s dict (what `verify` writes for the suites)."""
        return cls(
            lab=data["lab"],
            state_dir=Path(data["state_dir"]),
            ssh_config=Path(data["ssh_config"]),
            nodes=data["nodes"],
            outputs=data["outputs"],
            networks=data["networks"],
            declared=data.get("declared") or {},
        )

    def address(self, node: str, network: str) -> str:
        return str(self.nodes[node]["addresses"][network])

    def runner(self, node: str) -> SSHRunner:
        """A new SSH runner to `node` (its own connection, for concurrent streams; the caller closes it), from the
        address the node's driver recorded when the lab came up."""
        ssh = self.outputs.get(f"node/{node}", {}).get("ssh")
        if not ssh:
            raise StackLabError(f"node {node} is not up (no SSH address recorded)", resource=f"node/{node}")
        return lab_ssh_runner(self.state_dir, ssh)


def build_context(
    lab: str,
    state_dir: Path,
    resources: Mapping[str, Mapping[str, Any]],
    declared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The suites' view of the lab: what was built (resources' outputs) and what the lab file declared, so a suite
    tests the lab's own figures (replica counts, sizes), not ones it assumes."""
    nodes: dict[str, Any] = {}
    networks: dict[str, Any] = {}
    for rid, rec in resources.items():
        kind, _, name = rid.partition("/")
        if kind == "node":
            spec = rec.get("spec", {})
            nodes[name] = {
                "addresses": rec.get("outputs", {}).get("addresses", {}),
                "roles": spec.get("roles", []),
                "kind": spec.get("kind"),
                "nics": spec.get("nics", []),
            }
        elif kind == "bridge":
            networks[name] = dict(rec.get("spec", {}))
    return {
        "lab": lab,
        "state_dir": str(state_dir),
        "ssh_config": str(state_dir / "ssh_config"),
        "nodes": nodes,
        "networks": networks,
        "outputs": {rid: rec.get("outputs", {}) for rid, rec in resources.items()},
        "declared": dict(declared or {}),
    }
