"""Training copies of the storage lab through the CLI: `up --copies 2` makes the lab and a second copy of it (from
the lab's checkpoint, in its own netns, at the same addresses); each copy has its own data (an RBD volume written
in the copy is not in the lab, same Ceph fsid); `verify` (infra, storage: iSCSI, NFS and RBD from the client over
br-storage) passes on the copy; the copy is broken (tgt stopped, its Ceph config deleted), `reset` and verified
again while the original runs on untouched (same container init PIDs, its own marker file kept, tgt active). A
third copy then loses its netns with its nodes stopped (what a host reboot leaves): `status` says so and its
`down` removes it cleanly, leaving the original's bridges of the same names alone. `down` of the original removes
the copy first and leaves nothing (netns, bridges, veths, LXC dirs), the leak checks clean. Unique name and
10.243.x subnets; taken down in a finalizer even when the test fails."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, ROOT, LabCopy, stacklab

pytestmark = [
    *CONTAINER_LAB_MARKS,
    pytest.mark.timeout(2700),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, bridges, containers"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (`ip netns`)"),
]

PROBE = "volumes/copy-probe"
FACTS = (
    "echo tgt $(systemctl is-active tgt); "
    "echo conf $(test -e /etc/ceph/ceph.conf && echo present || echo absent); "
    "echo fsid $(ceph fsid); "
    f"echo probe $(rbd info {PROBE} >/dev/null 2>&1 && echo present || echo absent); "
    "echo mark $(cat /root/copy-mark 2>/dev/null || echo none)"
)


def _lab_file() -> tuple[str, Path]:
    """labs/storage.yml under a unique name, its two /24s moved to random 10.243.x.0/24s."""
    name = f"cp-{secrets.token_hex(3)}"
    text = (ROOT / "labs" / "storage.yml").read_text().replace("name: storage", f"name: {name}", 1)
    first, second = secrets.SystemRandom().sample(range(30, 250), 2)
    text = text.replace("10.243.10.0/24", f"10.243.{first}.0/24").replace("10.243.20.0/24", f"10.243.{second}.0/24")
    path = ROOT / ".stacklab" / "e2e" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return name, path


def _netns(name: str, index: int = 2) -> str:
    return f"stacklab-{name}-{index}"


@pytest.fixture
def copies_lab(tmp_path: Path) -> Iterator[LabCopy]:
    name, lab_file = _lab_file()
    lab = LabCopy(tmp_path / "state", name, lab_file)
    try:
        yield lab
    finally:
        # the copy alone first (a failed copy must not keep the original up), then the original
        for index in (2, 3):
            stacklab(lab.state, "down", "--no-leak-check", f"{name}#{index}", check=False)
        stacklab(lab.state, "down", "--no-leak-check", name, check=False)
        for index in (2, 3):  # the copies' own netns: the lab's unique name says they are ours
            if Path("/run/netns", _netns(name, index)).exists():
                subprocess.run(["ip", "netns", "delete", _netns(name, index)], check=False, timeout=30)
        lab_file.unlink(missing_ok=True)


def on_node(lab: LabCopy, target: str, node: str, command: str) -> str:
    return stacklab(lab.state, "ssh", target, node, command, timeout=300).stdout


def facts(lab: LabCopy, target: str) -> dict[str, str]:
    out = on_node(lab, target, "storage1", FACTS)
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def node_pids(lab: LabCopy) -> dict[str, object]:
    status = json.loads(stacklab(lab.state, "status", "--json", lab.name).stdout)
    return {r["id"]: r["facts"]["pid"] for r in status["resources"] if r["id"].startswith("node/")}


def verify_ok(lab: LabCopy, target: str) -> None:
    report = stacklab(
        lab.state, "verify", target, "--suite", "infra", "--suite", "storage", "-k", "not kernel", check=False
    )
    assert report.ok, f"verify of {target} failed:\n{report.stdout[-6000:]}\n{report.stderr[-2000:]}"
    assert " passed" in report.stdout and " failed" not in report.stdout.split("total", 1)[-1]


def test_two_copies_reset_one_while_the_other_runs(copies_lab: LabCopy) -> None:
    lab = copies_lab
    copy = f"{lab.name}#2"
    up = stacklab(lab.state, "up", "-y", str(lab.file), "--copies", "2", timeout=1800)
    assert f"copy {copy} up in netns {_netns(lab.name)}" in up.stderr, up.stderr[-3000:]
    assert Path("/run/netns", _netns(lab.name)).exists()

    # Both copies are up, side by side, at the same addresses; the copy's bridges are not on the host.
    status = json.loads(stacklab(lab.state, "status", "--json", lab.name).stdout)
    [row] = status["copies"]
    assert row["copy"] == copy and row["netns_present"] and set(row["nodes"].values()) == {"running"}, row
    mine = json.loads(stacklab(lab.state, "status", "--json", copy).stdout)
    addresses = {r["id"]: r["outputs"].get("addresses") for r in status["resources"] if r["id"].startswith("node/")}
    assert addresses == {r["id"]: r["outputs"].get("addresses") for r in mine["resources"] if r["id"] in addresses}
    bridges = [r["outputs"]["ifname"] for r in mine["resources"] if r["id"].startswith("bridge/")]
    inside = subprocess.run(
        ["ip", "-n", _netns(lab.name), "-j", "link", "show"], capture_output=True, text=True, check=True, timeout=30
    )
    assert set(bridges) <= {link["ifname"] for link in json.loads(inside.stdout)}
    assert all(r["state"] == "present" for r in mine["resources"]), mine["resources"]

    # Same lab (same Ceph fsid), each with its own data: a volume written in the copy is not in the original.
    on_node(lab, lab.name, "storage1", "echo original > /root/copy-mark")
    on_node(lab, copy, "storage1", f"echo copy > /root/copy-mark && rbd create --size 8 {PROBE}")
    original, copied = facts(lab, lab.name), facts(lab, copy)
    assert original["fsid"] == copied["fsid"]
    assert (original["mark"], original["probe"]) == ("original", "absent"), original
    assert (copied["mark"], copied["probe"]) == ("copy", "present"), copied
    verify_ok(lab, copy)

    # Break the copy, reset it while the original keeps running.
    pids = node_pids(lab)
    on_node(lab, copy, "storage1", "systemctl stop tgt && rm /etc/ceph/ceph.conf")
    broken = facts(lab, copy)
    assert broken["tgt"] != "active" and broken["conf"] == "absent", broken
    reset = stacklab(lab.state, "reset", copy, timeout=900)
    assert f"{copy} reset to checkpoint copies" in reset.stderr, reset.stderr[-3000:]
    restored = facts(lab, copy)
    assert restored["tgt"] == "active" and restored["conf"] == "present", restored
    assert (restored["mark"], restored["probe"]) == ("none", "absent"), restored  # as the checkpoint was
    verify_ok(lab, copy)
    assert node_pids(lab) == pids, "the original's nodes were restarted by the copy's reset"
    after = facts(lab, lab.name)
    assert (after["mark"], after["tgt"]) == ("original", "active"), after

    # A copy whose netns is gone with its nodes stopped (what a host reboot leaves): status says so, down removes
    # it from a new netns and never touches the original's bridges of the same names.
    third = f"{lab.name}#3"
    up = stacklab(lab.state, "up", "-y", str(lab.file), "--copies", "3", timeout=1800)
    assert f"copy {copy} exists; left as it is" in up.stderr and f"copy {third} up in netns" in up.stderr, up.stderr
    lxcpath = lab.state / lab.name / "copies" / "3" / lab.name / "lxc"
    for node in ("client1", "storage1"):
        subprocess.run(
            ["ip", "netns", "exec", _netns(lab.name, 3), "lxc-stop", "-k", "-P", str(lxcpath), "-n", node],
            check=True,
            timeout=120,
        )
    subprocess.run(["ip", "netns", "delete", _netns(lab.name, 3)], check=True, timeout=30)
    status = json.loads(stacklab(lab.state, "status", "--json", lab.name).stdout)
    assert [(r["copy"], r["netns_present"]) for r in status["copies"]] == [(copy, True), (third, False)]
    down = stacklab(lab.state, "down", third)
    assert f"copy {third} removed; leak check: clean" in down.stderr, down.stderr[-3000:]
    assert all(
        r["state"] == "present"
        for r in json.loads(stacklab(lab.state, "status", "--json", lab.name).stdout)["resources"]
    )

    # down of the original takes its copy first; nothing of either is left.
    down = stacklab(lab.state, "down", lab.name)
    assert f"copy {copy} removed; leak check: clean" in down.stderr, down.stderr[-3000:]
    assert f"lab {lab.name} removed; leak check: clean" in down.stderr, down.stderr[-3000:]
    assert not Path("/run/netns", _netns(lab.name)).exists()
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout)
    prefix = next(iter(bridges)).split("br-")[0]
    assert not [link["ifname"] for link in links if link["ifname"].startswith(prefix)]
    assert not (lab.state / lab.name / "copies").exists()
    assert not (lab.state / lab.name / "lxc").exists()
