"""The reduced kernel lab (labs/kernel.yml) through the CLI: one VM storage node with LVM, LIO (an LV-backed and a
file-backed LUN, CHAP, IQN ACLs) and knfsd, one VM client with open-iscsi and the kernel NFS client. `up`, then
`verify --suite storage --suite infra` must pass every kernel case (LIO round trips and refusals, the target
restart mid-write, the open-iscsi login per LUN, knfsd over NFSv3 and v4 through libnfs and kernel mounts), then
`down` with a clean leak check. Each phase's wall time is printed (pytest -s) so CI can track the budget.

Unique lab name and subnets (tests/integration/lab_cli.unique_lab_file); the state dir is under /var/tmp, which
libvirt-qemu can search (pytest's tmp_path is not), and `down` runs in a finalizer also when the test fails. Two
Debian + cloud-init guests boot under TCG here: about 2-5 min depending on the host's load.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, junit_outcomes, stacklab, vm_lab_copy, vm_lab_marks

STATE_BASE = Path("/var/tmp/stacklab-kernel-test")  # searchable by libvirt-qemu
# The cases that only a VM node's kernel can pass; each must pass (not skip) in this lab.
KERNEL_CASES = (
    "test_iscsi_portal_listens_on_the_storage_address_only",
    "test_iscsi_lun_roundtrip_lands_on_the_backing_store[vol1]",
    "test_iscsi_lun_roundtrip_lands_on_the_backing_store[lun2]",
    "test_iscsi_wrong_chap_secret_is_refused",
    "test_iscsi_unknown_initiator_is_refused",
    "test_iscsi_target_restart_mid_write_keeps_acknowledged_writes",
    "test_open_iscsi_kernel_login_writes_land_on_the_backing_store[vol1]",
    "test_open_iscsi_kernel_login_writes_land_on_the_backing_store[lun2]",
    "test_nfs_server_is_an_enabled_unit_serving_the_storage_address",
    "test_nfs_roundtrip_lands_in_the_export[images]",
    "test_kernel_nfs_mount_writes_land_in_the_export[images]",
    "test_clients_outside_the_storage_cidr_are_refused",
)

pytestmark = vm_lab_marks(2400)


@pytest.fixture
def kernel_lab() -> Iterator[LabCopy]:
    with vm_lab_copy("kernel", "kl", STATE_BASE) as lab:
        yield lab


def test_kernel_lab_up_verify_down(kernel_lab: LabCopy) -> None:
    times: dict[str, float] = {}
    start = time.monotonic()
    stacklab(kernel_lab.state, "up", "-y", str(kernel_lab.file), timeout=1800)
    times["up"] = time.monotonic() - start

    start = time.monotonic()
    report = stacklab(
        kernel_lab.state, "verify", kernel_lab.name, "--suite", "storage", "--suite", "infra", check=False
    )
    times["verify"] = time.monotonic() - start
    assert report.ok, f"verify failed:\n{report.stdout[-6000:]}\n{report.stderr[-2000:]}"
    junit = sorted((kernel_lab.state / kernel_lab.name / "verify").glob("*.xml"))[-1]
    outcomes = junit_outcomes(junit)
    not_passed = {case: outcomes.get(case, "missing") for case in KERNEL_CASES if outcomes.get(case) != "passed"}
    assert not not_passed, f"kernel cases that did not pass: {not_passed}"

    start = time.monotonic()
    kernel_lab.down_clean()
    times["down"] = time.monotonic() - start
    print("kernel lab: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in times.items()))
