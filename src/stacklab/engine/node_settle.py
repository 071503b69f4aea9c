"""Until a node's systemd has finished starting its units, for a checkpoint's start of containers and VMs alike.

After SSH answers a node may still be starting units: tgt or a Ceph OSD (the checkpoint test saw tgt `activating`
right after a save's start). quiesce.py asks through lxc-attach, vm_quiesce.py over SSH.
"""

from __future__ import annotations

import logging

from stacklab.errors import StackLabError
from stacklab.exec.runner import CommandTimeout, Runner

LOG = logging.getLogger(__name__)

SETTLE_BUDGET = 300.0
SETTLED = ("running", "degraded")  # degraded: a unit failed; the node's own steps and suites say which


def settle_units(runner: Runner, argv: list[str], *, what: str, node: str, lab: str) -> None:
    """Run `argv` (a node's `systemctl is-system-running --wait`, through lxc-attach or SSH) until its systemd reports
    its start finished; fail naming `what` when it does not within SETTLE_BUDGET."""
    try:
        state = runner.run(argv, timeout=SETTLE_BUDGET, check=False).stdout.strip()
    except CommandTimeout:
        state = f"still starting after {SETTLE_BUDGET:g}s"
    if state not in SETTLED:
        raise StackLabError(
            f"{what}: systemd did not finish starting its units ({state or 'no answer'})",
            resource=f"node/{node}",
            hint=f"stacklab ssh {lab} {node} systemctl list-jobs",
        )
    if state == "degraded":
        LOG.warning("%s started degraded (a unit failed)", what)
