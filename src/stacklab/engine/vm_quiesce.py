"""Stop and start a lab's VM nodes for a checkpoint: ACPI shutdown through libvirt, start, wait as `up` does.

A checkpoint copies a VM's qcow2 files while the guest is shut off, so its file systems are as a clean shutdown
left them. The shutdown is the guest's own (`virsh shutdown --mode acpi`: the power button, which the guest's
systemd-logind turns into a poweroff); a save whose VM does not reach "shut off" within the budget fails rather than
copy a disk that is only crash-consistent. A restore destroys the domain instead: its disks are replaced anyway.

Everything goes through the host runner as `virsh -c <uri>` (the lab's libvirt, recorded in the node's outputs),
so the order of calls is what the unit tests script. The domain definitions are not touched: the checkpoint
holds the files they name (same paths, same MACs), so a restore only needs the files back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stacklab.drivers.nodes import libvirtd
from stacklab.drivers.nodes.vm import READY_BUDGET, ready_budgets
from stacklab.drivers.nodes.vm_domain import VmLayout
from stacklab.drivers.nodes.vm_libvirt import grant_qemu_traversal
from stacklab.drivers.nodes.vm_ready import ReadyTarget, ReadyWaiter, ssh_argv, wait_ready
from stacklab.engine.lab_nodes import LabNode
from stacklab.engine.node_settle import settle_units
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

# Seconds from the ACPI power button to "shut off". A TCG guest on a loaded 2-core host took up to ~40 s here.
SHUTDOWN_BUDGET: dict[str, float] = {"tcg": 300.0, "kvm": 120.0}
# The power button is pressed again this often: a guest may ignore a press while its logind restarts.
RESEND_SECONDS = 30.0
SHUT_OFF = "shut off"
MISSING = "missing"
_VIRSH_TIMEOUT = 60.0


class VmShutdownError(StackLabError):
    """A VM did not shut off cleanly in time: what would be copied is not a clean disk."""


@dataclass
class VmPower:
    """The lab's VM nodes as libvirt domains: state, clean shutdown, destroy, start and wait for SSH."""

    lab: str
    runner: Runner
    lab_dir: Path
    ready_waiter: ReadyWaiter = wait_ready
    ready_budget: dict[str, float] = field(default_factory=lambda: ready_budgets(os.environ))
    shutdown_budget: dict[str, float] = field(default_factory=lambda: dict(SHUTDOWN_BUDGET))
    poll_interval: float = 1.0
    resend_seconds: float = RESEND_SECONDS
    sleep: Callable[[float], None] = time.sleep

    # -- libvirt ----------------------------------------------------------------------------------------
    def _virsh(self, node: LabNode, *args: str, check: bool = True) -> str:
        result = self.runner.run(["virsh", "-c", _uri(node), *args], timeout=_VIRSH_TIMEOUT, check=check)
        return result.stdout.strip()

    def state(self, node: LabNode) -> str:
        """`virsh domstate`: running, shut off, paused, in shutdown...; "missing" when libvirt has no such domain."""
        result = self.runner.run(
            ["virsh", "-c", _uri(node), "domstate", _domain(node)], timeout=_VIRSH_TIMEOUT, check=False
        )
        if result.ok:
            return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown"
        if "failed to get domain" in result.stderr or "Domain not found" in result.stderr:
            return MISSING
        raise StackLabError(
            f"VM {node.name}: libvirt at {_uri(node)} does not answer for domain {_domain(node)}: "
            + (result.stderr.strip().splitlines() or [f"rc {result.returncode}"])[-1],
            resource=f"node/{node.name}",
            hint="is the lab's libvirtd running? `stacklab up` starts it",
        )

    # -- stop -------------------------------------------------------------------------------------------
    def shutdown(self, node: LabNode) -> None:
        """ACPI shutdown, then wait for "shut off"; a VmShutdownError when the budget runs out (nothing killed)."""
        if self.state(node) in (SHUT_OFF, MISSING):
            return
        budget = self.shutdown_budget.get(node.accel or "tcg", SHUTDOWN_BUDGET["tcg"])
        began = time.monotonic()
        pressed = -self.resend_seconds
        state = ""
        while time.monotonic() - began <= budget:
            if time.monotonic() - pressed >= self.resend_seconds:
                # The guest may already be on its way down (a press can race with "shut off"): rc not checked.
                self._virsh(node, "shutdown", "--mode", "acpi", _domain(node), check=False)
                pressed = time.monotonic()
            state = self.state(node)
            if state in (SHUT_OFF, MISSING):
                LOG.info("VM %s: shut off in %.1fs", node.name, time.monotonic() - began)
                return
            self.sleep(self.poll_interval)
        raise VmShutdownError(
            f"VM {node.name} did not shut off within {budget:g}s of an ACPI shutdown (still {state!r}): "
            "its disks would be only crash-consistent, so nothing is saved",
            resource=f"node/{node.name}",
            hint=f"see the guest's console log {node.console_log or ''}; a busy TCG host is slow to shut down, "
            "try again when it is quieter",
        )

    def destroy(self, node: LabNode) -> None:
        """Power off at once (a restore replaces the disks, so what the guest had in flight does not matter)."""
        if self.state(node) in (SHUT_OFF, MISSING):
            return
        self._virsh(node, "destroy", _domain(node), check=False)
        state = self.state(node)
        if state not in (SHUT_OFF, MISSING):
            raise StackLabError(f"VM {node.name}: still {state!r} after virsh destroy", resource=f"node/{node.name}")
        LOG.info("VM %s: destroyed for the restore", node.name)

    # -- start ------------------------------------------------------------------------------------------
    def start(self, node: LabNode) -> None:
        """Start the domain as it is defined (the disks it names are the checkpoint's), then wait for SSH and
        cloud-init (vm_ready, as `up` does) and for the guest's systemd to finish starting its units."""
        uri = _uri(node)
        if uri == libvirtd.URI and not libvirtd.libvirtd_answers(self.runner, uri):
            libvirtd.ensure_libvirtd(self.runner, hide_kvm=node.accel != "kvm")
        state = self.state(node)
        if state == MISSING:
            raise StackLabError(
                f"VM {node.name}: libvirt has no domain {_domain(node)} to start",
                resource=f"node/{node.name}",
                hint="a checkpoint holds the VM's disks, not its libvirt definition: `stacklab up` the lab "
                "(it defines the domain again), then restore",
            )
        if state != "running":
            if uri == libvirtd.URI:  # QEMU runs as libvirt-qemu; the engine keeps the lab dir 0700
                grant_qemu_traversal(self.lab_dir, VmLayout(self.lab_dir, node.name))
            self._virsh(node, "start", _domain(node))
        target = self._target(node)
        budget = self.ready_budget.get("kvm" if node.accel == "kvm" else "qemu", READY_BUDGET["qemu"])
        began = time.monotonic()
        self.ready_waiter(target, budget=budget, runner=self.runner)
        LOG.info("VM %s: SSH and cloud-init ready %.1fs after start", node.name, time.monotonic() - began)
        self.settle(node, target)

    def settle(self, node: LabNode, target: ReadyTarget) -> None:
        """`systemctl is-system-running --wait` over SSH: a guest whose sshd answers may still be starting units."""
        argv = ssh_argv(target, ["systemctl", "is-system-running", "--wait"])
        settle_units(self.runner, argv, what=f"VM {node.name}", node=node.name, lab=self.lab)

    def _target(self, node: LabNode) -> ReadyTarget:
        ssh = node.ssh
        if not ssh.get("host") or not ssh.get("key"):
            raise StackLabError(f"VM {node.name} records no SSH address or key", resource=f"node/{node.name}")
        return ReadyTarget(
            node=node.name,
            host=str(ssh["host"]),
            user=str(ssh.get("user", "root")),
            port=int(ssh.get("port", 22)),
            key_file=str(ssh["key"]),
            console_log=Path(node.console_log) if node.console_log else self.lab_dir / "vm" / node.name / "console.log",
            is_alive=lambda: self.state(node) == "running",
        )


def _uri(node: LabNode) -> str:
    return node.uri or libvirtd.URI


def _domain(node: LabNode) -> str:
    if not node.domain:
        raise StackLabError(f"VM {node.name} records no libvirt domain", resource=f"node/{node.name}")
    return node.domain
