"""The two-agent lab (labs/ovs.yml) through the CLI: MariaDB, RabbitMQ, memcached, keystone, glance (file store),
placement, neutron (API, RPC server, linuxbridge, DHCP and metadata agents) and nova's API services on an LXC
controller, nova-compute with the linuxbridge agent on an LXC compute, nova-compute with Open vSwitch and
neutron's OVS agent on a VM compute. `up` (a second `up` plans nothing), then `verify --suite infra --suite network`
must pass: a guest on each compute, DHCP and metadata for both, pings across the VXLAN network between the OVS
node's br-tun and the linuxbridge node's vxlan interface, a deleted ICMP rule closing both ports, a port update
reaching each compute's anti-spoofing rules (ebtables on one, br-int's flows on the other); then `down` with a
clean leak check. Phase times and the OVS agent's and ovs-vswitchd's RSS on the VM compute printed (pytest -s).

Nightly, not CI: a Debian VM under TCG and a guest under nested TCG. Runs only with STACKLAB_NIGHTLY=1; skipped
with that reason otherwise. Unique lab name and subnets (lab_cli.unique_lab_file); the state dir is under /var/tmp,
which libvirt-qemu can search; `down` runs in a finalizer also when the test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import LabCopy, nightly_up_verify_down, stacklab, vm_lab_copy, vm_lab_marks

STATE_BASE = Path("/var/tmp/stacklab-ovs-test")  # searchable by libvirt-qemu
NIGHTLY = os.environ.get("STACKLAB_NIGHTLY") == "1"
OVS_COMPUTE = "compute2"
# the process names `ps -C` matches (the agent's is its script's name, cut to 15 characters by the kernel)
OVS_PROCESSES = ("neutron-openvsw", "ovs-vswitchd", "ovsdb-server")

pytestmark = [
    *vm_lab_marks(5400, containers=True),
    pytest.mark.skipif(not NIGHTLY, reason="nightly lab (a VM compute under TCG): set STACKLAB_NIGHTLY=1 to run it"),
]


@pytest.fixture
def ovs_lab() -> Iterator[LabCopy]:
    with vm_lab_copy("ovs", "ovs", STATE_BASE) as lab:
        yield lab


def ovs_rss(lab: LabCopy) -> str:
    """'; RSS on compute2: NAME N MiB, ...': what Open vSwitch and neutron's OVS agent hold in the VM compute."""
    found = []
    for name in OVS_PROCESSES:
        out = stacklab(lab.state, "ssh", lab.name, OVS_COMPUTE, f"ps -o rss= -C {name}", check=False).stdout
        kib = sum(int(word) for word in out.split() if word.isdigit())
        found.append(f"{name} {kib // 1024} MiB")
    return f"; RSS on {OVS_COMPUTE}: " + ", ".join(found)


def test_ovs_lab_up_verify_down(ovs_lab: LabCopy) -> None:
    nightly_up_verify_down(
        ovs_lab,
        "ovs lab",
        ("infra", "network"),
        ("test_guests_on_a_vxlan_network",),
        what="two-agent network",
        up_timeout=3000,
        verify_timeout=2400,
        before_down=lambda: ovs_rss(ovs_lab),
    )
