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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, nightly_up_verify_down, vm_lab_copy, vm_lab_marks

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
    nightly_up_verify_down(
        shared_nfs_lab,
        "shared-nfs lab",
        ("shared_storage",),
        GLANCE_CASES,
        what="glance-on-NFS",
        up_timeout=3000,
        verify_timeout=1800,
    )
