"""The guest suites' reading of an instance disk on nova's NFS export (suites/instance_disks.py): the qcow2 file
read on the server with its backing file path absent there (the computes' path), the disk file's identity, and the
mount check of every compute (source, file system type, the server's br-storage address)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import LocalRunner
from stacklab.suites.instance_disks import InstanceDisks

SHARE = "10.237.20.11:/srv/nfs/instances"
LINE = "stacklab-disk:0f1e boot:77aa\n"


def disks_at(export: Path, runner: object) -> InstanceDisks:
    return InstanceDisks("nfs", runner, "nfs1", str(export), SHARE, "/var/lib/nova/instances",  # type: ignore[arg-type]
                         scratch=str(export / "scratch"))  # fmt: skip


@pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-io")), reason="needs qemu-img and qemu-io")
def test_the_line_is_read_from_the_qcow2_file_whose_backing_file_is_elsewhere(tmp_path: Path) -> None:
    """As on the NFS server: the overlay names /var/lib/nova/instances/_base/..., which does not exist there."""
    run, export = LocalRunner(), tmp_path / "export"
    base, disk = tmp_path / "base.raw", export / "inst-1" / "disk"
    disk.parent.mkdir(parents=True)
    run.run(["truncate", "-s", "1M", str(base)], timeout=30)
    run.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(disk), "64M"], timeout=60)
    disks = disks_at(export, run)
    assert disks.first_line("inst-1") == ""  # nothing written yet: the overlay's cluster reads as zeros
    (tmp_path / "line").write_text(LINE)
    run.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {tmp_path / 'line'} 0 {len(LINE)}", str(disk)], timeout=60)
    base.unlink()  # the backing path of the computes is not on the server
    assert disks.line("inst-1", lambda text: " boot:" in text, what="a boot", timeout=5) == LINE.strip()
    assert disks.first_line("missing") == ""
    assert disks.identity("inst-1") == f"{disk.stat().st_dev}:{disk.stat().st_ino}"
    assert not (export / "scratch" / "disk-inst-1.head").exists()
    assert disks.where("inst-1") == f"nfs1:{export}/inst-1/disk"


def findmnt(source: str, fstype: str, addr: str) -> str:
    options = f"rw,relatime,vers=4.2,proto=tcp,clientaddr=10.237.20.12,addr={addr}"
    return json.dumps({"filesystems": [{"source": source, "fstype": fstype, "options": options}]})


def test_every_compute_must_show_the_share_from_the_servers_storage_address() -> None:
    good = FakeRunner().expect(["findmnt"], stdout=findmnt(SHARE, "nfs4", "10.237.20.11"))
    local = FakeRunner().expect(["findmnt"], stdout=findmnt("/dev/vda1", "ext4", ""))
    elsewhere = FakeRunner().expect(["findmnt"], stdout=findmnt(SHARE, "nfs4", "10.237.10.11"))
    bare = FakeRunner().expect(["findmnt"], rc=1)
    runners = {"c1": good, "c2": local, "c3": elsewhere, "c4": bare}
    disks = disks_at(Path("/srv/nfs/instances"), FakeRunner())
    problems, seen = disks.mount_problems(runners, ["c1"])
    assert problems == [] and seen == f"c1: {SHARE} nfs4 addr=10.237.20.11"
    assert good.calls[0][-2:] == ("--mountpoint", "/var/lib/nova/instances")
    problems, _ = disks.mount_problems(runners, ["c2", "c3", "c4"])
    assert problems == [
        f"/var/lib/nova/instances on c2 is ext4 from /dev/vda1, not NFS from {SHARE}",
        f"c3 reaches {SHARE} at 10.237.10.11, not at 10.237.20.11",
        "nothing is mounted at /var/lib/nova/instances on c4",
    ]


def test_rbd_disks_have_no_file_and_no_mount_to_check() -> None:
    disks = InstanceDisks("rbd", FakeRunner())
    assert disks.where("abc") == "vms/abc_disk" and disks.identity("abc") == ""
    assert disks.mount_problems({}, ["c1"]) == ([], "")


def test_a_shared_console_log_is_attributed_to_the_compute_that_wrote_each_beat() -> None:
    """instances_on nfs: both watchers read the one console.log. c1 (source) wrote 1..5, c2 (destination) 6..8;
    each watcher read the other's lines late, and c2's watcher read c1's early lines at its start."""
    from stacklab.suites.test_migration import Beat, attribute_shared, beat_problems

    seen = [Beat(10.0 + n * 0.2, "b", n, "c1") for n in range(1, 6)]  # c1's own, at once
    seen += [Beat(10.1, "b", n, "c2") for n in range(1, 4)]  # c2's watcher started: the file so far
    seen += [Beat(14.0, "b", n, "c2") for n in (4, 5)]  # c1's last lines, read late on c2
    seen += [Beat(11.6 + n * 0.2, "b", n, "c2") for n in range(6, 20)]  # c2's own, at once
    seen += [Beat(16.0, "b", n, "c1") for n in range(6, 20)]  # c2's lines, read late on c1
    raw, _ = beat_problems(seen, boot="b", source="c1", dest="c2", bound=10.0)
    assert raw  # read by node, the shared log looks like a guest counting again
    beats = attribute_shared(seen, source="c1", before=3)
    assert [b.n for b in beats if b.node == "c1"] == [1, 2, 3, 4, 5]
    assert [b.n for b in beats if b.node == "c2"] == list(range(6, 20))
    problems, pause = beat_problems(beats, boot="b", source="c1", dest="c2", bound=10.0)
    assert problems == [] and pause.seconds == 1.8 and pause.last and pause.last.n == 5
