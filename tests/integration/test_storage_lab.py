"""The storage lab end to end through the CLI: a storage node exporting iSCSI (file and RBD LUNs, CHAP), NFS and a
one-node Ceph cluster, a client node proving each path over br-storage (`verify --suite storage`, faults
included), a zero-change re-up, and `down` with a clean leak check. Unique name and subnets; removed in a finalizer
even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, LabCopy, lab_copy

pytestmark = CONTAINER_LAB_MARKS


@pytest.fixture
def storage_lab(tmp_path: Path) -> Iterator[LabCopy]:
    with lab_copy(tmp_path, "storage", "st") as lab:
        yield lab


def test_storage_lab_up_verify_down(storage_lab: LabCopy) -> None:
    # the kernel-client cases (open-iscsi, kernel NFS mounts) need a VM client: tests/integration/test_kernel_lab.py
    storage_lab.up_twice_and_verify("storage", keyword="not kernel")
    storage_lab.down_clean()
