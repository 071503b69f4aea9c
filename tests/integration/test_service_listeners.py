"""The controller's infrastructure services listen on the lab address they serve, and on nothing else (issue 11:
the aio lab had RabbitMQ's epmd on *:4369 and its Erlang distribution port on 0.0.0.0:25672). A one-node lab with
MariaDB, RabbitMQ and memcached is brought up (twice: the second `up` changes nothing), every TCP/UDP listener of the
node is read with `ss`, `rabbitmqctl` still reaches the node through epmd, and `down` leaves nothing. Unique name
and subnets; removed in a finalizer even when the test fails."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, ROOT, stacklab

pytestmark = CONTAINER_LAB_MARKS

SSH_PORT = 22  # sshd is the node's access path and listens on every node address (README, Security)


@pytest.fixture
def controller_lab(tmp_path: Path) -> Iterator[tuple[Path, str, str, Path]]:
    name = f"ls-{secrets.token_hex(3)}"
    octet = 100 + secrets.randbelow(40)
    mgmt_net = f"10.{octet}.{secrets.randbelow(250)}"
    lab_file = ROOT / ".stacklab" / "e2e" / f"{name}.yml"
    lab_file.parent.mkdir(parents=True, exist_ok=True)
    lab_file.write_text(
        f"name: {name}\n"
        "networks:\n"
        f"  mgmt: {{bridge: br-mgmt, cidr: {mgmt_net}.0/24}}\n"
        f"  storage: {{bridge: br-storage, cidr: 10.{octet + 40}.{secrets.randbelow(250)}.0/24}}\n"
        "images:\n"
        "  openstack: {recipe: openstack-zed}\n"
        "nodes:\n"
        "  infra1: {kind: container, image: openstack, memory: 2GiB, nics: [mgmt, storage], roles: [controller]}\n"
        "openstack:\n"
        "  services: [mariadb, rabbitmq, memcached]\n"
    )
    state = tmp_path / "state"
    try:
        yield state, name, f"{mgmt_net}.10", lab_file
    finally:
        stacklab(state, "down", "--no-leak-check", name, check=False)
        lab_file.unlink(missing_ok=True)


def test_infrastructure_services_bind_the_management_address_only(
    controller_lab: tuple[Path, str, str, Path],
) -> None:
    state, name, _planned, lab_file = controller_lab
    stacklab(state, "up", "-y", str(lab_file))
    again = stacklab(state, "up", "-y", str(lab_file))
    assert "nothing to do" in again.stderr, again.stderr[-3000:]
    listing = stacklab(state, "ssh", name, "infra1", "ss", "-Hltun").stdout
    address = stacklab(state, "ssh", name, "infra1", "hostname", "-i").stdout.split()[0]
    listeners: dict[int, set[str]] = {}
    for line in listing.splitlines():
        local = line.split()[4]  # Netid State Recv-Q Send-Q Local Peer
        host, _, number = local.rpartition(":")
        listeners.setdefault(int(number), set()).add(host)
    assert listeners[4369] == {"127.0.0.1", address}, listing  # epmd: loopback (registration) + br-mgmt (CLI)
    for port in (25672, 5672, 3306, 11211):  # distribution, AMQP, MariaDB, memcached
        assert listeners.get(port) == {address}, (port, listing)
    stray = {
        port: hosts
        for port, hosts in listeners.items()
        if port != SSH_PORT and not hosts <= {address, "127.0.0.1", "[::1]", "127.0.0.53%lo"}
    }
    assert not stray, f"listening beyond {address}: {stray}\n{listing}"
    status = stacklab(state, "ssh", name, "infra1", "rabbitmqctl", "-q", "status")
    assert re.search(rf"Interface: {re.escape(address)}, port: 25672", status.stdout), status.stdout[-2000:]
    down = stacklab(state, "down", name)
    assert "leak check: clean" in down.stderr, down.stderr[-3000:]
