"""cinder-volume on a node other than the controller: what the `volume_nodes` of one backend (cinder_volumes.py,
the failover deployment) and the VM nodes of the kernel backends (cinder_kernel.py) share. Each such node gets
the controller's settings file with its own `my_ip`, cinder-volume's drop-in, and the unit; observe checks the
files and the units on the node; removal stops the unit and takes the files back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import file_problems
from stacklab.exec.node_files import remove_node_files, systemctl, unit_active
from stacklab.exec.runner import Runner

VOLUME_UNIT = "cinder-volume"


def with_my_ip(conf: str, address: str, after: str = "") -> str:
    """cinder's settings file with `my_ip` set to the node's own br-mgmt address (and `after`, lines that follow
    it); everything else is the controller's: the database, the queue and the APIs are there (pure)."""
    line = f"my_ip = {address}" + (f"\n{after}" if after else "")
    text, count = re.subn(r"^my_ip = .*$", line, conf, count=1, flags=re.M)
    if count != 1:
        raise ValueError("cinder's settings file has no my_ip line")
    return text


def node_problems(
    ctx: DriverContext,
    node: str,
    files: Mapping[str, str],
    units: Iterable[str],
    more: Callable[[Runner], list[str]] = lambda _runner: [],
) -> list[str]:
    """How cinder-volume's node differs from the plan: down, a file changed, a unit not running (then `more`)."""
    runner = ctx.on_node_if_up(node)
    if runner is None:
        return [f"cinder-volume node {node} is not up"]
    found = file_problems(runner, files, node)
    found += [f"{unit} is not running on {node}" for unit in units if not unit_active(runner, unit)]
    return found + more(runner)


def remove_from_node(
    ctx: DriverContext, rid: str, node: str, paths: Iterable[str], also: Callable[[Runner], None] = lambda _r: None
) -> None:
    """cinder-volume stopped and disabled on `node` and stacklab's files there removed (`also` undoes the rest)."""
    runner = ctx.node_for_delete(rid, node, "its cinder-volume goes")
    if runner is None:
        return
    systemctl(runner, "disable", "--now", VOLUME_UNIT, check=False)
    remove_node_files(runner, *paths)
    also(runner)
    systemctl(runner, "daemon-reload", check=False)
