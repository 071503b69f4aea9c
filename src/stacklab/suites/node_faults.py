"""A node that loses power and comes back, as the suites inflict it on a VM node over SSH.

`power_cut` resets the node's kernel at once (sysrq `b`: no sync, no unmount, no unit stopped), which is what a
host's reset button or a power loss followed by the power's return does: everything in the node's memory (LIO's
configfs targets, the page cache, every process) is gone, and only what reached its disks comes back. A VM keeps
its QEMU process through the guest's reset (libvirt's on_reboot restart), so the node boots again on its own and
the suite watches it return: a new boot id over SSH.
"""

from __future__ import annotations

import time

from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext

BOOT_ID = "/proc/sys/kernel/random/boot_id"
# sysrq-trigger takes `b` from root whatever kernel.sysrq allows for the keyboard; the one-second delay lets the
# SSH command return before the kernel goes, and the redirects free the session's channel
CUT = "exec </dev/null >/dev/null 2>&1; (sleep 1; echo b > /proc/sysrq-trigger) &"


def boot_id(runner: Runner, timeout: float = 30.0) -> str:
    return runner.run(["cat", BOOT_ID], timeout=timeout).stdout.strip()


def power_cut(lab: LabContext, node: str) -> str:
    """Reset the node's kernel now, over a connection of its own (which dies with the kernel); return the boot id
    the node had. Other runners to the node reconnect on their next command once it is back."""
    with lab.runner(node) as runner:
        before = boot_id(runner)
        runner.run(["sh", "-c", CUT], timeout=30.0)
    return before


def wait_for_return(lab: LabContext, node: str, old_boot: str, budget: float, *, interval: float = 5.0) -> float:
    """Seconds until the node answers over SSH with a boot id other than `old_boot` (it went down and came back),
    each probe on a new connection. Raises AssertionError naming the last answer when the budget runs out."""
    start = time.monotonic()
    last = "no answer yet"
    while time.monotonic() - start < budget:
        try:
            with lab.runner(node) as runner:
                now = boot_id(runner, timeout=20.0)
        except (StackLabError, OSError) as exc:  # down, booting, or sshd not yet listening
            last = f"{type(exc).__name__}: {exc}"
        else:
            if now and now != old_boot:
                return time.monotonic() - start
            last = f"still boot id {now}: the node has not gone down yet"
        time.sleep(interval)
    raise AssertionError(f"{node} did not come back within {budget:g} s of its power cut ({last})")
