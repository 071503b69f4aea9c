"""cinder-volume on more than one node for the same backend (`openstack.cinder.volume_nodes`): the deployment the
OpenStack storage guide describes as *not* highly available. Each node runs its own cinder-volume service
(`<node>@<backend>`); the scheduler gives a new volume to one of them, and that service alone manages it (extend,
snapshot, delete) until an operator moves the volume with `cinder-manage volume update_host`. The `failover` suite
proves exactly that.

The controller's cinder-volume is built by the declared role (cinder.py) with the API and the scheduler; this role
adds the other nodes: the same settings file (its `my_ip` line the node's own br-mgmt address), the same drop-in,
client.cinder's keyring readable by the `cinder` user, and cinder-volume started; then `up` waits until the
scheduler reports every node's pool. The settings file holds the database and RabbitMQ passwords and is 0640
root:cinder, as on the controller.

The keyring: on a compute node nova-compute reads the same `/etc/ceph/ceph.client.cinder.keyring` and nova's
step gives it to the `nova` group (0640). One file cannot have two groups, and nova and cinder are applied in
parallel, so on a node that has a `nova` group cinder joins it and the keyring goes to that group (what nova's
step sets too, so whichever runs first, both read it); on another node it goes to the `cinder` group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.cinder_nodes import VOLUME_UNIT, node_problems, remove_from_node, with_my_ip
from stacklab.drivers.openstack.common import ServiceLayout, service_secrets
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.storage.ceph.clients import keyring_path, require_keyring
from stacklab.exec.node_files import (
    enable_and_restart,
    require_node,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.runner import Runner

SHARED_GROUP = "nova"  # the group nova's compute step gives client.cinder's keyring

PoolOf = Callable[[ServiceLayout, str], str]  # (layout, node) -> "<node>@<backend>#<pool>"
WaitForPool = Callable[[DriverContext, Runner, ServiceLayout, str], None]  # until the node's pool is reported


def volume_nodes(layout: ServiceLayout) -> list[str]:
    """Every node that runs cinder-volume, the controller first."""
    listed = [str(n) for n in layout.config.get("volume_nodes") or ()]
    return list(dict.fromkeys([layout.controller, *listed]))


def other_volume_nodes(layout: ServiceLayout) -> list[str]:
    return [n for n in volume_nodes(layout) if n != layout.controller]


def node_conf(conf: str, address: str) -> str:
    """The controller's settings file with `my_ip` set to the node's own address (everything else is shared:
    the database, the queue and the APIs are the controller's)."""
    return with_my_ip(conf, address)


def keyring_group(runner: Runner) -> str:
    return SHARED_GROUP if runner.run(["getent", "group", SHARED_GROUP], timeout=30, check=False).ok else "cinder"


class CinderRole(DeclaredRole):
    """The declared cinder role, plus cinder-volume on the other `volume_nodes`."""

    def __init__(self, service: ApiService, *, pool_of: PoolOf, wait_for_pool: WaitForPool) -> None:
        super().__init__(service)
        self._pool_of = pool_of
        self._wait_for_pool = wait_for_pool

    def _node_files(self, layout: ServiceLayout, node: str, secrets: tuple[str, ...]) -> dict[str, str]:
        svc = self.service
        address = layout.addresses.get(node)
        if not address:
            raise ValueError(f"no br-mgmt address for cinder-volume node {node} in the service spec")
        return {
            svc.conf: node_conf(svc.render_conf(layout, *secrets), address),
            svc.dropins[VOLUME_UNIT]: svc.render_dropin(layout, VOLUME_UNIT),
        }

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        found = super().problems(ctx, runner, plan)
        secrets = service_secrets(ctx, self.service.secrets, create=False)
        if secrets is None:
            return found
        for node in other_volume_nodes(plan):

            def unreadable(node_runner: Runner, node: str = node) -> list[str]:
                readable = node_runner.run(["runuser", "-u", "cinder", "--", "test", "-r", keyring_path()],
                                           timeout=30, check=False)  # fmt: skip
                return [] if readable.ok else [f"{keyring_path()} on {node} is not readable by cinder"]

            found += node_problems(ctx, node, self._node_files(plan, node, secrets), [VOLUME_UNIT], unreadable)
        return found

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        outputs = dict(super().ensure(ctx, runner, plan))
        secrets = service_secrets(ctx, self.service.secrets, create=False)
        assert secrets is not None  # the declared role made them
        for node in other_volume_nodes(plan):
            self._ensure_node(ctx, plan, node, secrets)
        for node in other_volume_nodes(plan):
            self._wait_for_pool(ctx, runner, plan, node)
        pools = [self._pool_of(plan, node) for node in volume_nodes(plan)]
        return {**outputs, "volume_nodes": volume_nodes(plan), "pools": pools}

    def _ensure_node(self, ctx: DriverContext, plan: ServiceLayout, node: str, secrets: tuple[str, ...]) -> None:
        rid = f"service/{self.name}"
        ctx.progress(f"{rid}: cinder-volume on {node} ({plan.addresses.get(node)})")
        node_runner = ctx.on_node(node)
        require_node(node_runner, node, rid, files={"/usr/bin/cinder-volume": "cinder-volume"}, unit=VOLUME_UNIT)
        require_keyring(node_runner, node, rid, "cinder-volume node")
        group = keyring_group(node_runner)
        if group != "cinder":
            node_runner.run(["usermod", "-a", "-G", group, "cinder"], timeout=30)
        owner = node_runner.run(["stat", "-c", "%G", keyring_path()], timeout=30).stdout.strip()
        if owner == "root":  # not shared yet by anyone: give it to the group both services read
            node_runner.run(["chgrp", group, keyring_path()], timeout=30)
        node_runner.run(["chmod", "0640", keyring_path()], timeout=30)
        files = self._node_files(plan, node, secrets)
        conf = self.service.conf
        changed = write_node_file(node_runner, conf, files[conf], mode="0640")
        node_runner.run(["chown", "root:cinder", conf], timeout=30)
        changed = write_unit_files(node_runner, {p: t for p, t in files.items() if p != conf}) or changed
        enable_and_restart(node_runner, VOLUME_UNIT, changed=changed)

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        def leave_group(node_runner: Runner) -> None:
            node_runner.run(["gpasswd", "-d", "cinder", SHARED_GROUP], timeout=30, check=False)

        paths = (self.service.conf, self.service.dropins[VOLUME_UNIT])
        for node in other_volume_nodes(plan):
            remove_from_node(ctx, f"service/{self.name}", node, paths, leave_group)
        super().remove(ctx, runner, plan)
