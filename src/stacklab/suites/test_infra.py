"""Suite `infra`: every node is up, reachable with the lab key, addressed as the lab file says, and reaches
every other node over both lab networks."""

from __future__ import annotations

from typing import Any

from stacklab.suites.context import LabContext


def test_systemd_is_running(hosts: dict[str, Any], node: str) -> None:
    state = hosts[node].run("systemctl is-system-running --wait").stdout.strip()
    assert state in ("running", "degraded"), f"{node}: expected systemd running, saw {state!r}"
    failed = hosts[node].run("systemctl --failed --no-legend --plain").stdout.strip()
    assert state == "running", f"{node}: systemd is {state}; failed units: {failed}"


def test_hostname(hosts: dict[str, Any], node: str) -> None:
    assert hosts[node].check_output("hostname") == node


def test_addresses_match_the_lab(lab: LabContext, hosts: dict[str, Any], node: str) -> None:
    for nic in lab.nodes[node]["nics"]:
        shown = hosts[node].check_output(f"ip -4 -o addr show dev {nic['device']}")
        assert nic["address"] in shown, f"{node} {nic['device']}: expected {nic['address']}, saw: {shown}"
        mac = hosts[node].check_output(f"cat /sys/class/net/{nic['device']}/address")
        assert mac == nic["mac"], f"{node} {nic['device']}: expected MAC {nic['mac']}, saw {mac}"


def test_cloud_init_finished(hosts: dict[str, Any], node: str) -> None:
    assert hosts[node].file("/var/lib/cloud/instance/boot-finished").exists, f"{node}: cloud-init did not finish"


def test_reaches_other_nodes_on_every_shared_network(lab: LabContext, hosts: dict[str, Any], node_pair: Any) -> None:
    src, dst = node_pair
    shared = set(lab.nodes[src]["addresses"]) & set(lab.nodes[dst]["addresses"])
    assert shared, f"{src} and {dst} share no network"
    for net in sorted(shared):
        target = lab.address(dst, net)
        result = hosts[src].run(f"ping -c 1 -W 2 {target}")
        assert result.rc == 0, f"{src} -> {dst} over {net} ({target}): ping failed: {result.stderr or result.stdout}"


def test_etc_hosts_names_every_node(lab: LabContext, hosts: dict[str, Any], node: str) -> None:
    for other in lab.nodes:
        resolved = hosts[node].run(f"getent hosts {other}")
        assert resolved.rc == 0, f"{node} cannot resolve {other}"
        assert lab.address(other, "mgmt") in resolved.stdout, f"{node}: {other} resolves to {resolved.stdout!r}"
