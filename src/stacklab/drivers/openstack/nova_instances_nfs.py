"""nova's `instances_on: nfs`: on every compute, /var/lib/nova/instances is a kernel NFS mount of one storage.nfs
export over br-storage (nfs_mounts.py: a systemd mount unit, owned by nova), and nova-compute's drop-in requires it
(`RequiresMountsFor=`), so nova-compute never starts on the bare directory and never writes a disk there.

The instance disks (qcow2 over nova's base-image cache, `_base`) are then files on one file system every compute
sees. nova needs no setting for it: before a live migration and an evacuation it writes a test file in
instances_path on one host and looks for it on the other (`_check_shared_storage_test_file`), so a live migration
moves the memory only (block_migration `auto` resolves to false) and an evacuated instance restarts from its disk.
nova's image cache manager also sees the storage shared (the `compute_nodes` file it keeps there) and counts every
sharing host's instances before it removes a base image.

The settings come from the spec (model/nova_instances.py): `instances_share` (<server storage address>:<path>),
`instances_server` (the NFS server node, where the suites read the disks back) and the mount options.
"""

from __future__ import annotations

from typing import Any

from stacklab.drivers.openstack.common import ServiceLayout
from stacklab.drivers.openstack.nfs_mounts import (
    NfsMount,
    ensure_mount,
    mount_problems,
    remove_mount,
    requires_mount,
)
from stacklab.errors import PlanError
from stacklab.exec.runner import Runner
from stacklab.model.nova_instances import INSTANCES_PATH  # nova's default instances_path, left as is in nova.conf

OWNER = "nova:nova"  # nova-compute creates the instance directories and `_base` as nova
SERVICE = "nova-compute"


def on_nfs(plan: ServiceLayout) -> bool:
    return plan.config.get("instances_on") == "nfs"


def instances_mount(plan: ServiceLayout) -> NfsMount:
    return NfsMount(
        lab=plan.lab,
        share=str(plan.config["instances_share"]),
        where=INSTANCES_PATH,
        options=str(plan.config.get("instances_mount_options", "vers=4.2")),
        service=SERVICE,
    )


def check(plan: ServiceLayout) -> None:
    """Refuse a spec that says nfs without its share (a lab validated by this stacklab always has it)."""
    if on_nfs(plan) and not plan.config.get("instances_share"):
        raise PlanError(
            "nova instances_on nfs without the share to mount",
            resource=f"service/{plan.name}",
            hint="add storage.nfs with an export (openstack.nova.instances_export names it) and plan again",
        )


def dropin_lines(plan: ServiceLayout) -> str:
    """What nova-compute's drop-in adds: start only on the mount (empty unless instances_on nfs)."""
    return requires_mount(instances_mount(plan)) if on_nfs(plan) else ""


def ensure_instances(runner: Runner, plan: ServiceLayout, node: str) -> bool:
    """Compute `node` mounts the share at instances_path, owned by nova, before nova-compute (re)starts; True when
    the mount changed (nova-compute then restarts on it)."""
    if not on_nfs(plan):
        return False
    return ensure_mount(runner, instances_mount(plan), node, f"service/{plan.name}", owner=OWNER)


def instances_problems(runner: Runner, plan: ServiceLayout, node: str) -> list[str]:
    return mount_problems(runner, instances_mount(plan), node) if on_nfs(plan) else []


def remove_instances(runner: Runner, plan: ServiceLayout) -> None:
    """Unmount (after nova-compute stopped): the instance files stay on the export, as a volume's do."""
    if on_nfs(plan):
        remove_mount(runner, instances_mount(plan))


def outputs(plan: ServiceLayout) -> dict[str, Any]:
    """What the suites read: where the disks are (the server node and its export path) and the share every compute
    must show mounted at instances_path."""
    if not on_nfs(plan):
        return {"instances_on": str(plan.config.get("instances_on", "local"))}
    share = str(plan.config["instances_share"])
    return {"instances_on": "nfs", "instances_share": share, "instances_server": str(plan.config["instances_server"]),
            "instances_export_path": share.split(":", 1)[1]}  # fmt: skip
