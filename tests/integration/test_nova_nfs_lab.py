"""The nova-on-NFS lab (labs/nova-nfs.yml) through the CLI: MariaDB, RabbitMQ, memcached, keystone, glance (file
store), placement, neutron and nova's API services on an LXC controller, knfsd on a VM storage node, nova-compute on
two VM computes whose /var/lib/nova/instances is a kernel NFS mount of the same export. `up` (a second `up` plans
nothing), then `verify --suite migration --suite evacuation` must pass every case: the live migration and the
host-evacuate-live of a running guest (its heartbeat goes on, its disk file on the export is the same file, both
computes show the export mounted from the server's br-storage address) and the evacuation of a guest whose host
died (the same disk file, a new boot on it; the returning host destroys its copy of the guest, not the disk); then
`down` with a clean leak check. Phase times printed (pytest -s).

Nightly, not CI: three Debian VMs under TCG and guests under nested TCG. Runs only with STACKLAB_NIGHTLY=1; skipped
with that reason otherwise. Unique lab name and subnets (lab_cli.unique_lab_file); the state dir is under /var/tmp,
which libvirt-qemu can search; `down` runs in a finalizer also when the test fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, stacklab, vm_lab_copy, vm_lab_marks
from tests.integration.test_kernel_lab import junit_outcomes

STATE_BASE = Path("/var/tmp/stacklab-nova-nfs-test")  # searchable by libvirt-qemu
NIGHTLY = os.environ.get("STACKLAB_NIGHTLY") == "1"
SHARED_DISK_CASES = (
    "test_live_migration_keeps_the_guest_running",
    "test_host_evacuate_live_empties_a_compute",
    "test_instance_survives_its_host_on_shared_storage",
)

pytestmark = [
    *vm_lab_marks(9000, containers=True),
    pytest.mark.skipif(not NIGHTLY, reason="nightly lab (three VMs under TCG): set STACKLAB_NIGHTLY=1 to run it"),
]


@pytest.fixture
def nova_nfs_lab() -> Iterator[LabCopy]:
    with vm_lab_copy("nova-nfs", "nn", STATE_BASE) as lab:
        yield lab


def test_nova_nfs_lab_up_verify_down(nova_nfs_lab: LabCopy) -> None:
    lab, times = nova_nfs_lab, dict[str, float]()
    start = time.monotonic()
    stacklab(lab.state, "up", "-y", str(lab.file), timeout=3000)
    times["up"] = time.monotonic() - start
    again = stacklab(lab.state, "up", "-y", str(lab.file), timeout=900)
    assert "nothing to do" in again.stderr, f"a second up changed something:\n{again.stderr[-3000:]}"

    start = time.monotonic()
    report = stacklab(lab.state, "verify", lab.name, "--suite", "migration", "--suite", "evacuation", check=False,
                      timeout=5400)  # fmt: skip
    times["verify"] = time.monotonic() - start
    assert report.ok, f"verify failed:\n{report.stdout[-6000:]}\n{report.stderr[-2000:]}"
    outcomes = junit_outcomes(sorted((lab.state / lab.name / "verify").glob("*.xml"))[-1])
    not_passed = {c: outcomes.get(c, "missing") for c in SHARED_DISK_CASES if outcomes.get(c) != "passed"}
    assert not not_passed, f"nova-on-NFS cases that did not pass: {not_passed}"

    start = time.monotonic()
    lab.down_clean()
    times["down"] = time.monotonic() - start
    print("nova-nfs lab: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in times.items()))
