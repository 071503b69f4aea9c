"""The nodes of a lab as its state file records them: what a checkpoint stops, copies and starts, in which tier.

A module of its own so that the container side (quiesce.py) and the VM side (vm_quiesce.py) of a checkpoint both
read one record without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacklab.drivers.nodes.lxc_config import ContainerLayout
from stacklab.drivers.nodes.vm_disk import base_disk_dir
from stacklab.errors import StackLabError

# Start tier of each role (lower starts first, stops last); a node takes the lowest of its roles.
ROLE_TIERS: Mapping[str, int] = {"storage": 0, "swift": 0, "controller": 1, "compute": 2, "client": 3}
NO_ROLE_TIER = 4


@dataclass(frozen=True)
class LabNode:
    """A node as the state file records it: what a checkpoint stops, copies and starts."""

    name: str
    kind: str
    roles: tuple[str, ...]
    lxcpath: Path | None
    ssh: Mapping[str, Any]
    image_rootfs: str | None
    # VM nodes only (kind "vm"): the libvirt domain and URI, its accel, console log, and the cached base disk its
    # root overlay is backed by (outside the lab dir, like the containers' image rootfs).
    domain: str | None = None
    uri: str | None = None
    accel: str | None = None
    console_log: str | None = None
    base_disk: str | None = None

    @property
    def is_vm(self) -> bool:
        return self.kind == "vm"

    @property
    def tier(self) -> int:
        return min((ROLE_TIERS.get(role, NO_ROLE_TIER) for role in self.roles), default=NO_ROLE_TIER)

    @property
    def layout(self) -> ContainerLayout:
        if self.lxcpath is None:
            raise StackLabError(f"node {self.name} records no lxcpath", resource=f"node/{self.name}")
        return ContainerLayout(self.lxcpath, self.name)


def lab_nodes(resources: Mapping[str, Mapping[str, Any]]) -> list[LabNode]:
    """Every node of a state file's resources (`StateStore.resources`), sorted by name."""
    nodes = []
    for rid, record in sorted(resources.items()):
        if not rid.startswith("node/"):
            continue
        spec: Mapping[str, Any] = record.get("spec", {})
        outputs: Mapping[str, Any] = record.get("outputs", {})
        image = str(spec.get("image", ""))
        image_outputs: Mapping[str, Any] = resources.get(f"image/{image}", {}).get("outputs") or {}
        image_rootfs = image_outputs.get("rootfs")
        lxcpath = outputs.get("lxcpath")
        kind = str(outputs.get("kind") or spec.get("kind") or "?")
        base_disk = None
        if kind == "vm" and image_rootfs and image_outputs.get("hash"):
            base_disk = str(base_disk_dir(Path(str(image_rootfs)), str(image_outputs["hash"])) / "base.qcow2")
        nodes.append(
            LabNode(
                name=str(outputs.get("name") or spec.get("hostname") or rid.split("/", 1)[1]),
                kind=kind,
                roles=tuple(str(r) for r in spec.get("roles", ())),
                lxcpath=Path(str(lxcpath)) if lxcpath else None,
                ssh=dict(outputs.get("ssh") or {}),
                image_rootfs=str(image_rootfs) if image_rootfs else None,
                domain=str(outputs["domain"]) if outputs.get("domain") else None,
                uri=str(outputs["uri"]) if outputs.get("uri") else None,
                accel=str(outputs["accel"]) if outputs.get("accel") else None,
                console_log=str(outputs["console_log"]) if outputs.get("console_log") else None,
                base_disk=base_disk,
            )
        )
    return nodes
