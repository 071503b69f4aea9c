"""The tempest lab (labs/tempest.yml) through the CLI: the default lab's cloud with neutron's L3 agent and an external
network on br-ext, where the host has the gateway address. `up` (a second `up` plans nothing), then `verify --suite
network --suite tempest`: two guests on a VXLAN network with DHCP, metadata and security groups, and tempest with
floating IPs and SSH validation into the suites' `--ssh` guest; every area's test and the run's own verdict must
pass; then `down` with a clean leak check. Phase times printed (pytest -s).

STACKLAB_TEMPEST_SUBSET picks tempest's subset as for `verify` (default `ci`, the smoke API tests; `scenario` the
storage scenarios that log in). Nightly, not CI: six containers with Ceph, Swift and the whole control plane, and
tempest's run (23 min for the CI subset on this 2-core host with a VM lab beside it). Runs only with
STACKLAB_NIGHTLY=1 and tempest installed on the host; skipped with the reason otherwise. Unique lab name and subnets
(the external network's pool moves with its cidr); `down` runs in a finalizer also when the test fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, lab_copy, nightly_up_verify_down

NIGHTLY = os.environ.get("STACKLAB_NIGHTLY") == "1"
AREAS = ("identity", "image", "volume", "object-storage", "network", "compute")
CASES = (
    "test_guests_on_a_vxlan_network",
    *(f"test_tempest_area_passes[{area}]" for area in AREAS),
    "test_tempest_run_is_complete",
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.timeout(3 * 3600),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (uid 0): bridges and containers"),
    pytest.mark.skipif(shutil.which("lxc-start") is None, reason="lxc is not installed"),
    pytest.mark.skipif(shutil.which("tempest") is None, reason="tempest is not installed (scripts/setup.sh)"),
    pytest.mark.skipif(not NIGHTLY, reason="nightly lab (tempest's run): set STACKLAB_NIGHTLY=1 to run it"),
]


@pytest.fixture
def tempest_lab(tmp_path: Path) -> Iterator[LabCopy]:
    with lab_copy(tmp_path, "tempest", "tp") as lab:
        yield lab


def test_tempest_lab_up_verify_down(tempest_lab: LabCopy) -> None:
    nightly_up_verify_down(
        tempest_lab,
        "tempest lab",
        ("network", "tempest"),
        CASES,
        what="network and tempest",
        up_timeout=3600,
        verify_timeout=3 * 3600 - 3600 - 900,
    )
