"""Names derived from the lab: veth names and the MACs every node NIC (container veth or VM NIC) gets."""

from __future__ import annotations

import hashlib
import re

import pytest

from stacklab.plan.naming import owner_marker, stable_mac, veth_name


def test_stable_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = stable_mac("demo", "ctl1", 3)
    assert mac == stable_mac("demo", "ctl1", 3)
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
    first = int(mac[:2], 16)
    assert first & 0b10, "locally administered bit must be set"
    assert not first & 0b01, "must be unicast"


def test_stable_mac_is_pinned() -> None:
    """Golden plans and running labs depend on these values: changing the hash renames every NIC's MAC."""
    assert stable_mac("demo", "ctl1", 0) == "02:" + ":".join(
        hashlib.sha1(b"demo:ctl1:0").hexdigest()[i : i + 2] for i in range(0, 10, 2)
    )


def test_stable_mac_distinguishes_labs_nodes_and_nics() -> None:
    macs = {stable_mac(lab, node, nic) for lab in ("demo", "demo2") for node in ("ctl1", "cmp1") for nic in (0, 1)}
    assert len(macs) == 8
    # Names are joined unambiguously.
    assert stable_mac("a", "bc", 0) != stable_mac("ab", "c", 0)


@pytest.mark.parametrize("index", [-1, 256])
def test_stable_mac_rejects_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="nic_index"):
        stable_mac("demo", "ctl1", index)


def test_stable_mac_rejects_names_that_would_join_ambiguously() -> None:
    with pytest.raises(ValueError, match="':'"):
        stable_mac("a:b", "c", 0)


def test_veth_name_fits_the_kernel_limit_and_owner_marker_names_everything() -> None:
    name = veth_name("sb74", "a-rather-long-node-name", 1)
    assert len(name) <= 15 and name.startswith("sb74") and name.endswith("1")
    assert owner_marker("demo", "node", "ctl1") == "stacklab:demo:node:ctl1"
