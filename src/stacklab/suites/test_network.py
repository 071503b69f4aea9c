"""Suite `network`: guests on a tenant VXLAN network, as neutron's agents make it.

Two of the suites' guests, built with a NIC (guest_initrd.py --net), boot on two different computes, each on a
port made beforehand on a fresh project network (VXLAN, a DHCP subnet) in a fresh security group that lets ICMP in.
First, neutron must count each compute's L2 agent alive (else its guest's port cannot bind: the suite names the
compute and the agent instead of a failed boot). What each guest reports on its console proves the claim, checked
against what neutron and nova say:

- its DHCP lease: the MAC and the address on eth0 are the port's, as neutron allocated them;
- its metadata, fetched from 169.254.169.254 (the DHCP namespace's proxy, neutron's metadata agent, nova's
  metadata API): the instance's own uuid, and the marker the suite put in its user-data;
- its peer (named in its user-data) answers its pings: the frames cross from one compute to the other through
  the network's VXLAN interface, whose forwarding entry for the peer's node l2population wrote;
- security groups are enforced: with the ICMP rule deleted both guests' pings fail (counted after the delete),
  with the rule back they pass again (counted after the re-add);
- a port update goes through, on each guest's port in turn: with an allowed address pair added, a linuxbridge
  compute's agent replaces the port's MAC anti-spoofing rule (ebtables nat chain neutronMAC-tap...) by one with
  both MACs; an Open vSwitch compute's agent re-makes the port's egress flows on br-int (table 71) so that they
  admit both MACs (suites/ovs_flows.py).

The ports bind to the computes the instances run on (binding:host_id): as `bridge` VIFs on a linuxbridge compute,
as `ovs` VIFs plugged straight into br-int (no hybrid plug: the OVS firewall) on a compute that runs the Open vSwitch
agent (a VM compute, drivers/openstack/neutron_ovs.py). There the tunnel to the peer's node is a VXLAN port on
br-tun, on the linuxbridge agents' UDP port. A lab with one compute of each kind proves that the two agents share
a network: DHCP from the controller's linuxbridge side, pings across, a rule removed closing the OVS compute's port.
The network, ports, group, servers and images are deleted afterwards.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import FLAVOR, GuestImage, guest_image, guest_wait, nested_timeout
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import OS_CLIENT, admin_auth, os_client, service
from stacklab.suites.ovs_flows import macs as ovs_macs
from stacklab.suites.ovs_flows import port_egress_macs, tunnel_problems

NET_CLIENT = OS_CLIENT.rsplit("/", 1)[0] + "/net_client.py"
CIDR = "192.168.77.0/24"  # lives only on the VXLAN network, inside the lab's nodes
# what neutron may hand to ports (the DHCP port's and the guests'): PAIR_IP below stays outside it, so no guest is
# ever given the address the suite adds as an allowed pair (neutron once gave a guest .250 from the whole range)
POOL = ("192.168.77.100", "192.168.77.199")
GUEST_BUDGET = 300.0  # a TCG guest's boot, its DHCP and metadata on a loaded lab node
FLIP_BUDGET = 120.0  # the agents apply a rule change within seconds; the guests ping every ~2 s
LINE = re.compile(r"stacklab-net: (.*)")
# a guest on a VM compute (the OVS compute) runs under nested TCG: minutes to boot and seconds to tens of seconds a
# ping round; its waits get guest.NESTED_GUEST_WAIT, the case guest.NESTED_CASE_TIMEOUT
pytestmark = nested_timeout(900)


def net_call(runner: Runner, action: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """net_client.py ACTION on the node, beside os_client.py (which it imports); the request on stdin."""
    for path, name in ((OS_CLIENT, "os_client.py"), (NET_CLIENT, "net_client.py")):
        write_node_file(runner, path, resources.files("stacklab.suites").joinpath(name).read_text())
    result = runner.run(["python3", NET_CLIENT, action], input=json.dumps(request), timeout=600, check=False)
    assert result.ok, f"net_client {action} failed: {result.stderr[-1500:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


PAIR_MAC, PAIR_IP = "fa:16:3e:5a:1a:b0", "192.168.77.250"  # an allowed address pair the suite adds to a port


def mac_set(macs: Iterable[str]) -> frozenset[str]:
    """MAC addresses as ebtables prints them: hex octets without leading zeros (fa:16:3e:0:0:1)."""
    return frozenset(":".join(f"{int(o, 16):x}" for o in m.split(":")) for m in macs if m)


def among_macs(listing: str) -> list[frozenset[str]]:
    """The `--among-src` MAC sets of an `ebtables -L CHAIN` listing (mac_set's form)."""
    found = []
    for line in listing.splitlines():
        words = line.split()
        if "--among-src" in words:
            found.append(mac_set(words[words.index("--among-src") + 1].split(",")))
    return found


def anti_spoofing_after_update(runner: Runner, port_id: str, macs: set[str]) -> float:
    """Seconds until the port's MAC chain on its compute holds one among rule of exactly `macs`; fails naming what
    the chain still shows when the agent does not get there within FLIP_BUDGET."""
    chain = f"neutronMAC-tap{port_id[:11]}"
    want = [mac_set(macs)]
    started, listing = time.monotonic(), ""
    while time.monotonic() - started < FLIP_BUDGET:
        listing = runner.run(["ebtables", "-t", "nat", "-L", chain], timeout=60, check=False).stdout
        if among_macs(listing) == want:
            return time.monotonic() - started
        time.sleep(2.0)
    raise AssertionError(
        f"the agent did not re-make {chain} for the updated port within {FLIP_BUDGET:g}s (an agent stuck deleting "
        f"the old rule plugs no other port): it shows {among_macs(listing) or listing.strip()[-400:]}"
    )


def ovs_spoofing_after_update(runner: Runner, port_id: str, macs: set[str]) -> float:
    """Seconds until br-int's egress flows for the port admit exactly `macs` on an Open vSwitch compute; fails
    naming what the flows still admit when the agent does not get there within FLIP_BUDGET."""
    want = ovs_macs(macs)
    started, seen = time.monotonic(), port_egress_macs(runner, port_id)
    while seen != want and time.monotonic() - started < FLIP_BUDGET:
        time.sleep(2.0)
        seen = port_egress_macs(runner, port_id)
    if seen != want:
        raise AssertionError(
            f"the Open vSwitch agent did not re-make the egress flows of tap{port_id[:11]} for the updated port "
            f"within {FLIP_BUDGET:g}s: br-int admits {sorted(seen) if isinstance(seen, frozenset) else seen}, "
            f"expected {sorted(want)} (is neutron-openvswitch-agent running on that compute?)"
        )
    return time.monotonic() - started


LINUXBRIDGE_AGENT, OVS_AGENT = "Linux bridge agent", "Open vSwitch agent"  # neutron's agent_type of each L2 agent


def l2_agent_problems(agents: Iterable[Mapping[str, Any]], wanted: Mapping[str, str]) -> list[str]:
    """What is wrong with "neutron counts the L2 agent each compute runs alive" (`wanted`: compute -> agent type);
    a compute whose agent is gone cannot bind its guest's port, and the boot would fail far from the cause."""
    alive = {(str(a["host"]), str(a["agent_type"])) for a in agents if a.get("alive")}
    unit = {LINUXBRIDGE_AGENT: "neutron-linuxbridge-agent", OVS_AGENT: "neutron-openvswitch-agent"}
    return [
        f"neutron counts no live {kind} on {compute}: its guest's port cannot bind there (is {unit[kind]} running "
        f"on {compute}? see /var/log/neutron/{unit[kind]}.log there)"
        for compute, kind in wanted.items()
        if (compute, kind) not in alive
    ]


def net_lines(console: str) -> list[str]:
    """The `stacklab-net:` reports of a guest's console, in order."""
    return [m.group(1).strip() for m in LINE.finditer(console)]


def lease(lines: list[str]) -> tuple[str, str] | None:
    """(MAC, address) of the guest's DHCP report, if it made one."""
    for line in lines:
        words = line.split()
        if words[:2] == ["dhcp", "eth0"] and len(words) >= 6:
            return words[3], words[5]
    return None


def reported(lines: list[str], what: str) -> str | None:
    """The value of the guest's `metadata <what> <value>` report, if it made one."""
    for line in lines:
        words = line.split()
        if words[:2] == ["metadata", what] and len(words) == 3:
            return words[2]
    return None


def pings(lines: list[str], peer: str) -> list[tuple[str, int]]:
    """(ok|fail, counter) of each ping the guest reported to `peer`."""
    found = []
    for line in lines:
        words = line.split()
        if words[:2] == ["ping", peer] and len(words) == 4 and words[3].isdigit():
            found.append((words[2], int(words[3])))
    return found


def last_count(lines: list[str], peer: str) -> int:
    return max((n for _, n in pings(lines, peer)), default=0)


def first_after(lines: list[str], peer: str, after: int, result: str) -> int | None:
    """The counter of the first `result` ping to `peer` counted after `after` (None: none yet)."""
    return next((n for r, n in pings(lines, peer) if n > after and r == result), None)


@dataclass
class Guest:
    name: str
    port: Mapping[str, Any]  # id, mac, address (as neutron allocated them)
    marker: str
    compute: str
    server: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class NetLab:
    controller: Runner
    runners: Mapping[str, Runner]
    auth: Mapping[str, str]
    nova: Mapping[str, Any]
    neutron: Mapping[str, Any]
    guest_budget: float = GUEST_BUDGET  # a guest's boot, DHCP, metadata, first ping
    flip_budget: float = FLIP_BUDGET  # the pings' answer to a rule change

    def ovs(self, compute: str) -> bool:
        """The compute runs neutron's Open vSwitch agent (not the linuxbridge one)."""
        return compute in (self.neutron.get("openvswitch") or {}).get("hosts", ())

    def console(self, guest: Guest) -> list[str]:
        assert guest.server is not None
        path = f"{self.nova['instances_path']}/{guest.server['id']}/console.log"
        found = self.runners[guest.compute].run(["cat", path], timeout=30, check=False)
        return net_lines(found.stdout)

    def wait(self, guests: list[Guest], what: str, done: Callable[[list[str], Guest], bool],
             budget: float | None = None) -> None:  # fmt: skip
        """Until done(console lines, guest) holds for every guest (within `budget`, else guest_budget); fails quoting
        their last reports."""
        budget = self.guest_budget if budget is None else budget
        deadline = time.monotonic() + budget
        while True:
            seen = {g.name: self.console(g) for g in guests}
            if all(done(seen[g.name], g) for g in guests):
                return
            if time.monotonic() > deadline:
                tails = {name: lines[-6:] for name, lines in seen.items()}
                pytest.fail(f"{what}: not within {budget:g}s; the guests' last reports: {tails}")
            time.sleep(3.0)


def two_computes(nova: Mapping[str, Any]) -> list[str]:
    computes = [str(c) for c in nova["computes"]]
    if len(computes) < 2:
        pytest.skip("the network suite needs two compute nodes")
    return computes[:2]


@contextmanager
def tenant_network(controller: Runner, auth: Mapping[str, str], ports: int) -> Iterator[dict[str, Any]]:
    name = f"stacklab-net-{secrets.token_hex(3)}"
    made = net_call(controller, "setup", {**auth, "name": name, "cidr": CIDR, "pool": POOL, "ports": ports})
    try:
        yield made
    finally:
        request = {**auth, "ports": [p["id"] for p in made["ports"]], "group_id": made["group_id"],
                   "network_id": made["network_id"]}  # fmt: skip
        net_call(controller, "teardown", request)


@contextmanager
def servers(nl: NetLab, image: GuestImage, guests: list[Guest]) -> Iterator[None]:
    try:
        for guest, peer in zip(guests, [*guests[1:], guests[0]], strict=True):
            user_data = f"stacklab-marker={guest.marker}\nstacklab-peer={peer.port['address']}\n"
            zone = f"{nl.nova['zones'].get(guest.compute, 'nova')}:{guest.compute}"
            request = {**nl.auth, "name": guest.name, "image_id": image.image_id, "port_id": guest.port["id"],
                       "user_data": user_data, "zone": zone, **FLAVOR}  # fmt: skip
            guest.server = net_call(nl.controller, "boot", request)
        yield
    finally:
        for guest in guests:
            if guest.server is not None:
                os_client(nl.controller, "nova", "delete", {**nl.auth, "server_id": guest.server["id"]})


def vxlan_problems(runner: Runner, vni: int, local: str, peer: str) -> list[str]:
    """What is wrong with "this node carries the network as VXLAN `vni` from `local`, with a forwarding entry to
    the peer's node at `peer`" (empty: nothing)."""
    link = runner.run(["ip", "-d", "-j", "link", "show", f"vxlan-{vni}"], timeout=30, check=False)
    if not link.ok:
        return [f"no vxlan-{vni} interface: {link.stderr.strip()}"]
    info = (json.loads(link.stdout)[0].get("linkinfo") or {}).get("info_data") or {}
    problems = []
    if info.get("id") != vni or info.get("local") != local:
        problems.append(f"vxlan-{vni} is VNI {info.get('id')} from {info.get('local')}, expected {vni} from {local}")
    fdb = runner.run(["bridge", "fdb", "show", "dev", f"vxlan-{vni}"], timeout=30).stdout
    if f"dst {peer} " not in fdb + " ":
        problems.append(f"vxlan-{vni} has no forwarding entry to {peer}: {fdb.strip()!r}")
    return problems


def test_guests_on_a_vxlan_network(lab: LabContext, runners: dict[str, Runner], evidence: Evidence) -> None:
    nova, neutron = service(lab, "nova"), service(lab, "neutron")
    if "agents" not in neutron:
        pytest.skip("the lab's neutron runs no agents (recorded before they were deployed: `stacklab up` again)")
    computes = two_computes(nova)
    controller, auth = runners[str(nova["node"])], admin_auth(lab)
    nl = NetLab(controller, runners, auth, nova, neutron, guest_wait(lab, GUEST_BUDGET), guest_wait(lab, FLIP_BUDGET))
    listed = net_call(controller, "agents", auth)
    problems = l2_agent_problems(listed["agents"], {c: OVS_AGENT if nl.ovs(c) else LINUXBRIDGE_AGENT for c in computes})
    assert not problems, "; ".join(problems)
    started = time.monotonic()
    with tenant_network(controller, auth, 2) as net, guest_image(controller, auth, net=True) as image:
        assert net["network_type"] == "vxlan", f"the project network is {net['network_type']}, not vxlan"
        guests = [Guest(f"stacklab-suite-net{i}", port, secrets.token_hex(8), compute)
                  for i, (port, compute) in enumerate(zip(net["ports"], computes, strict=True))]  # fmt: skip
        with servers(nl, image, guests):
            for guest in guests:
                assert guest.server is not None and guest.server["status"] == "ACTIVE", f"{guest.name}: {guest.server}"
                assert guest.server["host"] == guest.compute, f"{guest.name} runs on {guest.server['host']}"
                port = net_call(controller, "port", {**auth, "port_id": guest.port["id"]})
                vif = "ovs" if nl.ovs(guest.compute) else "bridge"
                assert (port["status"], port["host"], port["vif_type"]) == ("ACTIVE", guest.compute, vif), (
                    f"{guest.name}'s port is not an active {vif} VIF bound to {guest.compute}: {port}"
                )
                if vif == "ovs":  # the OVS firewall: the tap on br-int itself, no qbr bridge in between
                    assert not port["vif_details"].get("ovs_hybrid_plug"), f"{guest.name}: hybrid plug: {port}"
            nl.wait(guests, "each guest's DHCP lease", lambda lines, g: lease(lines) is not None)
            for guest in guests:
                got = lease(nl.console(guest))
                want = (str(guest.port["mac"]), str(guest.port["address"]))
                assert got == want, f"{guest.name} leased {got} by DHCP; neutron allocated its port {want}"
            nl.wait(guests, "each guest's metadata",
                    lambda lines, g: None not in (reported(lines, "marker"), reported(lines, "uuid")))  # fmt: skip
            for guest in guests:
                lines = nl.console(guest)
                assert guest.server is not None
                assert reported(lines, "uuid") == guest.server["id"], f"{guest.name} got another's metadata: {lines}"
                assert reported(lines, "marker") == guest.marker, f"{guest.name}'s user-data marker: {lines}"
            peer_of = {g.name: p for g, p in zip(guests, [*guests[1:], guests[0]], strict=True)}

            def peer_ip(g: Guest) -> str:
                return str(peer_of[g.name].port["address"])

            nl.wait(guests, "each guest reaching the other (ICMP allowed)",
                    lambda lines, g: first_after(lines, peer_ip(g), 0, "ok") is not None)  # fmt: skip
            mgmt = neutron["vxlan_local_ip"]
            for guest in guests:
                where = (runners[guest.compute], int(net["vni"]), str(mgmt[guest.compute]),
                         str(mgmt[peer_of[guest.name].compute]))  # fmt: skip
                if nl.ovs(guest.compute):
                    problems = tunnel_problems(*where, int(neutron["openvswitch"]["vxlan_udp_port"]))
                else:
                    problems = vxlan_problems(*where)
                assert not problems, f"{guest.compute}: {problems}"
            # the security group: the ICMP rule deleted, both guests' pings fail; back, they pass
            counts = {g.name: last_count(nl.console(g), peer_ip(g)) for g in guests}
            deleted = net_call(controller, "rule_del", {**auth, "rule_id": net["rule_id"]})
            assert deleted["http"] == 204, f"neutron did not delete the ICMP rule: {deleted}"
            # each guest's pings fail only if the other's compute drops them: on an OVS compute, its firewall's flows
            nl.wait(guests, "pings failing once the ICMP rule is deleted",
                    lambda lines, g: first_after(lines, peer_ip(g), counts[g.name], "fail") is not None,
                    nl.flip_budget)  # fmt: skip
            blocked = {g.name: last_count(nl.console(g), peer_ip(g)) for g in guests}
            # two more rounds: they must all fail, not only the first after the delete
            nl.wait(guests, "two more rounds of pings with ICMP denied",
                    lambda lines, g: last_count(lines, peer_ip(g)) >= blocked[g.name] + 2, nl.flip_budget)  # fmt: skip
            for guest in guests:
                later = [r for r, n in pings(nl.console(guest), peer_ip(guest)) if n > blocked[guest.name]]
                assert later and set(later) == {"fail"}, f"{guest.name} pinged with ICMP denied: {later}"
            added = net_call(controller, "rule_add", {**auth, "group_id": net["group_id"]})
            counts = {g.name: last_count(nl.console(g), peer_ip(g)) for g in guests}
            nl.wait(guests, "pings passing again once the ICMP rule is back",
                    lambda lines, g: first_after(lines, peer_ip(g), counts[g.name], "ok") is not None,
                    nl.flip_budget)  # fmt: skip
            # a port update on each compute: its agent re-makes the port's MAC anti-spoofing rule. linuxbridge
            # deletes the old `--among-src` rule and inserts one with the pair's MAC too (an agent stuck on the
            # delete plugs no port after it; LXC computes need stacklab's ebtables for that delete:
            # drivers/openstack/ebtables_among.py); Open vSwitch re-makes the port's egress flows on br-int
            for guest in guests:
                updated = net_call(controller, "pair", {**auth, "port_id": guest.port["id"], "mac": PAIR_MAC,
                                                        "ip": PAIR_IP})  # fmt: skip
                assert updated["http"] == 200, f"neutron did not update {guest.name}'s port: {updated}"
                check = ovs_spoofing_after_update if nl.ovs(guest.compute) else anti_spoofing_after_update
                remade = check(runners[guest.compute], str(guest.port["id"]), {str(guest.port["mac"]), PAIR_MAC})
                kind = "Open vSwitch" if nl.ovs(guest.compute) else "linuxbridge"
                said = f"{guest.compute}'s {kind} agent re-made {guest.name}'s MAC rules in {remade:.1f}s"
                evidence(f"port update on {guest.compute}", said)
            agents = {c: "openvswitch" if nl.ovs(c) else "linuxbridge" for c in computes}
            evidence("network", {"vni": net["vni"], "ports": net["ports"], "rule_readded": added["rule_id"],
                                 "computes": agents, "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
