"""Storage-network port filters on a node: only the lab's storage CIDR reaches a storage service's ports.

Why a firewall and not only the daemons' own ACLs: tgt admits an initiator when its address *or* its IQN is in the
target's ACL (checked on the CI host: an unknown IQN from inside the CIDR logged in once an address ACL existed), so
tgt gets IQN ACLs only and the network restriction lives here; ganesha's export CIDR stays as a second layer.

One nftables table per service (`inet stacklab_<service>`), so the iSCSI and NFS drivers own and remove theirs
independently. The rule file `/etc/stacklab/nftables/<service>.nft` is loaded by a oneshot unit
`stacklab-filter-<service>.service` (enabled: the filter comes back after a node reboot; stopping it deletes the
table). Labs are IPv4: IPv6 to the same ports is refused outright.
"""

from __future__ import annotations

from collections.abc import Sequence

from stacklab.exec.node_files import (
    FILE_TIMEOUT,
    enable_and_restart,
    read_node_file,
    systemctl,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.runner import Runner

NFT = "/usr/sbin/nft"
RULES_DIR = "/etc/stacklab/nftables"
NFT_TIMEOUT = 30.0


def table_name(service: str) -> str:
    return f"stacklab_{service}"


def rules_path(service: str) -> str:
    return f"{RULES_DIR}/{service}.nft"


def unit_name(service: str) -> str:
    return f"stacklab-filter-{service}.service"


def unit_path(service: str) -> str:
    return f"/etc/systemd/system/{unit_name(service)}"


def render_rules(lab: str, service: str, ports: Sequence[int], cidr: str) -> str:
    """Pure: an nft script that (re)creates the service's table atomically (declare, delete, define)."""
    table = table_name(service)
    port_set = ", ".join(str(p) for p in sorted(set(ports)))
    return (
        f"# stacklab lab={lab}: only {cidr} reaches the {service} ports (generated; do not edit)\n"
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        "    chain input {\n"
        "        type filter hook input priority filter; policy accept;\n"
        f"        meta nfproto ipv4 tcp dport {{ {port_set} }} ip saddr != {cidr} counter reject with tcp reset\n"
        f"        meta nfproto ipv4 udp dport {{ {port_set} }} ip saddr != {cidr} counter reject\n"
        f"        meta nfproto ipv6 tcp dport {{ {port_set} }} counter reject with tcp reset\n"
        f"        meta nfproto ipv6 udp dport {{ {port_set} }} counter reject\n"
        "    }\n"
        "}\n"
    )


def render_unit(lab: str, service: str) -> str:
    """Pure: the oneshot unit that loads the rules at boot and deletes the table when stopped."""
    table = table_name(service)
    return (
        f"# stacklab lab={lab}: storage-network filter for {service} (generated; do not edit)\n"
        "[Unit]\n"
        f"Description=stacklab: only the storage network reaches {service}\n"
        "Before=network-pre.target\n"
        "Wants=network-pre.target\n"
        "DefaultDependencies=no\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={NFT} -f {rules_path(service)}\n"
        f"ExecStop=-{NFT} delete table inet {table}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def filter_problems(runner: Runner, lab: str, service: str, ports: Sequence[int], cidr: str) -> list[str]:
    """Read-only: how the node's filter differs from the wanted one (empty when it matches)."""
    problems = []
    if read_node_file(runner, rules_path(service)) != render_rules(lab, service, ports, cidr):
        problems.append(f"{rules_path(service)} missing or different")
    if read_node_file(runner, unit_path(service)) != render_unit(lab, service):
        problems.append(f"{unit_name(service)} missing or different")
    listed = runner.run([NFT, "list", "table", "inet", table_name(service)], timeout=NFT_TIMEOUT, check=False)
    if not listed.ok:
        problems.append(f"nftables table {table_name(service)} is not loaded")
    return problems


def ensure_filter(runner: Runner, lab: str, service: str, ports: Sequence[int], cidr: str) -> None:
    """Install, enable and (re)load the filter; converges when called again."""
    rules_changed = write_node_file(runner, rules_path(service), render_rules(lab, service, ports, cidr))
    write_unit_files(runner, {unit_path(service): render_unit(lab, service)})
    enable_and_restart(runner, unit_name(service), changed=rules_changed)


def remove_filter(runner: Runner, service: str) -> None:
    """Stop (deletes the table), disable and remove the unit and rules. Idempotent."""
    if read_node_file(runner, unit_path(service)) is not None:
        systemctl(runner, "disable", "--now", unit_name(service), check=False)
        runner.run(["rm", "-f", unit_path(service)], timeout=FILE_TIMEOUT)
        systemctl(runner, "daemon-reload", check=False)
    runner.run([NFT, "delete", "table", "inet", table_name(service)], timeout=NFT_TIMEOUT, check=False)
    runner.run(["rm", "-f", rules_path(service)], timeout=FILE_TIMEOUT)
