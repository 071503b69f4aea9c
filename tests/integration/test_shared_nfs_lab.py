"""The shared-NFS lab (labs/shared-nfs.yml) through the CLI: MariaDB, memcached and keystone on an LXC controller,
knfsd on a VM storage node, glance-api on two VM nodes whose file store is a kernel NFS mount of the same export.
`up` (a second `up` plans nothing), then `verify --suite shared_storage` must pass every glance-on-NFS case (the
mount from the storage address on both nodes, the image's bytes read on the NFS server, an image uploaded through
one glance-api downloaded through the other), then `down` with a clean leak check. Phase times printed (pytest -s).

Nightly, not CI: three Debian VMs under TCG. Runs only with STACKLAB_NIGHTLY=1; skipped with that reason otherwise.
Unique lab name and subnets (lab_cli.unique_lab_file); `down` runs in a finalizer also when the test fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, stacklab, vm_lab_copy, vm_lab_marks
from tests.integration.test_kernel_lab import junit_outcomes

STATE_BASE = Path("/var/tmp/stacklab-shared-nfs-test")  # searchable by libvirt-qemu
NIGHTLY = os.environ.get("STACKLAB_NIGHTLY") == "1"
GLANCE_CASES = (
    "test_glance_store_is_an_nfs_mount_from_the_storage_address_on_every_glance_node",
    "test_image_uploaded_through_glance_is_the_file_on_the_export",
    "test_image_uploaded_through_one_glance_api_downloads_through_the_other",
)

pytestmark = [
    *vm_lab_marks(5400, containers=True),
    pytest.mark.skipif(not NIGHTLY, reason="nightly lab (three VMs under TCG): set STACKLAB_NIGHTLY=1 to run it"),
]


@pytest.fixture
def shared_nfs_lab() -> Iterator[LabCopy]:
    with vm_lab_copy("shared-nfs", "sn", STATE_BASE) as lab:
        yield lab


def test_shared_nfs_lab_up_verify_down(shared_nfs_lab: LabCopy) -> None:
    lab, times = shared_nfs_lab, dict[str, float]()
    start = time.monotonic()
    stacklab(lab.state, "up", "-y", str(lab.file), timeout=3000)
    times["up"] = time.monotonic() - start
    again = stacklab(lab.state, "up", "-y", str(lab.file), timeout=900)
    assert "nothing to do" in again.stderr, f"a second up changed something:\n{again.stderr[-3000:]}"

    start = time.monotonic()
    report = stacklab(lab.state, "verify", lab.name, "--suite", "shared_storage", check=False, timeout=1800)
    times["verify"] = time.monotonic() - start
    assert report.ok, f"verify failed:\n{report.stdout[-6000:]}\n{report.stderr[-2000:]}"
    outcomes = junit_outcomes(sorted((lab.state / lab.name / "verify").glob("*.xml"))[-1])
    not_passed = {case: outcomes.get(case, "missing") for case in GLANCE_CASES if outcomes.get(case) != "passed"}
    assert not not_passed, f"glance-on-NFS cases that did not pass: {not_passed}"

    start = time.monotonic()
    lab.down_clean()
    times["down"] = time.monotonic() - start
    print("shared-nfs lab: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in times.items()))
