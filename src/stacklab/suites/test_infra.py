"""Suite `infra`: every node is up, reachable with the lab key, addressed as the lab file says, and reaches
every other node over each network they share, leaving through the NIC of that network.

A plain pytest-testinfra module: `host` is testinfra's fixture, one per lab node (verify passes `--hosts` and the
lab's ssh_config), so the same checks run with `pytest --hosts ssh://NODE --ssh-config STATE/LAB/ssh_config`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from stacklab.model.lab import IFNAME, NAME_PATTERN
from stacklab.suites.context import LabContext
from stacklab.suites.lab_fixtures import Evidence


def test_systemd_is_running(host: Any, node: str) -> None:
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert state == "running", f"{node}: systemd is {state!r}; failed units: {failed or 'none'}"


def test_sshd_serves_the_lab_key(lab: LabContext, host: Any, node: str, evidence: Evidence) -> None:
    # This very test arrived over SSH with the lab's key; what it adds is that sshd is a running, enabled unit
    # (it comes back after a reboot) listening on port 22 of the node's lab addresses only (the seed's sshd_config.d
    # drop-in): no wildcard, no loopback, no other address of the node.
    unit = host.run("systemctl is-active ssh.service; systemctl is-enabled ssh.service").stdout.split()
    active, enabled = [*unit, "?", "?"][:2]
    assert (active, enabled) == ("active", "enabled"), f"{node}: ssh.service is {active} and {enabled}"
    listening = [s for s in host.socket.get_listening_sockets() if s.startswith("tcp://") and s.endswith(":22")]
    assert listening, f"{node}: nothing listens on TCP port 22"
    wanted = {f"tcp://{str(nic['address']).partition('/')[0]}:22" for nic in lab.nodes[node]["nics"]}
    assert set(listening) == wanted, (
        f"{node}: sshd listens on {sorted(listening)}, the lab's addresses are {sorted(wanted)} (a node made before "
        "the seed's /etc/ssh/sshd_config.d/50-stacklab-listen.conf listens on every address)"
    )
    evidence("sshd", f"{node}: ssh.service running and enabled, listening on {', '.join(listening)}")


def test_hostname(host: Any, node: str) -> None:
    assert host.check_output("hostname") == node


def test_addresses_match_the_lab(lab: LabContext, host: Any, node: str, evidence: Evidence) -> None:
    # one `ip -json addr` for every NIC of the node: link (MAC, state) and addresses with their prefixes
    links = {link["ifname"]: link for link in json.loads(host.check_output("ip -json addr show"))}
    for nic in lab.nodes[node]["nics"]:
        link = links.get(nic["device"])
        assert link is not None, f"{node}: no interface {nic['device']} (network {nic['network']}): {sorted(links)}"
        ip, _, prefix = str(nic["address"]).partition("/")
        shown = [a for a in link.get("addr_info", []) if a.get("family") == "inet"]
        assert ip in {a["local"] for a in shown}, f"{node} {nic['device']}: expected {nic['address']}, saw {shown}"
        prefixes = {str(a["prefixlen"]) for a in shown if a["local"] == ip}
        assert prefixes == {prefix}, f"{node} {nic['device']}: {ip} has prefix {prefixes}, the lab says /{prefix}"
        assert link.get("address") == nic["mac"], (
            f"{node} {nic['device']}: expected MAC {nic['mac']}, saw {link.get('address')}"
        )
        assert link.get("operstate") in ("UP", "UNKNOWN"), f"{node} {nic['device']} is {link.get('operstate')}"
        evidence(
            f"nic.{nic['device']}", f"{node}: {nic['network']} {nic['address']} MAC {nic['mac']} {link['operstate']}"
        )


def test_cloud_init_finished(host: Any, node: str) -> None:
    assert host.file("/var/lib/cloud/instance/boot-finished").is_file, f"{node}: cloud-init did not finish"


def checked_ip(address: str) -> str:
    """An address from the lab context, as it may appear in a node's shell command (nothing else gets there)."""
    return str(ipaddress.ip_address(address))


def checked_node(name: str) -> str:
    """A node name as it may appear in a node's shell command: the model's rule for names."""
    assert re.fullmatch(NAME_PATTERN, name), f"not a node name: {name!r}"
    return name


def checked_device(name: str) -> str:
    """A NIC name as it may appear in a node's shell command: the model's rule for interface names."""
    assert IFNAME.fullmatch(name), f"not an interface name: {name!r}"
    return name


def test_reaches_other_nodes_over_each_shared_network(
    lab: LabContext, host: Any, node: str, evidence: Evidence
) -> None:
    devices = {nic["network"]: checked_device(nic["device"]) for nic in lab.nodes[node]["nics"]}
    paths: list[tuple[str, str, str]] = []  # (other node, network, its address there)
    for other in sorted(lab.nodes):
        if other == node:
            continue
        shared = sorted(set(lab.nodes[node]["addresses"]) & set(lab.nodes[other]["addresses"]))
        assert shared, f"{node} and {other} share no network"
        paths += [(other, net, checked_ip(lab.address(other, net))) for net in shared]
    # Two commands for every path at once (two SSH round trips per node, not two per path): the kernel's own answer
    # (packets to that address leave on this network's NIC, from our address on it), then a ping per path, side by side.
    routes = host.check_output("; ".join(f"printf '%s ' {t}; ip -json route get {t} || echo null" for _, _, t in paths))
    got = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in routes.splitlines() if " " in line}
    pings = " ".join(f"(ping -c 1 -W 2 -I {devices[net]} {t} >/dev/null 2>&1; echo {devices[net]} {t} $?) &"
                     for _, net, t in paths)  # fmt: skip
    answered = {tuple(line.split()[:2]): line.split()[2] for line in host.run(pings + " wait").stdout.splitlines()}
    for other, net, target in paths:
        found = got.get(target)
        route = found[0] if found else {}
        assert route.get("dev") == devices[net], (
            f"{node} -> {other} ({target}): routed via {route or 'nothing (ip route get failed)'}, not {devices[net]}"
        )
        rc = answered.get((devices[net], target))
        assert rc == "0", f"{node} -> {other} over {net} ({target}): ping failed (exit {rc})"
        evidence(f"reach.{other}.{net}", f"{node} -> {target} via {route['dev']} src {route.get('prefsrc')}")


def test_etc_hosts_names_every_node(lab: LabContext, host: Any, node: str) -> None:
    names = [checked_node(other) for other in sorted(lab.nodes)]
    resolved = host.run("getent hosts " + " ".join(names))  # one line per name it resolves: ADDRESS NAME [ALIASES]
    lines = [line.split() for line in resolved.stdout.splitlines()]
    for other in names:
        addresses = {fields[0] for fields in lines if other in fields[1:]}
        assert addresses, f"{node} cannot resolve {other}"
        assert lab.address(other, "mgmt") in addresses, f"{node}: {other} resolves to {sorted(addresses)}"
