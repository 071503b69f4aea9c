"""ebtables_among.py against the host's real ebtables and kernel, in a network namespace of its own: neutron's delete
of a MAC anti-spoofing rule (`-D neutronMAC-tapX -i tapX --among-src MAC -j RETURN`) removes the rule.

On this host (Debian 12's ebtables-nft 1.8.9, kernel 6.18) the same delete given to ebtables itself fails with
`RULE_DELETE failed (Invalid argument)`; the test prints what the plain delete did, and passes on a host where it
works too (the shim only changes how the rule is named). The namespace is deleted in a finalizer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacklab.drivers.openstack import ebtables_among
from stacklab.exec.runner import LocalRunner

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (uid 0): a network namespace and ebtables"),
    pytest.mark.skipif(shutil.which("ebtables") is None, reason="ebtables is not installed"),
]
SHIM = Path(ebtables_among.__file__)
CHAIN = "neutronMAC-tapstl0"
RULE = ["-i", "tapstl0", "--among-src", "fa:16:3e:00:0a:01", "-j", "RETURN"]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"stl-ebt-{secrets.token_hex(3)}"
    runner = LocalRunner()
    runner.run(["ip", "netns", "add", name], timeout=30)
    try:
        yield name
    finally:
        runner.run(["ip", "netns", "del", name], timeout=30, check=False)


def rules(netns: str) -> list[str]:
    out = LocalRunner().run(["ip", "netns", "exec", netns, "ebtables", "-t", "nat", "-L", CHAIN, "--Ln"], timeout=30)
    return [line for line in out.stdout.splitlines() if line[:1].isdigit()]


def test_neutrons_among_delete_goes_through(netns: str) -> None:
    runner = LocalRunner()

    def ebtables(*args: str, shim: bool = False, check: bool = True) -> int:
        tool = [sys.executable, str(SHIM)] if shim else ["ebtables"]
        return runner.run(["ip", "netns", "exec", netns, *tool, *args], timeout=60, check=check).returncode

    # what neutron's linuxbridge agent makes for a port (arp_protect._install_mac_spoofing_protection)
    ebtables("-t", "nat", "--concurrent", "-N", CHAIN, "-P", "DROP")
    ebtables("-t", "nat", "--concurrent", "-A", CHAIN, "-j", "DROP")
    ebtables("-t", "nat", "--concurrent", "-I", CHAIN, *RULE)
    assert len(rules(netns)) == 2
    plain = ebtables("-t", "nat", "--concurrent", "-D", CHAIN, *RULE, check=False)
    print(f"plain ebtables delete by spec: exit {plain}")
    if plain == 0:  # this host's ebtables can: put the rule back for the shim
        ebtables("-t", "nat", "--concurrent", "-I", CHAIN, *RULE)
    assert ebtables("-t", "nat", "--concurrent", "-D", CHAIN, *RULE, shim=True, check=False) == 0
    assert rules(netns) == ["1 -j DROP"], "the among rule is still there after the shim's delete"
    # another command runs as given: the chain's last rule by its own spec, then the chain
    assert ebtables("-t", "nat", "--concurrent", "-D", CHAIN, "-j", "DROP", shim=True, check=False) == 0
    assert rules(netns) == []
