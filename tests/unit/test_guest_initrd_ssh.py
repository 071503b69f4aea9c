"""guest_initrd.py's `--ssh` guest (dropbear, busybox, sudo, root's keys from the metadata) and tempest's
[validation] for it; the default and `--net` guests' archives stay what they were.

The builder reads the node's files; here it reads a small fake node under tmp_path (its own open, glob, os.path
and subprocess names point there), so the archive's file list is known exactly. The booted guest is proven by
tests/integration/test_guest_ssh.py.
"""

from __future__ import annotations

import builtins
import os
import stat
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

from stacklab.suites import guest_initrd as gi
from stacklab.suites import tempest_conf

VERSION = "6.1.0-99-cloud-amd64"
DEP = """kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/loop.ko:
"""
# ext4 as modules (Debian's cloud kernel builds them in: then these lines are not in modules.dep)
EXT4_DEP = """kernel/crypto/crc32c_generic.ko:
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
"""
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LOADER = "/lib64/ld-linux-x86-64.so.2"
LDD = {  # what ldd says of each binary on the fake node
    "/usr/bin/bash": ["libtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x1)", f"libc.so.6 => {LIBC} (0x2)"],
    "/usr/bin/ping": [f"libc.so.6 => {LIBC} (0x2)"],
    "/usr/sbin/ip": ["libmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x3)", f"libc.so.6 => {LIBC} (0x2)"],
    "/usr/sbin/dropbear": [
        "libtomcrypt.so.1 => /lib/x86_64-linux-gnu/libtomcrypt.so.1 (0x4)",
        f"libc.so.6 => {LIBC} (0x2)",
    ],
    "/usr/bin/dropbearkey": ["libtomcrypt.so.1 => /lib/x86_64-linux-gnu/libtomcrypt.so.1 (0x4)"],
    "/usr/sbin/mke2fs": [
        "libext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x5)",
        "libblkid.so.1 => /lib/x86_64-linux-gnu/libblkid.so.1 (0x6)",
        f"libc.so.6 => {LIBC} (0x2)",
    ],
    "/usr/bin/lsblk": [
        "libblkid.so.1 => /lib/x86_64-linux-gnu/libblkid.so.1 (0x6)",
        "libmount.so.1 => /lib/x86_64-linux-gnu/libmount.so.1 (0x7)",
        f"libc.so.6 => {LIBC} (0x2)",
    ],
}
APPLETS = ["sh", "cat", "mount", "ip", "ping", "hostname", "grep", "umount", "id", "stat", "ls", "mke2fs", "mkfs.ext2"]
MKE2FS_CONF = "[fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,metadata_csum\n\t}\n"

# The default guest's archive: (name, mode) in order (built with this fake node). busybox is there for its
# `sync -d` (klibc's sync sends no FLUSH), so klibc's sync is not.
DEFAULT = [
    ("bin", 0o40755), ("lib", 0o40755), ("lib/modules", 0o40755), ("dev", 0o40755), ("proc", 0o40755),
    ("sys", 0o40755), ("tmp", 0o40755), ("usr", 0o40755), ("usr/bin", 0o40755), ("dev/console", 0o20600),
    ("usr/bin/busybox", 0o100755), ("lib/klibc-ABC.so", 0o100755),
    *[(f"bin/{t}", 0o100755) for t in ("sh", "cat", "dd", "mount", "insmod", "sleep", "mkdir", "ls")],
    *[(f"lib/modules/{m}.ko", 0o100644)
      for m in ("virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci", "virtio_blk")],
    ("lib/modules/order", 0o100644), ("init", 0o100755),
]  # fmt: skip
NET_ADDED = [
    ("lib/modules/virtio_net.ko", 0o100644), ("run", 0o40755), ("lib64", 0o40755),
    ("lib/x86_64-linux-gnu", 0o40755), ("bin/ipconfig", 0o100755), ("bin/bash", 0o100755), ("bin/ping", 0o100755),
    ("bin/ip", 0o100755), ("lib/x86_64-linux-gnu/libtinfo.so.6", 0o100755),
    ("lib/x86_64-linux-gnu/libc.so.6", 0o100755), ("lib64/ld-linux-x86-64.so.2", 0o100755),
    ("lib/x86_64-linux-gnu/libmnl.so.0", 0o100755),
    ("net.sh", 0o100755),
]  # fmt: skip


def entries(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, body) of each member of a newc archive, without the trailer."""
    out: list[tuple[str, int, bytes]] = []
    i = 0
    while True:
        fields = [int(data[i + 6 + 8 * k : i + 14 + 8 * k], 16) for k in range(13)]
        name = data[i + 110 : i + 110 + fields[11] - 1].decode()
        i += 110 + fields[11]
        i += -i % 4
        body = data[i : i + fields[6]]
        i += fields[6] + -(i + fields[6]) % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, fields[1], body))


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake node under tmp_path; guest_initrd's file and command access goes there."""
    root = tmp_path / "node"

    def put(path: str, body: str = "") -> None:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(body or f"content of {path}")

    put(f"/lib/modules/{VERSION}/modules.dep", DEP + EXT4_DEP)
    for line in (DEP + EXT4_DEP).splitlines():
        if line.startswith("kernel/"):
            put(f"/lib/modules/{VERSION}/{line.split(':')[0]}")
    put(gi.MKE2FS_CONF, MKE2FS_CONF)
    put("/usr/lib/klibc-ABC.so")
    for tool in (*gi.TOOLS, *gi.NET_TOOLS):
        put(f"/usr/lib/klibc/bin/{tool}")
    for path in (*LDD, gi.BUSYBOX, LIBC, LOADER, *(line.split()[2] for lines in LDD.values() for line in lines)):
        put(path)

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        if argv[0] == "ldd":
            listing = ["linux-vdso.so.1 (0x0)", *LDD[argv[1]], f"{LOADER} (0x9)"]
            return subprocess.CompletedProcess(argv, 0, "\n".join(f"\t{x}" for x in listing) + "\n", "")
        assert argv == [gi.BUSYBOX, "--list"], argv
        return subprocess.CompletedProcess(argv, 0, "\n".join(APPLETS) + "\n", "")

    def fake_glob(pattern: str) -> list[str]:
        return sorted("/" + str(p.relative_to(root)) for p in root.glob(pattern.lstrip("/")))

    def fake_open(path: str, mode: str = "r") -> Any:
        return builtins.open(root / path.lstrip("/"), mode)

    fake_path = types.SimpleNamespace(realpath=lambda p: p, exists=lambda p: (root / p.lstrip("/")).exists(),
                                      basename=os.path.basename)  # fmt: skip
    monkeypatch.setattr(gi, "open", fake_open, raising=False)
    monkeypatch.setattr(gi, "glob", types.SimpleNamespace(glob=fake_glob))
    monkeypatch.setattr(gi, "os", types.SimpleNamespace(path=fake_path))
    monkeypatch.setattr(gi, "subprocess", types.SimpleNamespace(run=fake_run))
    return root


def test_the_default_guest_has_exactly_its_files(node: Path) -> None:
    members = entries(gi.initramfs(VERSION))
    assert [(n, m) for n, m, _ in members] == DEFAULT
    assert members[-1][2] == gi.INIT.encode()
    assert b"net.sh" not in members[-1][2] and not any(n.startswith(("etc", "root")) for n, _, _ in members)
    assert dict((n, b) for n, _, b in members)["usr/bin/busybox"] == b"content of /bin/busybox"


def test_the_guest_flushes_every_line_it_writes_on_a_disk() -> None:
    """Each `echo ... > /dev/X` is followed by busybox's fdatasync of that device: sync() alone sends no FLUSH, and
    a qcow2 file on the backend (nova's disks on NFS) would not show the line (tests/integration/test_guest_ssh.py
    boots the guest on a qcow2 disk and reads the file while QEMU runs)."""
    lines = gi.INIT.splitlines()
    writes = [i for i, line in enumerate(lines) if "echo" in line and "> /dev/$" in line]
    assert len(writes) == 2, writes
    for i in writes:
        device = lines[i].split("> ")[-1].strip()
        assert lines[i + 1].strip() == f"/usr/bin/busybox sync -d {device}", lines[i : i + 2]
    assert not any(line.strip() == "sync" for line in lines)


def test_the_guest_needs_busybox(node: Path) -> None:
    (node / "bin/busybox").unlink()
    with pytest.raises(SystemExit, match=r"the guest needs busybox-static in the image.*/bin/busybox"):
        gi.initramfs(VERSION)


def test_the_net_guest_has_exactly_its_files_and_runs_net_unchanged(node: Path) -> None:
    members = entries(gi.initramfs(VERSION, net=True))
    names = [(n, m) for n, m, _ in members]
    expected = [*DEFAULT[:-2], *NET_ADDED, *DEFAULT[-2:]]
    expected.remove(("lib/modules/order", 0o100644))
    expected.insert(expected.index(("run", 0o40755)), ("lib/modules/order", 0o100644))
    assert names == expected
    body = dict((n, b) for n, _, b in members)
    assert body["net.sh"] == gi.NET.encode() and b"dropbear" not in body["net.sh"]
    assert body["init"] == gi.INIT.replace(gi.NET_HOOK, gi.NET_HOOK + "/bin/bash /net.sh &\n").encode()


def test_the_ssh_guest_is_the_net_guest_plus_dropbear_busybox_sudo_and_root(node: Path) -> None:
    net = entries(gi.initramfs(VERSION, net=True))
    ssh = entries(gi.initramfs(VERSION, ssh=True))
    modes = {n: m for n, m, _ in ssh}
    body = {n: b for n, _, b in ssh}
    # everything of the --net guest is there (net.sh grows SSH), and dropbear's library once
    assert {n for n, _, _ in net} <= set(modes)
    assert [n for n, _, _ in ssh].count("lib/x86_64-linux-gnu/libc.so.6") == 1
    assert body["lib/x86_64-linux-gnu/libtomcrypt.so.1"] == b"content of /lib/x86_64-linux-gnu/libtomcrypt.so.1"
    assert body["usr/sbin/dropbear"] == b"content of /usr/sbin/dropbear"
    assert body["usr/bin/dropbearkey"] == b"content of /usr/bin/dropbearkey"
    assert body["usr/bin/busybox"] == b"content of /bin/busybox"
    # applets link to busybox, but never over a tool of /bin (klibc's, INIT's, NET's) except mount and ls (klibc's
    # need -t, have no -R), nor over e2fsprogs' mke2fs; /bin keeps klibc's for INIT and NET
    links = {n.removeprefix("usr/bin/") for n, m, b in ssh if stat.S_ISLNK(m) and b == b"busybox"}
    assert links == {"hostname", "grep", "umount", "id", "stat", "mount", "ls"}
    assert not any(n in modes for n in ("bin/hostname", "usr/bin/sh", "usr/bin/cat", "usr/bin/ip", "usr/bin/mke2fs"))
    assert body["bin/sh"] == b"content of /usr/lib/klibc/bin/sh"
    assert body["bin/mount"] == b"content of /usr/lib/klibc/bin/mount"
    assert body["bin/ls"] == b"content of /usr/lib/klibc/bin/ls"
    assert body["etc/passwd"] == b"root:*:0:0:root:/root:/bin/bash\n"
    assert b"/bin/bash\n" in body["etc/shells"].splitlines(keepends=True)
    assert modes["root"] == modes["root/.ssh"] == stat.S_IFDIR | 0o700
    assert body["usr/bin/sudo"] == gi.SUDO.encode() and modes["usr/bin/sudo"] == stat.S_IFREG | 0o755
    # SSH runs in NET after the metadata is read and before the endless ping loop
    script = body["net.sh"].decode()
    assert script.index("/tmp/meta)") < script.index(gi.SSH) < script.index(gi.SSH_HOOK)
    # INIT is the --net guest's with the boot disk by its name on a volume boot and /mnt on that disk
    net_init = dict((n, b) for n, _, b in net)["init"].decode()
    expected = net_init.replace(gi.ROOT_HOOK, gi.ROOT_BY_NAME + gi.ROOT_HOOK)
    expected = expected.replace(gi.NO_ROOT_HOOK, gi.NO_ROOT + gi.NO_ROOT_HOOK).replace(
        gi.STORE_HOOK, gi.STORE_HOOK + gi.STORE
    )
    assert body["init"].decode() == expected


def test_the_ssh_guest_has_what_tempests_volume_tests_run(node: Path) -> None:
    """`lsblk -lb --nodeps`, `sudo mke2fs -t ext4 /dev/vdX` and `sudo mount /dev/vdX /mnt` (remote_client.py):
    util-linux's lsblk and e2fsprogs' mke2fs (with the image's mke2fs.conf) with their libraries, /mnt, and ext4
    with what it needs when the kernel has it as modules (loaded by INIT from the order file, before any disk)."""
    members = entries(gi.initramfs(VERSION, ssh=True))
    names = [n for n, _, _ in members]
    modes = {n: m for n, m, _ in members}
    body = {n: b for n, _, b in members}
    assert body["usr/sbin/mke2fs"] == b"content of /usr/sbin/mke2fs"
    assert body["usr/bin/lsblk"] == b"content of /usr/bin/lsblk"
    for name in ("mkfs.ext2", "mkfs.ext3", "mkfs.ext4"):
        assert (modes[f"usr/sbin/{name}"], body[f"usr/sbin/{name}"]) == (stat.S_IFLNK | 0o777, b"mke2fs")
    assert body["etc/mke2fs.conf"] == MKE2FS_CONF.encode()
    for lib in ("libext2fs.so.2", "libblkid.so.1", "libmount.so.1", "libc.so.6"):
        assert names.count(f"lib/x86_64-linux-gnu/{lib}") == 1, lib
    assert modes["mnt"] == stat.S_IFDIR | 0o755
    order = body["lib/modules/order"].decode().split()
    assert order[-7:] == ["virtio_net", "crc32c_generic", "crc16", "mbcache", "jbd2", "ext4", "loop"]
    for module in order[-6:]:
        assert body[f"lib/modules/{module}.ko"].startswith(b"content of /lib/modules/"), module
    # the --net guest (and so the default one) gets none of it
    net = {n: b for n, _, b in entries(gi.initramfs(VERSION, net=True))}
    assert net["lib/modules/order"].decode().split()[-1] == "virtio_net"
    assert not any(n in net for n in ("usr/sbin/mke2fs", "usr/bin/lsblk", "etc/mke2fs.conf", "mnt"))


def test_ext4_built_in_adds_no_module(node: Path) -> None:
    """Debian's cloud kernel builds ext4, jbd2 and crc32c in: modules.dep does not list them, nothing is added
    for them; loop is a module there (it carries /mnt's ext4), the one module the --ssh guest adds."""
    (node / f"lib/modules/{VERSION}/modules.dep").write_text(DEP)
    ssh = {n: b for n, _, b in entries(gi.initramfs(VERSION, ssh=True))}
    net = {n: b for n, _, b in entries(gi.initramfs(VERSION, net=True))}
    assert ssh["lib/modules/order"] == net["lib/modules/order"] + b" loop"
    assert sorted(n for n in ssh if n.startswith("lib/modules/")) == sorted(
        [*(n for n in net if n.startswith("lib/modules/")), "lib/modules/loop.ko"]
    )
    (node / "etc/mke2fs.conf").unlink()  # mke2fs then uses its built-in defaults
    assert "etc/mke2fs.conf" not in {n for n, _, _ in entries(gi.initramfs(VERSION, ssh=True))}


@pytest.mark.parametrize("path", ["/usr/sbin/dropbear", "/usr/sbin/mke2fs", "/usr/bin/lsblk"])
def test_the_ssh_guest_needs_its_packages(node: Path, path: str) -> None:
    (node / path.lstrip("/")).unlink()
    with pytest.raises(SystemExit, match=rf"--ssh needs dropbear-bin, busybox-static, e2fsprogs and util-linux in "
                                         rf"the image; this node lacks {path}$"):  # fmt: skip
        gi.initramfs(VERSION, ssh=True)


def test_the_net_guest_needs_every_library(node: Path) -> None:
    LDD["/usr/bin/ping"].append("libidn2.so.0 => not found")
    try:
        with pytest.raises(SystemExit, match=r"/usr/bin/ping needs libidn2\.so\.0, which this node lacks"):
            gi.initramfs(VERSION, net=True)
    finally:
        LDD["/usr/bin/ping"].pop()


def ssh_keys_part(tmp_path: Path, meta: str) -> subprocess.CompletedProcess[str]:
    """SSH's hostname and key part (up to the devpts mount), run by bash with its paths under tmp_path."""
    part = gi.SSH[: gi.SSH.index("[ -d /dev/pts ]")]
    part = part.replace("/proc/sys/kernel/hostname", f"{tmp_path}/hostname").replace("/root/", f"{tmp_path}/")
    (tmp_path / ".ssh").mkdir(exist_ok=True)
    script = 'say() { echo "stacklab-net: $*"; }\nmeta=$(< "$1")\n' + part
    (tmp_path / "meta").write_text(meta)
    return subprocess.run(["bash", "-c", script, "ssh", str(tmp_path / "meta")], capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip


def test_the_guest_takes_every_key_and_its_hostname_from_the_metadata(tmp_path: Path) -> None:
    meta = ('{"uuid": "u", "hostname": "vm-1.novalocal", "public_keys": {"k1": "ssh-rsa AAAAB3Nza k1@h\\n", '
            '"k2": "ssh-ed25519 AAAAC3Nz k2@h"}, "launch_index": 0}')  # fmt: skip
    out = ssh_keys_part(tmp_path, meta)
    keys = tmp_path / ".ssh/authorized_keys"
    assert keys.read_text() == "ssh-rsa AAAAB3Nza k1@h\nssh-ed25519 AAAAC3Nz k2@h\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert (tmp_path / "hostname").read_text() == "vm-1\n"
    assert "stacklab-net: hostname vm-1" in out.stdout and "no public key" not in out.stdout


def test_a_guest_without_a_keypair_says_nobody_can_log_in(tmp_path: Path) -> None:
    out = ssh_keys_part(tmp_path, '{"uuid": "u", "name": "g"}')
    assert (tmp_path / ".ssh/authorized_keys").read_text() == ""
    assert "stacklab-net: metadata has no public key: nobody can log in" in out.stdout


def sudo(*args: str) -> subprocess.CompletedProcess[str]:
    argv = ["bash", "-c", gi.SUDO, "sudo", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_sudo_runs_its_command_as_the_only_user() -> None:
    assert sudo("id", "-u").stdout == f"{os.getuid()}\n"
    assert sudo("-n", "-u", "root", "--", "sh", "-c", "echo $0 ran", "x").stdout == "x ran\n"
    assert sudo("sh", "-c", "exit 3").returncode == 3
    other = sudo("-u", "bob", "id")
    assert other.returncode == 1 and "only root" in other.stderr
    assert sudo("-i").returncode == 1 and sudo().returncode == 1


def test_validation_for_the_ssh_guest_by_fixed_address_or_floating_ip() -> None:
    fixed = tempest_conf.validation("fixed", "stacklab-net")["validation"]
    assert fixed["run_validation"] == "true" and fixed["connect_method"] == "fixed"
    assert fixed["network_for_ssh"] == "stacklab-net"
    assert (fixed["auth_method"], fixed["image_ssh_user"]) == ("keypair", "root")
    assert int(fixed["ssh_timeout"]) >= 120
    floating = tempest_conf.validation("floating")["validation"]
    assert floating["connect_method"] == "floating" and "network_for_ssh" not in floating
    with pytest.raises(ValueError, match="tempest knows fixed, floating"):
        tempest_conf.validation("ssh")
    with pytest.raises(ValueError, match="needs the network"):
        tempest_conf.validation("fixed")


def test_tempest_conf_does_not_validate_yet() -> None:
    cloud = tempest_conf.TempestCloud("http://k/v3", "RegionOne", "pw", frozenset({"nova"}), "i", "f", "f2", (), (),
                                      "/w")  # fmt: skip
    assert tempest_conf.sections(cloud)["validation"] == {"run_validation": "false"}


def test_every_guest_marks_a_disk_per_name_and_serial() -> None:
    """A volume detached and another attached under the same name (vdb) gets its line: INIT's done-mark is the name
    and the serial (nova's volume id). tests/integration/test_guest_ssh.py proves it on a booted guest (QMP detach
    and attach), which failed with the mark per name alone."""
    lines = gi.INIT.splitlines()
    assert 'mkdir /tmp/done "/tmp/done/$root-$(cat /sys/block/$root/serial 2>/dev/null)"' in lines
    assert '    [ -b /dev/$d ] && key="$d-$(cat /sys/block/$d/serial 2>/dev/null)" || key=""' in lines
    assert '    if [ -n "$key" ] && [ ! -e "/tmp/done/$key" ]; then' in lines
    assert '      mkdir "/tmp/done/$key"' in lines
    assert not any("/tmp/done/$d" in line for line in lines)


def test_only_the_ssh_guest_boots_from_a_volume_and_keeps_mnt_on_its_boot_disk(node: Path) -> None:
    """--ssh: the boot disk by root= when no disk lacks a serial (a volume boot), and STORE right after INIT's line
    is flushed, before any volume is marked; the default and --net guests' INIT has neither."""
    default = dict((n, b) for n, _, b in entries(gi.initramfs(VERSION)))["init"].decode()
    net = dict((n, b) for n, _, b in entries(gi.initramfs(VERSION, net=True)))["init"].decode()
    ssh = dict((n, b) for n, _, b in entries(gi.initramfs(VERSION, ssh=True)))["init"].decode()
    assert gi.INIT.count(gi.ROOT_HOOK) == gi.INIT.count(gi.STORE_HOOK) == gi.INIT.count(gi.NO_ROOT_HOOK) == 1
    for init in (default, net):
        assert gi.ROOT_BY_NAME not in init and gi.STORE not in init and "/mnt" not in init
    assert ssh.count(gi.ROOT_BY_NAME + gi.ROOT_HOOK) == 1 and ssh.count(gi.STORE_HOOK + gi.STORE) == 1
    # inside the wait for the root disk, after the serial-less look, and only after 3 s of it
    assert ssh.index("root=$d; fi\n  done\n" + gi.ROOT_BY_NAME) < ssh.index('echo "stacklab-guest: booted')
    assert '[ -z "$root" ] && [ $n -ge 3 ]' in gi.ROOT_BY_NAME and "root=vda" in gi.ROOT_BY_NAME
    # a guest without a disk tells SSH at once that there is no /mnt store
    assert ssh.index(gi.NO_ROOT) < ssh.index('echo "stacklab-guest: no root disk"')
    # the ext4 starts at 1 MiB (INIT's line alone in sector 0); the magic 0xEF53 at 1080 in it decides mke2fs
    assert "losetup -o 1048576 /dev/loop0 /dev/$root" in gi.STORE and "od -An -tx1 -j 1080 -N 2 /dev/loop0" in gi.STORE
    assert gi.STORE.index('*"53 ef"*) how=kept') < gi.STORE.index("/usr/sbin/mke2fs -q -F -t ext4")
    assert ssh.index(gi.STORE) < ssh.index("while true; do\n  for d in vda vdb vdc vdd")
    # every path ends by telling SSH to go on
    assert gi.STORE.rstrip().splitlines()[-1] == 'echo "$root" > /run/stacklab-mnt'


def test_sshd_waits_for_mnt() -> None:
    """tempest logs in as soon as sshd answers and writes /mnt/timestamp: dropbear starts after STORE's flag (or
    after 120 s without it)."""
    wait = gi.SSH.index("while [ ! -e /run/stacklab-mnt ] && [ $n -lt 1200 ]")
    assert wait < gi.SSH.index("/usr/sbin/dropbear -F")
