"""The control-plane lab end to end through the CLI: MariaDB, RabbitMQ, memcached, keystone, glance and the Swift
proxy on a controller, three Swift storage nodes (`verify --suite openstack --suite replication` from a client),
a zero-change re-up, a stopped keystone seen as drift and
repaired by the next `up`, and `down` with a clean leak check. Unique name and subnets; removed in a finalizer even
when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, stacklab, unique_lab_file

pytestmark = CONTAINER_LAB_MARKS


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    name, lab_file = unique_lab_file("control-plane", "cp")
    state = tmp_path / "state"
    yield state, name, lab_file
    stacklab(state, "down", "--no-leak-check", name, check=False)
    lab_file.unlink(missing_ok=True)


def test_control_plane_up_verify_repair_down(control_plane: tuple[Path, str, Path]) -> None:
    state, name, lab_file = control_plane
    stacklab(state, "up", "-y", str(lab_file))
    again = stacklab(state, "up", "-y", str(lab_file))
    assert "nothing to do" in again.stderr, f"a second up changed something:\n{again.stderr[-3000:]}"
    report = stacklab(state, "verify", name, "--suite", "openstack", "--suite", "replication", check=False)
    assert report.ok, f"openstack/replication suites failed:\n{report.stdout[-6000:]}"
    assert "9 passed" in report.stdout and "skipped" not in report.stdout, report.stdout[-2000:]

    stacklab(state, "ssh", name, "infra1", "systemctl", "stop", "keystone")
    plan = stacklab(state, "plan", str(lab_file))
    assert "service/keystone" in plan.stdout + plan.stderr and "keystone is not running" in plan.stdout + plan.stderr
    stacklab(state, "up", "-y", str(lab_file))
    report = stacklab(state, "verify", name, "--suite", "openstack", "-k", "keystone", check=False)
    assert report.ok, f"keystone was not repaired by up:\n{report.stdout[-4000:]}"

    down = stacklab(state, "down", name)
    assert "leak check: clean" in down.stderr, down.stderr[-3000:]
