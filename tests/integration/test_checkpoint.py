"""A checkpoint of the storage lab through the CLI: save a converged lab, break it (delete an RBD volume, stop the
iSCSI target, corrupt a LUN's backing file, leave a stray file in a node), restore, and find the lab as it was
saved (same bytes, same Ceph fsid, cephx key and SSH host key) with `verify --suite infra --suite storage`
passing right after. Unique name and subnets; removed in a finalizer even when the test fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, LabCopy, lab_copy, stacklab

pytestmark = [*CONTAINER_LAB_MARKS, pytest.mark.timeout(2400)]

LUN_FILE = "/var/lib/stacklab/iscsi/lun1.img"
PROBE = "volumes/checkpoint-probe"
# What the restore must bring back, read on the storage node: each line is `key value`.
FACTS = (
    f"echo lun $(sha256sum {LUN_FILE} | cut -d' ' -f1); "
    f"echo probe $(rbd export {PROBE} - 2>/dev/null | sha256sum | cut -d' ' -f1); "
    "echo fsid $(ceph fsid); "
    "echo cephx $(ceph auth get-key client.cinder | sha256sum | cut -d' ' -f1); "
    "echo hostkey $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2); "
    "echo tgt $(systemctl is-active tgt); "
    "echo stray $(test -e /root/after-checkpoint && echo present || echo absent)"
)


@pytest.fixture
def storage_lab(tmp_path: Path) -> Iterator[LabCopy]:
    with lab_copy(tmp_path, "storage", "ck") as lab:
        yield lab


def on_storage(lab: LabCopy, command: str) -> str:
    return stacklab(lab.state, "ssh", lab.name, "storage1", command, timeout=300).stdout


def facts(lab: LabCopy) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in on_storage(lab, FACTS).splitlines() if " " in line)


def test_save_break_restore_verify(storage_lab: LabCopy) -> None:
    lab = storage_lab
    stacklab(lab.state, "up", "-y", str(lab.file))
    # A volume with known bytes, in the Ceph cluster the checkpoint must hold.
    on_storage(
        lab,
        f"head -c 4194304 /dev/urandom > /root/probe.bin && rbd import /root/probe.bin {PROBE} && rm /root/probe.bin",
    )
    before = facts(lab)
    assert before["tgt"] == "active" and before["stray"] == "absent" and len(before["probe"]) == 64, before

    saved = stacklab(lab.state, "checkpoint", "save", lab.name, "base")
    assert f"checkpoint base of lab {lab.name} saved" in saved.stderr
    listed = json.loads(stacklab(lab.state, "checkpoint", "list", "--json", lab.name).stdout)
    assert [c["name"] for c in listed["checkpoints"]] == ["base"]
    assert facts(lab) == before, "the lab changed across the save's stop and start"

    on_storage(
        lab,
        f"rbd rm {PROBE} && systemctl stop tgt && echo broken > /root/after-checkpoint && "
        f"dd if=/dev/urandom of={LUN_FILE} bs=1M count=4 conv=notrunc status=none",
    )
    broken = facts(lab)
    assert broken["lun"] != before["lun"] and broken["tgt"] != "active" and broken["stray"] == "present", broken

    restored = stacklab(lab.state, "checkpoint", "restore", lab.name, "base")
    assert f"lab {lab.name} restored to checkpoint base" in restored.stderr, restored.stderr[-2000:]
    assert facts(lab) == before

    report = stacklab(
        lab.state, "verify", lab.name, "--suite", "infra", "--suite", "storage", "-k", "not kernel", check=False
    )
    assert report.ok, f"verify after restore failed:\n{report.stdout[-6000:]}"
    assert " passed" in report.stdout and " failed" not in report.stdout.split("total", 1)[-1]

    stacklab(lab.state, "checkpoint", "delete", lab.name, "base")
    listed = json.loads(stacklab(lab.state, "checkpoint", "list", "--json", lab.name).stdout)
    assert listed["checkpoints"] == []
    lab.down_clean()
