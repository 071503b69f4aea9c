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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, nightly_up_verify_down, vm_lab_copy, vm_lab_marks

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
    nightly_up_verify_down(
        nova_nfs_lab,
        "nova-nfs lab",
        ("migration", "evacuation"),
        SHARED_DISK_CASES,
        what="nova-on-NFS",
        up_timeout=3000,
        verify_timeout=5400,
    )
