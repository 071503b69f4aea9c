"""Port filter of storage nodes: golden nft rules and unit, checked by the real `nft -c` when the host has it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stacklab.drivers.nodes.firewall import ensure_filter, filter_problems, remove_filter, render_rules, render_unit
from tests.golden_util import check_golden
from tests.unit.test_lvm import FakeNode

RULES = render_rules("aio", "nfs", [2049, 111, 20048, 111], "172.29.244.0/24")


def test_rules_and_unit_golden() -> None:
    check_golden("storage/filter-nfs.nft", RULES)
    check_golden("storage/filter-nfs.service", render_unit("aio", "nfs"))
    assert "{ 111, 2049, 20048 }" in RULES  # sorted, no duplicates


@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0, reason="needs nft and root (nft -c)")
def test_real_nft_accepts_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.nft"
    path.write_text(RULES)
    # -c: check only, nothing is loaded into the host's ruleset
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_ensure_converges_and_remove_cleans() -> None:
    node = FakeNode()
    node.expect(["systemctl", "is-active"], rc=3)
    node.expect(["systemctl"])
    assert filter_problems(node, "aio", "iscsi", [3260], "10.0.0.0/24") == [
        "/etc/stacklab/nftables/iscsi.nft missing or different",
        "stacklab-filter-iscsi.service missing or different",
        "nftables table stacklab_iscsi is not loaded",
    ]
    ensure_filter(node, "aio", "iscsi", [3260], "10.0.0.0/24")
    assert ("systemctl", "enable", "stacklab-filter-iscsi.service") in node.calls
    assert filter_problems(node, "aio", "iscsi", [3260], "10.0.0.0/24") == []
    assert filter_problems(node, "aio", "iscsi", [3260], "10.9.0.0/24") == [
        "/etc/stacklab/nftables/iscsi.nft missing or different"
    ]
    remove_filter(node, "iscsi")
    assert ("systemctl", "disable", "--now", "stacklab-filter-iscsi.service") in node.calls
    assert not [p for p in node.files if "stacklab" in p]
