"""The Ceph clients OpenStack uses on its nodes: `client.cinder` (cinder-volume and nova-compute share it) and
`client.glance` (glance's rbd store), their keyrings as the Ceph step puts them on every node of the storage
network (root-only), who may read them, and the libvirt secret UUID that carries cinder's key to QEMU.
"""

from __future__ import annotations

import uuid

from stacklab.errors import PlanError
from stacklab.exec.node_files import node_path_exists
from stacklab.exec.runner import Runner

CEPH_USER = "cinder"


def keyring_path(user: str = CEPH_USER) -> str:
    return f"/etc/ceph/ceph.client.{user}.keyring"


def rbd_secret_uuid(lab: str) -> str:
    """The libvirt secret UUID of client.cinder's key: stable per lab (an identifier, not a secret)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stacklab:{lab}:client.{CEPH_USER}"))


def require_keyring(runner: Runner, node: str, rid: str, role: str, user: str = CEPH_USER) -> None:
    """PlanError unless `node` (the service's `role` node) has client.`user`'s keyring from the Ceph step."""
    if not node_path_exists(runner, keyring_path(user)):
        raise PlanError(
            f"{node} has no {keyring_path(user)}",
            resource=rid,
            hint=f"Ceph puts client keyrings on the storage network's nodes: give the {role} a NIC there",
        )


def share_keyring(runner: Runner, group: str, user: str = CEPH_USER) -> None:
    """The Ceph step writes client keyrings root-only; the service reading it runs as `group`."""
    runner.run(["chgrp", group, keyring_path(user)], timeout=30)
    runner.run(["chmod", "0640", keyring_path(user)], timeout=30)


def unshare_keyring(runner: Runner, user: str = CEPH_USER) -> None:
    """Back to the Ceph step's root-only mode (when the keyring is still there)."""
    if node_path_exists(runner, keyring_path(user)):
        runner.run(["chgrp", "root", keyring_path(user)], timeout=30, check=False)
        runner.run(["chmod", "0600", keyring_path(user)], timeout=30, check=False)


def keyring_problems(runner: Runner, user: str = CEPH_USER, group: str = "cinder") -> list[str]:
    result = runner.run(["stat", "-c", "%G %a", keyring_path(user)], timeout=30, check=False)
    if result.stdout.split() != [group, "640"]:
        return [f"{keyring_path(user)} is not readable by {group} ({result.stdout.strip() or 'missing'})"]
    return []


def keyring_key(text: str) -> str:
    """The base64 key of a Ceph keyring file."""
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "key":
            return value.strip()
    raise ValueError("no key in the keyring")
