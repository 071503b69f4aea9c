"""CI's reduced reference lab (labs/cinder-kernel.yml) through the CLI: cinder-api and cinder-scheduler on an LXC
controller, cinder-volume for the lvm (LIO through cinder-rtstool, CHAP) and nfs backends on a VM storage node (its
own kernel: device-mapper, LIO, knfsd), and a VM client with open-iscsi and the kernel NFS client. `up`, a second
`up` that plans nothing, then `verify --suite volumes` must pass every kernel-backend case (the backend's pool in
the scheduler; per volume, the LV exported by LIO with cinder's CHAP account and written through the client's
kernel initiator, or the file on the export written through the client's kernel NFS mount, read back on the
storage node; and the seed's LVM warning with the whole node: the storage node's power cut while the client's
session carries an acknowledged write, its return with the bytes and the volume managed again), then `down` with
a clean leak check. Each phase's wall time and the VM nodes' memory are printed
(pytest -s).

In CI: it is the kernel paths' proof through cinder (issue 14); the whole reference lab (tgtadm too, nova on a VM
compute and the attach suite with nested TCG guests) is the nightly test_reference_lab.py. Unique lab name and
subnets (lab_cli.unique_lab_file); the state dir is under /var/tmp, which libvirt-qemu can search; `down` runs in
a finalizer also when the test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, nightly_up_verify_down, vm_lab_copy, vm_lab_marks, vm_memory

STATE_BASE = Path("/var/tmp/stacklab-cinder-kernel-test")  # searchable by libvirt-qemu
BACKEND_CASES = (
    "test_kernel_backend_reports_its_pool[lvm-lioadm]",
    "test_kernel_backend_reports_its_pool[nfs]",
    "test_lvm_volume_is_an_lv_exported_with_chap_and_written_through_iscsi[lvm-lioadm]",
    "test_nfs_volume_is_a_file_on_the_share_written_through_a_kernel_mount[nfs]",
    "test_lvm_volumes_are_lost_while_their_node_is_down_and_return_with_their_writes[lvm-lioadm]",
)

pytestmark = vm_lab_marks(5400, containers=True)


@pytest.fixture
def cinder_kernel_lab() -> Iterator[LabCopy]:
    with vm_lab_copy("cinder-kernel", "ck", STATE_BASE) as lab:
        yield lab


def test_cinder_kernel_lab_up_verify_down(cinder_kernel_lab: LabCopy) -> None:
    nightly_up_verify_down(
        cinder_kernel_lab,
        "cinder kernel lab",
        ("volumes",),
        BACKEND_CASES,
        what="kernel backend",
        up_timeout=2400,
        verify_timeout=3600,  # the storage node's power cut: 7 min quiet, 17 min beside another VM lab
        before_down=lambda: vm_memory(cinder_kernel_lab, "storage1", "client1"),
    )
