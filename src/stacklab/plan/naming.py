"""Kernel and libvirt names derived from the lab: short, stable, and carrying the lab's prefix."""

from __future__ import annotations

import hashlib


def _h(*parts: str, length: int) -> str:
    return hashlib.sha1(":".join(parts).encode()).hexdigest()[:length]


def veth_name(prefix: str, node: str, nic_index: int) -> str:
    """Host side of a node's NIC: prefix + 6 hex of the node name + NIC index (<= 12 characters)."""
    return f"{prefix}{_h(node, length=6)}{nic_index}"


def stable_mac(lab: str, node: str, nic_index: int) -> str:
    """Locally administered unicast MAC, stable for (lab, node, NIC), so cloud-init can match NICs by MAC.

    The first octet 02 is locally administered and unicast; the other five come from a hash of lab, node and
    NIC index, so nodes of two labs sharing a host get distinct MACs. Used for container veths and VM NICs alike.
    """
    if not 0 <= nic_index <= 0xFF:
        raise ValueError(f"nic_index must be 0..255, got {nic_index}")
    if ":" in lab or ":" in node:  # the hash input joins the names with ':'; lab names never contain one
        raise ValueError(f"lab and node names cannot contain ':' ({lab!r}, {node!r})")
    digest = _h(lab, node, str(nic_index), length=10)
    return "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))


def owner_marker(lab: str, kind: str, name: str) -> str:
    """Ownership mark stored on host objects (bridge ifalias, libvirt metadata, files)."""
    return f"stacklab:{lab}:{kind}:{name}"


def disk_serial(name: str) -> str:
    """The virtio serial of a VM node's data disk `name` (virtio serials hold 20 bytes)."""
    return name[:20]


def disk_device(name: str) -> str:
    """The guest's stable path of data disk `name`: udev links `virtio-<serial>` whatever vdX the kernel gave it."""
    return f"/dev/disk/by-id/virtio-{disk_serial(name)}"
