"""ebtables_among.py (container nodes' /usr/local/sbin/ebtables): which command it turns into a delete by number,
from neutron's own argv and what ebtables lists; everything else runs as given."""

from __future__ import annotations

import subprocess
from typing import Any

from stacklab.drivers.openstack import ebtables_among as shim
from stacklab.drivers.openstack import neutron_agents
from tests.unit.test_neutron_agents import layout

NEUTRON_DELETE = ["-t", "nat", "--concurrent", "-D", "neutronMAC-tap6645b58e-eb", "-i", "tap6645b58e-eb",
                  "--among-src", "fa:16:3e:16:bb:3e", "-j", "RETURN"]  # fmt: skip
# what `ebtables -t nat -L neutronMAC-tap6645b58e-eb --Ln` printed on the tempest lab's compute2
LISTING = """Bridge table: nat

Bridge chain: neutronMAC-tap6645b58e-eb, entries: 2, policy: RETURN
1 -i tap6645b58e-eb --among-src fa:16:3e:16:bb:3e -j RETURN
2 -j DROP
"""


def lister(listing: str, returncode: int = 0) -> Any:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode, listing, "")

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_neutrons_among_delete_becomes_a_delete_by_number() -> None:
    run = lister(LISTING)
    assert shim.by_number(NEUTRON_DELETE, run) == [
        "/usr/sbin/ebtables", "-t", "nat", "--concurrent", "-D", "neutronMAC-tap6645b58e-eb", "1"
    ]  # fmt: skip
    assert run.calls == [["/usr/sbin/ebtables", "-t", "nat", "--concurrent", "-L", "neutronMAC-tap6645b58e-eb",
                          "--Ln"]]  # fmt: skip


def test_macs_compare_as_ebtables_prints_them_in_any_order() -> None:
    listing = "1 -i tap1 --among-src fa:16:3e:0:0:1,fa:16:3e:a:b:c -j RETURN\n"
    spec = ["-i", "tap1", "--among-src", "fa:16:3e:0a:0b:0c,fa:16:3e:00:00:01", "-j", "RETURN"]
    assert shim.rule_number(listing, spec) == 1
    assert shim.rule_number(listing, [*spec[:3], "fa:16:3e:00:00:02", "-j", "RETURN"]) is None


def test_anything_else_runs_as_given() -> None:
    run = lister(LISTING)
    assert shim.by_number(["-t", "nat", "--concurrent", "-D", "PREROUTING", "-i", "tapX", "-j", "neutronMAC-tapX"],
                          run) is None  # fmt: skip
    assert shim.by_number(["-t", "nat", "-L"], run) is None
    assert shim.by_number(["-t", "nat", "-D", "neutronMAC-tapX", "1"], run) is None
    assert run.calls == []  # no listing for commands it leaves alone
    # no such rule, or the listing failed: the real ebtables answers the original command
    assert shim.by_number([*NEUTRON_DELETE[:-3], "fa:16:3e:99:99:99", "-j", "RETURN"], lister(LISTING)) is None
    assert shim.by_number(NEUTRON_DELETE, lister("", returncode=1)) is None


def test_container_nodes_get_it_vm_nodes_do_not() -> None:
    plan = layout()
    node = next(iter(neutron_agents.computes(plan)))
    files = neutron_agents.node_files(plan, node, ("r", "m"))
    assert files[neutron_agents.EBTABLES_SHIM].startswith("#!/usr/bin/python3\n# written by stacklab for lab ")
    assert neutron_agents.EBTABLES_SHIM not in neutron_agents.node_files(plan, node, ("r", "m"), vm=True)


def test_the_network_suite_reads_the_among_sets_as_ebtables_prints_them() -> None:
    from stacklab.suites.test_network import among_macs

    listing = LISTING.replace("fa:16:3e:16:bb:3e", "fa:16:3e:16:bb:3e,fa:16:3e:5a:1a:b0")
    assert among_macs(listing) == [frozenset({"fa:16:3e:16:bb:3e", "fa:16:3e:5a:1a:b0"})]
    assert among_macs("1 -i tap1 --among-src fa:16:3e:0:0:1 -j RETURN\n2 -j DROP\n") == [frozenset({"fa:16:3e:0:0:1"})]
    assert among_macs("Bridge chain: x, entries: 0\n") == []
