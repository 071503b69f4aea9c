"""Host snapshots: the leak computation on hand-made snapshots, and reading a fake /proc, /sys and /run tree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stacklab.exec.fake import FakeRunner
from stacklab.host.snapshot import HostSnapshot, Leak, ProcessInfo, leaks, take_snapshot

# As session.lab_markers makes them: name, state dir, containers' cgroup dir, domain names (exact); kernel prefix.
MARKERS = ["aio", "/root/.stacklab/aio", "stacklab/aio-1a2b3c", "stacklab-aio-compute1"]
PREFIXES = ["s4c9"]
M = {"lab_markers": MARKERS, "prefix_markers": PREFIXES}


def proc(
    pid: int,
    start: int,
    comm: str,
    cmdline: str = "",
    ppid: int = 1,
    *,
    cgroup: str = "",
    cwd: str = "",
    env: tuple[str, ...] = (),
    pgrp: int = 0,
) -> ProcessInfo:
    return ProcessInfo(pid, start, ppid, comm, cmdline or comm, cgroup, cwd, env, pgrp)


INIT = proc(1, 5, "init", "/sbin/init")
SHELL = proc(100, 50, "bash", "-bash")
BEFORE = HostSnapshot(
    interfaces=("eth0", "lo"),
    netns=(),
    mounts=("/", "/proc", "/run/netns"),
    loop_devices=(("/dev/loop0", "/srv/other.img"),),
    processes=(INIT, SHELL),
    lxc_containers=(),
    libvirt_domains=("someone-elses-vm",),
)


def after(**changes: object) -> HostSnapshot:
    data = BEFORE.to_json()
    data.update(changes)
    return HostSnapshot.from_json(data)


def test_nothing_new_means_no_leak() -> None:
    assert leaks(BEFORE, BEFORE, **M) == []


def test_only_objects_present_after_and_not_before_count() -> None:
    later = HostSnapshot(
        interfaces=("eth0", "lo", "s4c9br-mgmt"),  # new
        netns=("s4c9-n1",),
        mounts=("/", "/proc", "/run/netns", "/srv", "/srv", "/run/netns/s4c9-n1"),  # two stacked + one new
        loop_devices=(("/dev/loop0", "/srv/other.img"), ("/dev/loop1", "/root/.stacklab/aio/vg.img")),
        processes=(INIT, SHELL),
        lxc_containers=("/var/lib/lxc/aio-ctl",),
        libvirt_domains=("aio-compute1",),  # someone-elses-vm disappeared: not our business
    )
    assert [str(leak) for leak in leaks(BEFORE, later, **M)] == [
        "interface s4c9br-mgmt",
        "netns s4c9-n1",
        "mount /run/netns/s4c9-n1",
        "mount /srv (2 more mounts than before)",
        "loop device /dev/loop1 (backing file /root/.stacklab/aio/vg.img)",
        "lxc container /var/lib/lxc/aio-ctl",
        "libvirt domain aio-compute1",
    ]
    # gone objects are never leaks
    assert leaks(BEFORE, HostSnapshot(interfaces=("lo",), processes=(INIT,), libvirt_domains=())) == []


def test_the_run_netns_bind_mount_left_by_iproute2_is_not_a_leak() -> None:
    before = HostSnapshot(mounts=("/",))
    later = HostSnapshot(mounts=("/", "/run/netns", "/run/netns/x"))
    assert leaks(before, later) == [Leak("mount", "/run/netns/x")]


def test_loop_device_rebound_to_another_file_is_new() -> None:
    later = after(loop_devices=[{"device": "/dev/loop0", "backing_file": "/root/.stacklab/aio/osd.img"}])
    assert leaks(BEFORE, later) == [Leak("loop device", "/dev/loop0", "backing file /root/.stacklab/aio/osd.img")]


def test_new_process_counts_only_when_it_references_the_lab() -> None:
    tgtd = proc(2001, 900, "tgtd", "/usr/sbin/tgtd -f --iscsi portal=10.0.0.1 -C /root/.stacklab/aio/tgt")
    cron = proc(2002, 901, "cron", "/usr/sbin/cron -f")  # started meanwhile, nothing to do with the lab
    ganesha = proc(2003, 902, "ganesha.nfsd", "ganesha.nfsd -F", cgroup="/stacklab/aio/nfs")
    qemu = proc(2004, 903, "qemu-system-x86", "qemu-system-x86_64 -name guest=x", cwd="/root/.stacklab/aio/run")
    ceph = proc(2005, 904, "ceph-osd", "ceph-osd -i 0", env=("STACKLAB_LAB=aio",))
    later = after(processes=[p.to_json() for p in (INIT, SHELL, tgtd, cron, ganesha, qemu, ceph)])
    assert [str(leak) for leak in leaks(BEFORE, later, **M)] == [
        "process 2001 tgtd (started during the lab; cmdline mentions 'aio')",
        "process 2003 ganesha.nfsd (started during the lab; cgroup mentions 'aio')",
        "process 2004 qemu-system-x86 (started during the lab; cwd mentions 'aio')",
        "process 2005 ceph-osd (started during the lab; environment mentions 'aio')",
    ]


def test_a_child_of_a_lab_process_is_found_through_its_ancestry() -> None:
    supervisor = proc(3000, 1000, "sh", "sh -c run-node s4c9-n1")
    child = proc(3001, 1001, "sleep", "sleep infinity", ppid=3000)
    later = after(processes=[p.to_json() for p in (INIT, SHELL, supervisor, child)])
    assert [str(leak) for leak in leaks(BEFORE, later, **M)] == [
        "process 3000 sh (started during the lab; cmdline mentions 's4c9')",
        "process 3001 sleep (started during the lab; ancestor 3000 sh mentions 's4c9')",
    ]


def test_a_reused_pid_is_a_new_process() -> None:
    old = proc(4000, 10, "tgtd", "tgtd --old-unrelated-instance")
    reused = proc(4000, 2222, "tgtd", "tgtd -C /root/.stacklab/aio/tgt")
    before = HostSnapshot(processes=(INIT, old))
    assert [leak.object for leak in leaks(before, HostSnapshot(processes=(INIT, reused)), **M)] == ["4000 tgtd"]
    # the same (pid, starttime) is the same process, whatever its cmdline says now
    assert leaks(before, HostSnapshot(processes=(INIT, old)), lab_markers=["old"]) == []


def test_the_snapshot_taker_and_its_ancestors_are_never_leaks() -> None:
    shell = proc(5000, 3000, "bash", "bash -c stacklab up aio && stacklab down aio")
    down = proc(5001, 3001, "stacklab", "/usr/bin/python3 stacklab down aio", ppid=5000)
    sibling = proc(5002, 3002, "sleep", "sleep 5", ppid=5000)  # the shell's child: the shell lends no marker
    later = HostSnapshot(processes=(INIT, shell, down, sibling), taker=(down.key, shell.key, INIT.key))
    assert leaks(HostSnapshot(processes=(INIT,)), later, **M) == []


def test_the_takers_shell_job_is_not_a_leak_but_the_takers_children_and_other_jobs_are() -> None:
    """`cd ~/aio && stacklab down aio | tee log`: tee runs in a directory that mentions the lab, beside the taker."""
    shell = proc(5000, 3000, "bash", "-bash", pgrp=5000)
    down = proc(5001, 3001, "stacklab", "/usr/bin/python3 stacklab down aio", ppid=5000, cwd="/root/aio", pgrp=5001)
    tee = proc(5002, 3002, "tee", "tee log", ppid=5000, cwd="/root/aio", pgrp=5001)
    other_job = proc(5003, 3003, "sleep", "sleep 60", ppid=5000, cwd="/root/aio", pgrp=5003)
    child = proc(5004, 3004, "ssh", "ssh n1", ppid=5001, cwd="/root/aio", pgrp=5001)
    daemon = proc(5005, 3005, "tgtd", "tgtd -f", ppid=1, cwd="/root/aio", pgrp=5001)  # double-forked, kept pgrp
    later = HostSnapshot(
        processes=(INIT, shell, down, tee, other_job, child, daemon), taker=(down.key, shell.key, INIT.key)
    )
    found = [leak.object for leak in leaks(HostSnapshot(processes=(INIT,)), later, **M)]
    assert found == ["5003 sleep", "5004 ssh", "5005 tgtd"]


def test_markers_match_at_a_word_start_only() -> None:
    raio = proc(6000, 4000, "raiod", "raiod --fast")  # 'aio' inside a word is not the lab
    lab = proc(6001, 4001, "dnsmasq", "dnsmasq --interface=s4c9br-mgmt")  # the prefix starts a name
    later = HostSnapshot(processes=(INIT, raio, lab))
    assert [leak.object for leak in leaks(HostSnapshot(processes=(INIT,)), later, **M)] == ["6001 dnsmasq"]


def test_libvirt_unreachable_before_counts_only_domains_named_for_the_lab() -> None:
    before = HostSnapshot(libvirt_domains=None)
    later = HostSnapshot(libvirt_domains=("stacklab-aio-compute1", "stacklab-aio-compute10", "unrelated-vm"))
    assert leaks(before, later, **M) == [Leak("libvirt domain", "stacklab-aio-compute1")]
    # unreachable after: nothing can be said
    assert leaks(HostSnapshot(libvirt_domains=()), HostSnapshot(libvirt_domains=None)) == []


def test_libvirt_definitions_left_on_disk_are_leaks_even_with_libvirtd_stopped(tmp_path: Path) -> None:
    """A pool or domain still defined after `down` shows as its XML file, whether or not a libvirtd answers."""

    def runner() -> FakeRunner:
        return FakeRunner().expect(["ip", "netns", "list"], rc=1, stderr="ip: not found")

    before = take_snapshot(runner(), root=tmp_path, self_pid=1)
    assert before.libvirt_definitions == ()
    storage = tmp_path / "etc/libvirt/storage"
    storage.mkdir(parents=True)
    (storage / "stacklab-aio.xml").write_text("<pool/>")
    (storage / "default.xml").write_text("<pool/>")  # someone else's, made meanwhile
    (tmp_path / "etc/libvirt/qemu").mkdir()
    (tmp_path / "etc/libvirt/qemu/stacklab-aio-compute1.xml").write_text("<domain/>")
    after = take_snapshot(runner(), root=tmp_path, self_pid=1)
    assert after.libvirt_domains is None  # no libvirtd
    found = [leak for leak in leaks(before, after) if any(m in leak.object for m in MARKERS)]
    assert found == [
        Leak("libvirt definition", "etc/libvirt/qemu/stacklab-aio-compute1.xml"),
        Leak("libvirt definition", "etc/libvirt/storage/stacklab-aio.xml"),
    ]
    assert HostSnapshot.from_json(after.to_json()).libvirt_definitions == after.libvirt_definitions
    assert HostSnapshot.from_json({"version": before.to_json()["version"]}).libvirt_definitions == ()


def test_json_round_trip() -> None:
    snap = HostSnapshot(
        interfaces=("lo",),
        netns=("a",),
        mounts=("/", "/"),
        loop_devices=(("/dev/loop0", "/x.img"),),
        processes=(proc(7, 8, "x", "x --y", ppid=1, cgroup="/a,/b", cwd="/tmp", env=("STACKLAB_LAB=aio",)),),
        lxc_containers=("/var/lib/lxc/c1",),
        libvirt_domains=None,
        taker=((7, 8),),
        taken_at=12.5,
    )
    text = json.dumps(snap.to_json())
    assert HostSnapshot.from_json(json.loads(text)) == snap
    assert HostSnapshot.from_json(text) == snap


# -- reading a fake host tree -------------------------------------------------------------------------------------


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def fake_process(root: Path, pid: int, comm: str, argv: list[str], *, ppid: int, start: int) -> None:
    base = root / "proc" / str(pid)
    rest = ["S", str(ppid), str(pid), *["0"] * 16, str(start), "0"]  # fields 3.. ; pgrp is 5, starttime 22
    write(base / "stat", f"{pid} ({comm}) {' '.join(rest)}\n")
    write(base / "cmdline", b"\0".join(a.encode() for a in argv) + b"\0")
    write(base / "cgroup", "4:memory:/stacklab/aio\n0::/\n")
    write(base / "environ", b"PATH=/bin\0STACKLAB_LAB=aio\0")
    os.symlink("/root/.stacklab/aio", base / "cwd")


def test_take_snapshot_reads_the_host_tree(tmp_path: Path) -> None:
    root = tmp_path
    for name in ("lo", "eth0", "s4c9br-mgmt"):
        (root / "sys/class/net" / name).mkdir(parents=True)
    write(root / "run/netns/s4c9-n1", "")
    write(
        root / "proc/self/mountinfo",
        "22 27 0:21 / /proc rw - proc proc rw\n30 27 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw\n",
    )
    write(root / "sys/block/loop0/loop/backing_file", "/srv/a.img\n")
    (root / "sys/block/loop1").mkdir(parents=True)  # not bound
    (root / "sys/block/vda").mkdir(parents=True)
    fake_process(root, 1, "init", ["/sbin/init"], ppid=0, start=1)
    fake_process(root, 42, "tgtd (x)", ["tgtd", "-f"], ppid=1, start=777)
    write(root / "var/lib/lxc/aio-ctl/config", "")
    (root / "var/lib/lxc/not-a-container").mkdir(parents=True)
    write(root / "run/libvirt/libvirt-sock", "")
    runner = FakeRunner()
    runner.expect(["ip", "netns", "list"], stdout="s4c9-n2 (id: 3)\ns4c9-n1\n")
    runner.expect(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], stdout="aio-c1\n\n")

    snap = take_snapshot(runner, lxcpaths=["/var/lib/lxc"], root=root, self_pid=42)

    assert snap.interfaces == ("eth0", "lo", "s4c9br-mgmt")
    assert snap.netns == ("s4c9-n1", "s4c9-n2")
    assert snap.mounts == ("/proc", "/mnt/with space")
    assert snap.loop_devices == (("/dev/loop0", "/srv/a.img"),)
    assert snap.lxc_containers == ("/var/lib/lxc/aio-ctl",)
    assert snap.libvirt_domains == ("aio-c1",)
    tgtd = snap.processes[1]
    assert tgtd == ProcessInfo(
        pid=42,
        starttime=777,
        ppid=1,
        comm="tgtd (x)",
        cmdline="tgtd -f",
        cgroup="/stacklab/aio",
        cwd="/root/.stacklab/aio",
        env=("STACKLAB_LAB=aio",),
        pgrp=42,
    )
    assert snap.taker == ((42, 777), (1, 1))
    assert all(call[0] in ("ip", "virsh") for call in runner.calls)


def test_take_snapshot_without_libvirt_or_ip(tmp_path: Path) -> None:
    runner = FakeRunner().expect(["ip", "netns", "list"], rc=1, stderr="ip: not found")
    snap = take_snapshot(runner, root=tmp_path, self_pid=1)
    assert snap.libvirt_domains is None  # no socket: virsh is not even called
    assert runner.calls == [("ip", "netns", "list")]
    assert snap == HostSnapshot(taken_at=snap.taken_at)


@pytest.mark.parametrize("version", [0, 2])
def test_unknown_snapshot_version_is_refused(version: int) -> None:
    from stacklab.errors import StackLabError

    with pytest.raises(StackLabError, match="version"):
        HostSnapshot.from_json({"version": version})


def _node_processes(state_dir: str, cgroup_dir: str, first_pid: int) -> list[ProcessInfo]:
    """What one running LXC node of a lab looks like in the host's /proc (recorded from a containers-3 lab, with
    the lab's paths put in): the monitor, the container's init and its services, each in the lab's cgroup tree."""
    recorded = [
        ("lxc-start", "[lxc monitor] {lxc} {node}", "{cg}/{node}/monitor", ""),
        ("systemd", "/sbin/init", "{cg}/{node}/payload/init.scope", "/"),
        ("systemd-journal", "/lib/systemd/systemd-journald", "{cg}/{node}/payload/system.slice/systemd-journald", "/"),
        ("cron", "/usr/sbin/cron -f", "{cg}/{node}/payload/system.slice/cron.service", "/var/spool/cron"),
        ("dbus-daemon", "/usr/bin/dbus-daemon --system", "{cg}/{node}/payload/system.slice/dbus.service", "/"),
        ("sshd", "sshd: /usr/sbin/sshd -D [listener]", "{cg}/{node}/payload/system.slice/ssh.service", "/"),
        ("agetty", "/sbin/agetty -o -p -- \\u --noclear --keep-baud console", "{cg}/{node}/payload/x", "/"),
    ]
    found, pid = [], first_pid
    for node in ("n1", "n2", "n3"):
        for comm, cmdline, cgroup, cwd in recorded:
            fill = {"lxc": f"{state_dir}/lxc", "node": node, "cg": "/" + cgroup_dir}
            found.append(
                proc(
                    pid, pid + 100_000, comm, cmdline.format(**fill), cgroup=cgroup.format(**fill), cwd=cwd or state_dir
                )
            )
            pid += 1
    return found


def test_a_lab_never_claims_the_processes_of_a_lab_whose_name_it_prefixes(tmp_path: Path) -> None:
    """Issue 11: `down containers-3` with `containers-3b` up beside it failed its leak check on containers-3b's 21
    processes ("cmdline mentions 'containers-3'"): the markers matched as substrings. Markers as `down` makes them
    must find the lab's own leftovers and nothing of the other lab, nor of a lab whose name starts with the
    lab's followed by a dash (`containers-3-old`)."""
    import yaml

    from stacklab.drivers.nodes.lxc_config import cgroup_lab_dir
    from stacklab.model.lab import Lab
    from stacklab.session import lab_markers

    root = "/root/.stacklab"
    lab = Lab.model_validate(yaml.safe_load((Path(__file__).parents[2] / "labs/containers-3.yml").read_text()))
    markers = lab_markers(lab, Path(f"{root}/containers-3"))
    prefix = lab.kernel_prefix

    def lab_processes(name: str, first_pid: int) -> list[ProcessInfo]:
        return _node_processes(f"{root}/{name}", cgroup_lab_dir(name, Path(f"{root}/{name}/lxc")), first_pid)

    others = lab_processes("containers-3b", 20_000) + lab_processes("containers-3-old", 30_000)
    before = HostSnapshot(processes=(INIT, SHELL))
    assert len(others) == 42
    after_other_labs = HostSnapshot(processes=(INIT, SHELL, *others))
    assert leaks(before, after_other_labs, lab_markers=markers, prefix_markers=[prefix]) == []
    # ... while this lab's own leftover monitor and container init, and a daemon by its environment, are found
    mine = lab_processes("containers-3", 40_000)
    env_only = proc(50_000, 90_000, "tgtd", "tgtd -f", env=("STACKLAB_LAB=containers-3",))
    env_other = proc(50_001, 90_001, "tgtd", "tgtd -f", env=("STACKLAB_LAB=containers-3b",))
    later = HostSnapshot(processes=(INIT, SHELL, *others, mine[0], mine[1], env_only, env_other))
    assert [str(leak) for leak in leaks(before, later, lab_markers=markers, prefix_markers=[prefix])] == [
        "process 40000 lxc-start (started during the lab; cmdline mentions 'containers-3')",  # .../containers-3/lxc
        f"process 40001 systemd (started during the lab; cgroup mentions '{markers[2]}')",
        "process 50000 tgtd (started during the lab; environment mentions 'containers-3')",
    ]


def test_exact_markers_need_a_delimiter_and_the_kernel_prefix_starts_a_name() -> None:
    from stacklab.host.snapshot import mentions

    assert mentions("/root/.stacklab/containers-3/lxc n1", "/root/.stacklab/containers-3")
    assert mentions("lxc-start -n n1 -P /root/.stacklab/containers-3", "/root/.stacklab/containers-3")
    assert not mentions("/root/.stacklab/containers-3b/lxc n1", "/root/.stacklab/containers-3")
    assert not mentions("STACKLAB_LAB=containers-3b", "containers-3")
    assert not mentions("stacklab-aio-compute10", "stacklab-aio-compute1")
    assert mentions("-name guest=stacklab-aio-compute1,debug-threads=on", "stacklab-aio-compute1")
    assert mentions("dnsmasq --interface=s4c9br-mgmt", "s4c9", prefix=True)
    assert not mentions("dnsmasq --interface=s4c9br-mgmt", "s4c9")
