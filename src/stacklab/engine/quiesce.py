"""Quiesce a lab for a checkpoint: stop its nodes in reverse dependency order, start them again in order.

A checkpoint copies each node's root while nothing writes to it, so every file (MariaDB's tablespaces, a Ceph
OSD's BlueStore file and its mon store, Swift's partitions) is as a clean shutdown left it, on every node at the
same moment. A clean stop (`lxc-stop -t`: SIGPWR to the node's systemd, which stops its units) rather than a
freeze: a frozen node's page cache and daemons' buffers are consistent only as a crash is, and a restore would
then start every daemon in crash recovery.

The order comes from what the nodes serve, by role: storage nodes (Ceph mons and OSDs, targets, Swift's object
servers) first, then controllers (databases, message queue, APIs that use the storage), then computes (which
register with the controller), then clients and role-less nodes. Nodes of one tier start (and stop) together.

VM nodes take their place in the same tiers (vm_quiesce.py): an ACPI shutdown through libvirt that must reach
"shut off" (a save fails rather than copy a crash-consistent disk), or a destroy when a restore replaces the disks;
started with `virsh start` and waited for as `up` waits (SSH, cloud-init, then the guest's systemd).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stacklab.drivers.nodes.lxc_config import cgroup_base
from stacklab.drivers.nodes.lxc_host import (
    cgroup_mounts,
    container_state,
    lxc_attach_argv,
    lxc_start_argv,
    remove_cgroup_tree,
)
from stacklab.engine.lab_nodes import LabNode
from stacklab.engine.node_settle import settle_units
from stacklab.engine.vm_quiesce import VmPower
from stacklab.errors import StackLabError
from stacklab.exec.parallel import each_at_once
from stacklab.exec.readiness import NotReady, wait_until
from stacklab.exec.runner import CommandError, CommandTimeout, Runner
from stacklab.exec.ssh import wait_for_ssh

LOG = logging.getLogger(__name__)

# Clean stop: the node's systemd gets this many seconds before LXC kills it.
STOP_CLEAN_SECONDS = 60
_KILL_TIMEOUT = 30.0
_START_TIMEOUT = 60.0
RUNNING_BUDGET = 30.0
SSH_BUDGET = 120.0

SshWaiter = Callable[..., float]


def start_tiers(nodes: Sequence[LabNode]) -> list[list[LabNode]]:
    """The nodes grouped by tier, in start order (stop order is the reverse)."""
    tiers: dict[int, list[LabNode]] = {}
    for node in nodes:
        tiers.setdefault(node.tier, []).append(node)
    return [sorted(tiers[t], key=lambda n: n.name) for t in sorted(tiers)]


def _each(nodes: Sequence[LabNode], action: Callable[[LabNode], None]) -> None:
    """Run `action` on every node of a tier at once; the first error is raised after all have finished."""
    each_at_once(action, nodes)


@dataclass
class Quiescer:
    """Stops and starts a lab's nodes through the host runner: containers here, VMs through `vm_power`.
    Injectable waits for unit tests."""

    lab: str
    runner: Runner
    known_hosts: Path
    ssh_waiter: SshWaiter = wait_for_ssh
    poll_interval: float = 0.3
    running_budget: float = RUNNING_BUDGET
    ssh_budget: float = SSH_BUDGET
    cgroup_mounts: Callable[[], list[Path]] = cgroup_mounts
    vm_power: VmPower | None = None  # made on first use, for the lab dir `known_hosts` is in

    @property
    def vms(self) -> VmPower:
        if self.vm_power is None:
            self.vm_power = VmPower(self.lab, self.runner, self.known_hosts.parent)
        return self.vm_power

    def stop_all(self, nodes: Sequence[LabNode], *, destroy_vms: bool = False) -> None:
        """Clean stop, last tier first; a node already stopped is left as it is. A VM that does not shut off
        cleanly fails the stop (VmShutdownError) after the rest of its tier was tried; with `destroy_vms` (the
        disks are about to be replaced) VMs are powered off at once instead."""
        for tier in reversed(start_tiers(nodes)):
            _each(tier, lambda node: self.stop(node, destroy_vm=destroy_vms))

    def start_all(self, nodes: Sequence[LabNode]) -> None:
        """Start tier by tier; each tier is RUNNING with SSH answering before the next starts."""
        for tier in start_tiers(nodes):
            _each(tier, self.start)

    def stop(self, node: LabNode, *, destroy_vm: bool = False) -> None:
        if node.is_vm:
            (self.vms.destroy if destroy_vm else self.vms.shutdown)(node)
            return
        layout = node.layout
        state, _pid = container_state(self.runner, layout)
        if state in ("STOPPED", "MISSING"):
            return
        base = ["lxc-stop", "-P", str(layout.lxcpath), "-n", layout.name]
        began = time.monotonic()
        try:
            self.runner.run([*base, "-t", str(STOP_CLEAN_SECONDS)], timeout=STOP_CLEAN_SECONDS + 30)
        except (CommandError, CommandTimeout) as exc:
            # A node that does not stop cleanly is killed: its copy is then only crash-consistent; say so.
            LOG.warning("node %s: clean stop failed (%s); killing it", node.name, str(exc).splitlines()[0])
            self.runner.run([*base, "-k"], timeout=_KILL_TIMEOUT)
        LOG.info("node %s: stopped in %.1fs", node.name, time.monotonic() - began)

    def start(self, node: LabNode) -> None:
        if node.is_vm:
            self.vms.start(node)
            return
        layout = node.layout
        state, _pid = container_state(self.runner, layout)
        if state != "RUNNING":
            try:
                self.runner.run(lxc_start_argv(layout), timeout=_START_TIMEOUT)
            except CommandError:
                # A start that aborted (e.g. an overlay that would not mount) leaves the container's cgroup tree
                # behind, and LXC will not make its monitor cgroup again: remove the empty tree, try once more.
                left = remove_cgroup_tree(cgroup_base(self.lab, layout.lxcpath, layout.name), self.cgroup_mounts())
                LOG.warning(
                    "node %s: lxc-start failed; cleared its cgroups (%d busy) and trying again", node.name, len(left)
                )
                self.runner.run(lxc_start_argv(layout), timeout=_START_TIMEOUT)

        def running() -> bool:
            current, pid = container_state(self.runner, layout)
            if current == "RUNNING" and pid:
                return True
            if current in ("STOPPED", "MISSING"):
                raise StackLabError(
                    f"node {node.name} stopped right after lxc-start",
                    resource=f"node/{node.name}",
                    hint=f"see {layout.lxc_log} and {layout.console_log}",
                )
            raise NotReady(f"state {current}")

        wait_until(
            running,
            budget=self.running_budget,
            interval=self.poll_interval,
            what=f"node {node.name} to be RUNNING",
            resource=f"node/{node.name}",
        )
        ssh = node.ssh
        if ssh.get("host"):
            self.ssh_waiter(
                str(ssh["host"]),
                Path(str(ssh["key"])),
                self.ssh_budget,
                user=str(ssh.get("user", "root")),
                port=int(ssh.get("port", 22)),
                known_hosts=self.known_hosts,
                resource=f"node/{node.name}",
            )
        self.settle(node)

    def settle(self, node: LabNode) -> None:
        """Until the node's systemd reports its start finished (`systemctl is-system-running --wait`)."""
        argv = lxc_attach_argv(node.layout, ["systemctl", "is-system-running", "--wait"])
        settle_units(self.runner, argv, what=f"node {node.name}", node=node.name, lab=self.lab)
