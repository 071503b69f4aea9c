"""What the `network` suite reads on a compute that runs neutron's Open vSwitch agent (drivers/openstack/
neutron_ovs.py), the counterparts of the linuxbridge readings in test_network.py: the tunnel to the peer's node on
br-tun, and a port's anti-spoofing flows on br-int.

The OVS firewall (`firewall_driver = openvswitch`) admits a port's egress frames in br-int's table 71
(BASE_EGRESS_TABLE) only from the MACs it may use: one flow per allowed (MAC, address) pair matching
the tap's ofport (`in_port`, `reg5`) and `dl_src=<MAC>`; anything else from the port falls to a drop. An allowed address
pair added to the port shows as its MAC in those flows once the agent has re-made them.

The parsers are pure (tests/unit feeds them recorded `ovs-ofctl` and `ovs-vsctl` output); the readers run the tools
on the node through the suite's runner.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from stacklab.exec.runner import Runner

BASE_EGRESS_TABLE = 71
OPENFLOW = "OpenFlow13"  # the agent limits its bridges to OpenFlow 1.0 and 1.3; ovs-ofctl's default is 1.0 only
_DL_SRC = re.compile(r"\bdl_src=([0-9a-f:]{17})\b")


def tap_name(port_id: str) -> str:
    """The tap device nova plugs a port in as (`tap` + the port id's first 11 characters)."""
    return f"tap{port_id[:11]}"


def macs(found: Iterable[str]) -> frozenset[str]:
    """MAC addresses in one form (lower case, two digits an octet) for comparing sets."""
    return frozenset(":".join(f"{int(o, 16):02x}" for o in m.split(":")) for m in found if m)


def egress_macs(dump: str, ofport: int) -> frozenset[str]:
    """The source MACs br-int's table 71 admits from the port at `ofport` (`ovs-ofctl --no-names dump-flows`)."""
    found = []
    for line in dump.splitlines():
        # the port's flows match its ofport as in_port, or (some of Zed's) only as register 5 (the firewall's
        # REG_PORT, printed in hex)
        if f"table={BASE_EGRESS_TABLE}," not in line or not re.search(
            rf"\b(in_port={ofport}|reg5={ofport:#x})\b", line
        ):
            continue
        match = _DL_SRC.search(line)
        if match:
            found.append(match.group(1))
    return macs(found)


def vxlan_ports(listing: str) -> list[dict[str, str]]:
    """The options of every VXLAN interface in `ovs-vsctl --format=json --columns=name,options find Interface
    type=vxlan` output: [{"name": ..., "remote_ip": ..., "local_ip": ..., "dst_port": ...}, ...]."""
    table = json.loads(listing or "{}")
    rows = []
    for name, options in table.get("data", []):
        pairs: list[Any] = options[1] if isinstance(options, list) and options[0] == "map" else []
        rows.append({"name": str(name), **{str(k): str(v) for k, v in pairs}})
    return rows


def tunnel_problems(runner: Runner, vni: int, local: str, peer: str, udp_port: int) -> list[str]:
    """What is wrong with "br-tun has a VXLAN port from `local` to the peer's node at `peer` on `udp_port`, and a
    flow that takes the network's VNI in" (empty: nothing)."""
    listing = runner.run(["ovs-vsctl", "--format=json", "--columns=name,options", "find", "Interface",
                          "type=vxlan"], timeout=30, check=False)  # fmt: skip
    if not listing.ok:
        return [f"ovs-vsctl cannot list the VXLAN ports: {listing.stderr.strip()}"]
    ports = vxlan_ports(listing.stdout)
    to_peer = [p for p in ports if p.get("remote_ip") == peer]
    problems = []
    if not to_peer:
        problems.append(f"no VXLAN port to {peer} on br-tun: {ports}")
    elif (to_peer[0].get("local_ip"), to_peer[0].get("dst_port")) != (local, str(udp_port)):
        problems.append(f"the VXLAN port to {peer} is {to_peer[0]}, expected local_ip {local}, dst_port {udp_port}")
    flows = runner.run(["ovs-ofctl", "-O", OPENFLOW, "--no-names", "dump-flows", "br-tun"], timeout=30, check=False)
    if f"tun_id={vni:#x}" not in flows.stdout:
        problems.append(f"br-tun has no flow for VNI {vni} (tun_id={vni:#x}): {flows.stdout.strip()[-600:]!r}")
    return problems


def port_egress_macs(runner: Runner, port_id: str) -> frozenset[str] | str:
    """The MACs br-int admits from the port's tap, or why they cannot be read (the tap not on br-int)."""
    tap = tap_name(port_id)
    ofport = runner.run(["ovs-vsctl", "get", "Interface", tap, "ofport"], timeout=30, check=False)
    if not ofport.ok or not ofport.stdout.strip().isdigit() or int(ofport.stdout) <= 0:
        return f"{tap} has no OpenFlow port on br-int ({ofport.stdout.strip() or ofport.stderr.strip()})"
    dump = runner.run(["ovs-ofctl", "-O", OPENFLOW, "--no-names", "dump-flows", "br-int",
                       f"table={BASE_EGRESS_TABLE}"], timeout=60, check=False)  # fmt: skip
    return egress_macs(dump.stdout, int(ofport.stdout))
