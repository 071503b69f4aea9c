"""The storage lab end to end through the CLI: a storage node exporting iSCSI (file and RBD LUNs, CHAP), NFS and a
one-node Ceph cluster, a client node proving each path over br-storage (`verify --suite storage`, faults
included), a zero-change re-up, and `down` with a clean leak check. Unique name and subnets; removed in a finalizer
even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, stacklab, unique_lab_file

pytestmark = CONTAINER_LAB_MARKS


@pytest.fixture
def storage_lab(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    name, lab_file = unique_lab_file("storage", "st")
    state = tmp_path / "state"
    yield state, name, lab_file
    stacklab(state, "down", "--no-leak-check", name, check=False)
    lab_file.unlink(missing_ok=True)


def test_storage_lab_up_verify_down(storage_lab: tuple[Path, str, Path]) -> None:
    state, name, lab_file = storage_lab
    stacklab(state, "up", "-y", str(lab_file))
    again = stacklab(state, "up", "-y", str(lab_file))
    assert "nothing to do" in again.stderr, f"a second up changed something:\n{again.stderr[-3000:]}"
    report = stacklab(state, "verify", name, "--suite", "storage", check=False)
    assert report.ok, f"storage suite failed:\n{report.stdout[-6000:]}"
    assert " passed" in report.stdout and "skipped" not in report.stdout, report.stdout[-2000:]
    down = stacklab(state, "down", name)
    assert "leak check: clean" in down.stderr, down.stderr[-3000:]
