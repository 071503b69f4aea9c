"""Suite `infra`: every node is up, reachable with the lab key, addressed as the lab file says, and reaches
every other node over each network they share, leaving through the NIC of that network.

A plain pytest-testinfra module: `host` is testinfra's fixture, one per lab node (verify passes `--hosts` and the
lab's ssh_config), so the same checks run with `pytest --hosts ssh://NODE --ssh-config STATE/LAB/ssh_config`.
"""

from __future__ import annotations

import json
from typing import Any

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
    sshd = host.service("ssh")
    assert sshd.is_running and sshd.is_enabled, (
        f"{node}: ssh.service running={sshd.is_running} enabled={sshd.is_enabled}"
    )
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
    for nic in lab.nodes[node]["nics"]:
        iface = host.interface(nic["device"])
        assert iface.exists, f"{node}: no interface {nic['device']} (network {nic['network']})"
        ip, _, prefix = str(nic["address"]).partition("/")
        assert ip in iface.addresses, f"{node} {nic['device']}: expected {nic['address']}, saw {iface.addresses}"
        shown = json.loads(host.check_output(f"ip -json -4 addr show dev {nic['device']}"))[0]["addr_info"]
        prefixes = {str(a["prefixlen"]) for a in shown if a["local"] == ip}
        assert prefixes == {prefix}, f"{node} {nic['device']}: {ip} has prefix {prefixes}, the lab says /{prefix}"
        link = iface.link[0]
        assert link["address"] == nic["mac"], (
            f"{node} {nic['device']}: expected MAC {nic['mac']}, saw {link['address']}"
        )
        assert link["operstate"] in ("UP", "UNKNOWN"), f"{node} {nic['device']} is {link['operstate']}"
        evidence(
            f"nic.{nic['device']}", f"{node}: {nic['network']} {nic['address']} MAC {nic['mac']} {link['operstate']}"
        )


def test_cloud_init_finished(host: Any, node: str) -> None:
    assert host.file("/var/lib/cloud/instance/boot-finished").is_file, f"{node}: cloud-init did not finish"


def test_reaches_other_nodes_over_each_shared_network(
    lab: LabContext, host: Any, node: str, evidence: Evidence
) -> None:
    devices = {nic["network"]: nic["device"] for nic in lab.nodes[node]["nics"]}
    for other in sorted(lab.nodes):
        if other == node:
            continue
        shared = sorted(set(lab.nodes[node]["addresses"]) & set(lab.nodes[other]["addresses"]))
        assert shared, f"{node} and {other} share no network"
        for net in shared:
            target = lab.address(other, net)
            # The kernel's own answer: packets to that address leave on this network's NIC, from our address on it.
            route = json.loads(host.check_output(f"ip -json route get {target}"))[0]
            assert route.get("dev") == devices[net], (
                f"{node} -> {other} ({target}): routed via {route}, not {devices[net]}"
            )
            result = host.run(f"ping -c 1 -W 2 -I {devices[net]} {target}")
            assert result.rc == 0, (
                f"{node} -> {other} over {net} ({target}): ping failed: {result.stderr or result.stdout}"
            )
            evidence(f"reach.{other}.{net}", f"{node} -> {target} via {route['dev']} src {route.get('prefsrc')}")


def test_etc_hosts_names_every_node(lab: LabContext, host: Any, node: str) -> None:
    for other in lab.nodes:
        resolved = host.run(f"getent hosts {other}")
        assert resolved.rc == 0, f"{node} cannot resolve {other}"
        assert lab.address(other, "mgmt") in resolved.stdout.split(), f"{node}: {other} resolves to {resolved.stdout!r}"
