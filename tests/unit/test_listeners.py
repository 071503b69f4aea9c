"""Every service binds the lab address it serves (issue 11, "close the lab"): the rendered configuration of the
Erlang side of RabbitMQ (epmd, distribution), MariaDB and memcached, golden-tested, and the order in which the
RabbitMQ role moves epmd's socket. The aio lab had epmd on *:4369 and the distribution port on 0.0.0.0:25672."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import ServiceLayout
from stacklab.drivers.openstack.infra import (
    EPMD_DROPIN,
    RABBITMQ,
    RABBITMQ_DROPIN,
    render_epmd_dropin,
    render_mariadb_conf,
    render_memcached_conf,
    render_rabbitmq_conf,
    render_rabbitmq_dropin,
)
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.load import load_lab_text
from tests.golden_util import check_golden
from tests.unit.test_lvm import FakeNode

LABS = Path(__file__).resolve().parents[2] / "labs"
PLAN = ServiceLayout(lab="aio", name="rabbitmq", controller="infra1", address="172.29.236.10", hosts=(), config={})


def test_erlang_listeners_golden_and_on_the_management_address_only() -> None:
    epmd, dist = render_epmd_dropin(PLAN), render_rabbitmq_dropin(PLAN)
    check_golden("services/aio-rabbitmq-listeners.txt", epmd + "\n" + dist)
    listen = [line for line in epmd.splitlines() if line.startswith("ListenStream=")]
    # the package's `ListenStream=4369` (every address) is reset, then only loopback and br-mgmt
    assert listen == ["ListenStream=", "ListenStream=127.0.0.1:4369", "ListenStream=172.29.236.10:4369"]
    assert "inet_dist_use_interface {172,29,236,10}" in dist
    assert "ERL_EPMD_ADDRESS=127.0.0.1,172.29.236.10" in dist
    for text in (render_rabbitmq_conf(PLAN), render_mariadb_conf(PLAN), render_memcached_conf(PLAN), epmd, dist):
        assert "0.0.0.0" not in text and "::" not in text
    assert "listeners.tcp.1 = 172.29.236.10:5672" in render_rabbitmq_conf(PLAN)
    assert "bind-address = 172.29.236.10" in render_mariadb_conf(PLAN)
    assert "-l 172.29.236.10\n" in render_memcached_conf(PLAN)


def test_a_non_ipv4_address_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IPv4 address"):
        render_rabbitmq_dropin(ServiceLayout("aio", "rabbitmq", "infra1", "fd00::1", (), {}))


def test_rabbitmq_moves_epmd_with_the_node_stopped_then_changes_nothing(tmp_path: Path) -> None:
    running: set[str] = set()
    node = FakeNode(files={"/usr/sbin/rabbitmqctl": ""})

    def systemctl(argv: tuple[str, ...]) -> CommandResult:
        verb, units = argv[1], [a for a in argv[2:] if not a.startswith("-")]
        if verb in ("restart", "start"):
            running.update(units)
        if verb == "stop":
            running.difference_update(units)
        rc = 3 if verb == "is-active" and units[0] not in running else 0
        return CommandResult(argv, rc, "", "", 0.0)

    node.expect(["systemctl"], responder=systemctl)
    node.expect(["rabbitmqctl", "-q", "list_users"], stdout="guest\t[]\nopenstack\t[]\n")
    node.expect(["rabbitmqctl"])
    lab = load_lab_text((LABS / "aio.yml").read_text(), "aio.yml")
    ctx = DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path, node_runner=lambda _n: node)
    RABBITMQ.ensure(ctx, node, PLAN)
    assert node.files[EPMD_DROPIN] == render_epmd_dropin(PLAN)
    assert node.files[RABBITMQ_DROPIN] == render_rabbitmq_dropin(PLAN)
    stop = node.calls.index(("systemctl", "stop", "rabbitmq-server", "epmd.service"))
    socket = node.calls.index(("systemctl", "restart", "epmd.socket"))
    assert node.calls.index(("systemctl", "daemon-reload")) < stop < socket
    assert socket < node.calls.index(("systemctl", "restart", "rabbitmq-server"))
    assert all(node.files[path] == text for path, text in RABBITMQ.files(PLAN).items())
    before = len(node.calls)
    RABBITMQ.ensure(ctx, node, PLAN)
    assert not [c for c in node.calls[before:] if c[0] == "install" or c[1:2] in (("restart",), ("stop",))]
