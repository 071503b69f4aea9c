"""The suites' `--ssh` guest on this host: built by guest_initrd.py in a copy of a cached openstack-zed rootfs,
booted under QEMU TCG, logged in to with the key its metadata served, as tempest's validation would.

The rootfs copy is an overlay mount (the cached image stays untouched); when the image predates dropbear-bin and
busybox-static in images/openstack-zed.yml, their debs (and dropbear's libraries) are fetched with
`apt-get download` and unpacked into the copy. QEMU's user-mode network stands in for neutron's: DHCP gives the
guest 169.254.0.15 on 169.254.0.0/16, a guestfwd sends 169.254.169.254:80 to this test's HTTP server (through a
relay per connection), and a hostfwd makes the guest's :22 reachable at 127.0.0.1. paramiko then logs in with the
key the metadata named, runs tempest's wrapped commands, and a key the metadata did not name is refused. A second
boot runs tempest's volume scenario: a raw file hot-plugged through QMP (as nova attaches a volume) is found with
lsblk, made ext4, mounted, stamped and read back by tempest's own command strings, and the host proves the file holds
that ext4 and timestamp. The default guest, its volume detached and another one hot-plugged under the same name
(vdb), marks the second one too. tempest's timestamp without a volume (written to the --ssh guest's /mnt, an ext4 on
its boot disk) survives QEMU killed and the disk, converted as a snapshot, booted as a volume-backed instance. The
copy, QEMU, the relay and the server go in finalizers.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from stacklab.exec.runner import LocalRunner
from stacklab.suites import guest_initrd

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(420)]

BUILDER = Path(guest_initrd.__file__)
IMAGE_CACHE = Path("/var/cache/stacklab/images")
QEMU = shutil.which("qemu-system-x86_64")
# the guest's packages and dropbear's libraries (an image built from images/openstack-zed.yml has them all)
DEBS = ("dropbear-bin", "libtomcrypt1", "libtommath1", "busybox-static")
GUEST_ADDRESS = "169.254.0.15"
SSH_TIMEOUT = 240.0  # boot to sshd under TCG on a loaded 2-core host
# what tempest's RemoteClient.exec_command puts before every command
TEMPEST_PREFIX = "set -eu -o pipefail; PATH=$PATH:/sbin:/usr/sbin; "

# Relays one connection QEMU's guestfwd hands it on stdin/stdout to the test's HTTP server (argv[1] is its port).
RELAY = """import os, select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
ends = [0, s]
while ends:
    for end in select.select(ends, [], [])[0]:
        data = os.read(0, 65536) if end == 0 else s.recv(65536)
        if not data:
            ends.remove(end)
            if end == 0:
                s.shutdown(socket.SHUT_WR)
            else:
                sys.exit(0)
        elif end == 0:
            s.sendall(data)
        else:
            os.write(1, data)
"""


def newest_rootfs() -> Path | None:
    """The rootfs of the openstack-zed image built last (by its manifest's built_at) that has a kernel."""
    found = []
    for manifest in IMAGE_CACHE.glob("openstack-zed-*/manifest.json"):
        rootfs = manifest.parent / "rootfs"
        if list(rootfs.glob("boot/vmlinuz-*")):
            found.append((str(json.loads(manifest.read_text()).get("built_at", "")), rootfs))
    return max(found)[1] if found else None


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (overlay mount, chroot)"
    if QEMU is None:
        return "qemu-system-x86_64 not installed (apt-get install --no-install-recommends qemu-system-x86)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem for the rootfs copy"
    if newest_rootfs() is None:
        return f"no cached openstack-zed image with a kernel under {IMAGE_CACHE} (stacklab image build openstack-zed)"
    return None


@pytest.fixture
def rootfs(tmp_path: Path) -> Iterator[Path]:
    """An overlay copy of the newest openstack-zed rootfs, with the --ssh guest's packages in it."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    lower = newest_rootfs()
    assert lower is not None
    runner = LocalRunner()
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    runner.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
                str(merged)], timeout=60)  # fmt: skip
    try:
        if not all((merged / p.lstrip("/")).exists() for p in (*guest_initrd.SSH_BINARIES, guest_initrd.BUSYBOX)):
            debs = tmp_path / "debs"
            debs.mkdir()
            fetched = runner.run(["apt-get", "download", *DEBS], timeout=180, cwd=debs, check=False)
            if not fetched.ok:
                pytest.skip(f"the rootfs lacks {guest_initrd.SSH_PACKAGES} and apt-get download failed: "
                            f"{fetched.stderr.strip()[-300:]}")  # fmt: skip
            for deb in sorted(debs.glob("*.deb")):
                unpack(runner, deb, merged, tmp_path / "unpacked" / deb.stem)
        yield merged
    finally:
        runner.run(["umount", str(merged)], timeout=60, check=False)


def unpack(runner: LocalRunner, deb: Path, root: Path, staging: Path) -> None:
    """`dpkg-deb -x` into `staging`, then each top directory copied to where it lives in `root`: a merged-/usr
    rootfs has /bin -> usr/bin, which `dpkg -x` into the root itself would replace with a directory."""
    staging.mkdir(parents=True)
    runner.run(["dpkg-deb", "-x", str(deb), str(staging)], timeout=60)
    for top in staging.iterdir():
        target = root / top.name
        dest = root / os.readlink(target) if target.is_symlink() else target
        dest.mkdir(parents=True, exist_ok=True)
        runner.run(["cp", "-a", f"{top}/.", f"{dest}/"], timeout=60)


class Metadata(http.server.BaseHTTPRequestHandler):
    """169.254.169.254 as nova's metadata service answers it (the JSON document and no user-data)."""

    meta: bytes = b""
    asked: list[str] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = self.meta if self.path == "/openstack/latest/meta_data.json" else None
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_: object) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_guest(rootfs: Path, out: str, *flags: str) -> dict[str, str]:
    """guest_initrd.py run in the rootfs copy (chroot), as on a lab node: its line (kernel, initrd, version)."""
    shutil.copy(BUILDER, rootfs / "tmp" / "guest_initrd.py")
    result = LocalRunner().run(["chroot", str(rootfs), "python3", "/tmp/guest_initrd.py", out, *flags], timeout=180)
    return dict(json.loads(result.stdout.splitlines()[-1]))


def serve_metadata(tmp_path: Path, key: paramiko.PKey, uuid: str) -> tuple[str, http.server.ThreadingHTTPServer, Path]:
    """nova's metadata for a guest named hd-<random> with `key` as its keypair, served on 127.0.0.1 (the caller
    shuts the server down), and the relay QEMU's guestfwd runs per connection: (name, server, relay)."""
    name = f"hd-{secrets.token_hex(3)}"
    meta = {"uuid": uuid, "name": name, "hostname": f"{name}.novalocal",
            "public_keys": {"stacklab": f"ssh-rsa {key.get_base64()} stacklab@test\n"}}  # fmt: skip
    Metadata.meta, Metadata.asked = json.dumps(meta).encode(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    return name, server, relay


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key, as dropbearkey prints it (without the prefix)."""
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def login(port: int, key: paramiko.PKey) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username="root", pkey=key, timeout=30, banner_timeout=60,
                   auth_timeout=60, allow_agent=False, look_for_keys=False)  # fmt: skip
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, out, err = client.exec_command(TEMPEST_PREFIX + command, timeout=120)
    status = out.channel.recv_exit_status()
    return status, out.read().decode(), err.read().decode()


def test_tempest_logs_in_to_the_ssh_guest_with_the_metadata_key(rootfs: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    built = build_guest(rootfs, "/tmp/ssh.img", "--ssh")
    print(f"--ssh initramfs built in {time.monotonic() - started:.1f}s: {(rootfs / 'tmp/ssh.img').stat().st_size} B")

    key, stranger = paramiko.RSAKey.generate(2048), paramiko.RSAKey.generate(2048)
    name, server, relay = serve_metadata(tmp_path, key, "6f1c2e0a-1111-2222-3333-0123456789ab")
    port, console, marker = free_port(), tmp_path / "console.log", f"stacklab.hd={secrets.token_hex(4)}"
    netdev = (f"user,id=n0,net=169.254.0.0/16,host=169.254.0.2,dhcpstart={GUEST_ADDRESS},"
              f"hostfwd=tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:22,"
              f"guestfwd=tcp:169.254.169.254:80-cmd:{sys.executable} {relay} {server.server_port}")  # fmt: skip
    assert QEMU is not None
    argv = [QEMU, "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none",
            "-serial", f"file:{console}", "-kernel", str(rootfs / built["kernel"].lstrip("/")),
            "-initrd", str(rootfs / "tmp/ssh.img"), "-append", f"console=ttyS0 quiet {marker}",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"]  # fmt: skip
    booted = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = ""
        while not line and time.monotonic() - booted < SSH_TIMEOUT and qemu.poll() is None:
            time.sleep(0.5)
            text = console.read_text(errors="replace") if console.exists() else ""
            line = next((x for x in text.splitlines() if "stacklab-net: sshd on" in x), "")
        text = console.read_text(errors="replace") if console.exists() else ""
        assert line, f"no sshd line in {SSH_TIMEOUT:g}s (qemu {qemu.poll()}); console:\n{text[-3000:]}"
        print(f"boot to sshd under TCG: {time.monotonic() - booted:.1f}s ({line.strip()})")
        assert f"sshd on {GUEST_ADDRESS}:22 key " in line
        assert "/openstack/latest/meta_data.json" in Metadata.asked, Metadata.asked

        with pytest.raises(paramiko.AuthenticationException):
            login(port, stranger).close()
        client = login(port, key)
        try:
            transport = client.get_transport()
            assert transport is not None
            host_key = transport.get_remote_server_key()
            # the key dropbear made at boot and printed on the console is the one that answered
            assert fingerprint(host_key) in line, (fingerprint(host_key), line)
            status, out, err = run(client, "hostname; cat /proc/cmdline; sudo id -u")
            assert status == 0, (status, out, err)
            assert out.splitlines() == [name, f"console=ttyS0 quiet {marker}", "0"], (out, err)
            # a failing command fails the wrapped line, as tempest expects
            status, out, err = run(client, "false | cat")
            assert status != 0, (status, out, err)
            status, out, err = run(client, "stat -c %a /root/.ssh/authorized_keys; cut -d' ' -f1 /proc/uptime")
            assert status == 0 and out.splitlines()[0] == "600", (status, out, err)
            print(f"guest uptime at login: {out.splitlines()[1]}s")
        finally:
            client.close()
    finally:
        qemu.kill()
        qemu.wait(timeout=30)
        server.shutdown()
        server.server_close()
        print("console:\n" + (console.read_text(errors="replace")[-2000:] if console.exists() else ""))


FLUSH_TIMEOUT = 180.0  # boot to the root disk's line flushed, under TCG on a loaded 2-core host
_SYNCED = re.compile(r"stacklab-guest: disk synced (stacklab-disk:\S+) boot:(\S+)")


def first_line_in_file(runner: LocalRunner, image: Path, raw: Path) -> str:
    """The first line of what the qcow2 file holds now, read as another process would on the backend (`-U`: the
    running QEMU holds the image's lock; its in-memory metadata cache is not seen)."""
    runner.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(image), str(raw)], timeout=120)
    with raw.open("rb") as f:
        return f.read(512).split(b"\n")[0].rstrip(b"\0").decode(errors="replace")


def test_the_default_guest_flushes_its_line_into_a_qcow2_file(rootfs: Path, tmp_path: Path) -> None:
    """The suites read the guest's line in the disk's file on the backend (nova's instances on NFS). QEMU keeps a
    qcow2 file's new cluster mappings in memory until the guest sends a FLUSH: the line is in the file only
    because the guest flushed it (with klibc's sync alone it read as zeros here while QEMU ran)."""
    runner = LocalRunner()
    built = build_guest(rootfs, "/tmp/guest.img")
    image, console = tmp_path / "disk.qcow2", tmp_path / "console.log"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], timeout=60)
    assert QEMU is not None
    argv = [QEMU, "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-nic", "none",
            "-serial", f"file:{console}", "-kernel", str(rootfs / built["kernel"].lstrip("/")),
            "-initrd", str(rootfs / "tmp/guest.img"), "-append", "console=ttyS0 quiet",
            "-drive", f"file={image},if=virtio,format=qcow2,cache=writeback"]  # fmt: skip
    booted = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        synced = None
        while synced is None and time.monotonic() - booted < FLUSH_TIMEOUT and qemu.poll() is None:
            time.sleep(0.5)
            synced = _SYNCED.search(console.read_text(errors="replace") if console.exists() else "")
        text = console.read_text(errors="replace") if console.exists() else ""
        assert synced, f"no 'disk synced' line in {FLUSH_TIMEOUT:g}s (qemu {qemu.poll()}); console:\n{text[-3000:]}"
        print(f"boot to the disk line flushed under TCG: {time.monotonic() - booted:.1f}s ({synced.group(0)})")
        # QEMU still runs: only a FLUSH put the cluster mapping into the file
        line = first_line_in_file(runner, image, tmp_path / "disk.raw")
        assert line == f"{synced.group(1)} boot:{synced.group(2)}", (line, synced.group(0))
    finally:
        qemu.kill()
        qemu.wait(timeout=30)


SCENARIO_TIMEOUT = 300.0  # boot to sshd under TCG on a loaded 2-core host
ATTACH_TIMEOUT = 120.0  # the hot-plugged disk in lsblk's list (tempest waits compute.build_timeout for it)
VOLUME_ID = "0b7e5c1d-4f3a-4c2e-9d6b-7a8f9e0d1c2b"  # nova gives a cinder volume its id as the virtio serial


def qmp(path: Path, *commands: dict[str, object]) -> list[object]:
    """Each command's "return" from QEMU's QMP socket at `path` (events skipped); an "error" fails the test."""
    returns: list[object] = []
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.settimeout(60)
        f = s.makefile("rw")
        f.readline()  # the greeting
        for command in ({"execute": "qmp_capabilities"}, *commands):
            f.write(json.dumps(command) + "\n")
            f.flush()
            while True:
                reply = json.loads(f.readline())
                assert "error" not in reply, (command, reply)
                if "return" in reply:
                    break
            returns.append(reply["return"])
    return returns[1:]


def tempest_disks(lsblk: str) -> list[str]:
    """RemoteClient.get_disks + list_disks (tempest/common/utils/linux/remote_client.py), copied: the lines whose
    TYPE column (right-aligned under the header's) says disk, then each one's first word."""
    selected: list[str] = []
    pos = None
    for line in lsblk.splitlines():
        if pos is None and line.find("TYPE") > 0:
            pos = line.find("TYPE")
            selected.append(line)
        elif pos is not None and pos > 0 and line[pos : pos + 4] == "disk":
            selected.append(line)
    assert selected, f"'TYPE' column is required but the output doesn't have it: {lsblk}"
    return [line.split()[0] for line in selected[1:]]


def checked_run(client: paramiko.SSHClient, command: str) -> str:
    """tempest's exec_command: the wrapped command's stdout, and a failure (SSHExecCommandFailed) on a non-zero exit."""
    status, out, err = run(client, command)
    assert status == 0, (command, status, out, err)
    return out


def test_tempest_volume_scenario_makes_ext4_on_an_attached_disk(rootfs: Path, tmp_path: Path) -> None:
    """tempest's stamp pattern on the --ssh guest: a volume (a 64 MiB raw file, with a cinder volume id as serial)
    is hot-plugged as nova attaches one, then tempest's own command strings find it (lsblk's list grows), make ext4
    on it, mount it, write a timestamp, sync, umount, then mount and read it again as get_timestamp does. After QEMU
    exits the host reads the file: an ext4 file system e2fsck finds clean, whose /timestamp is the guest's line."""
    runner = LocalRunner()
    built = build_guest(rootfs, "/tmp/ssh.img", "--ssh")
    root, volume = tmp_path / "root.qcow2", tmp_path / "volume.raw"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "16M"], timeout=60)
    runner.run(["qemu-img", "create", "-q", "-f", "raw", str(volume), "64M"], timeout=60)

    key = paramiko.RSAKey.generate(2048)
    _, server, relay = serve_metadata(tmp_path, key, "6f1c2e0a-4444-5555-6666-0123456789ab")
    port, console, monitor = free_port(), tmp_path / "console.log", tmp_path / "qmp.sock"
    netdev = (f"user,id=n0,net=169.254.0.0/16,host=169.254.0.2,dhcpstart={GUEST_ADDRESS},"
              f"hostfwd=tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:22,"
              f"guestfwd=tcp:169.254.169.254:80-cmd:{sys.executable} {relay} {server.server_port}")  # fmt: skip
    assert QEMU is not None
    argv = [QEMU, "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none",
            "-qmp", f"unix:{monitor},server=on,wait=off",
            "-serial", f"file:{console}", "-kernel", str(rootfs / built["kernel"].lstrip("/")),
            "-initrd", str(rootfs / "tmp/ssh.img"), "-append", "console=ttyS0 quiet",
            "-drive", f"file={root},if=virtio,format=qcow2,cache=writeback",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"]  # fmt: skip
    booted = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text = ""
        while "stacklab-net: sshd on" not in text and time.monotonic() - booted < SCENARIO_TIMEOUT:
            time.sleep(0.5)
            assert qemu.poll() is None, (
                f"qemu exited {qemu.poll()}: {qemu.stdout.read().decode() if qemu.stdout else ''}"
            )
            text = console.read_text(errors="replace") if console.exists() else ""
        assert "stacklab-net: sshd on" in text, f"no sshd line in {SCENARIO_TIMEOUT:g}s; console:\n{text[-3000:]}"
        print(f"boot to sshd under TCG: {time.monotonic() - booted:.1f}s")

        client = login(port, key)
        try:
            started = time.monotonic()
            before = tempest_disks(checked_run(client, "lsblk -lb --nodeps"))
            assert before == ["vda"], before
            # nova's attach: the volume's disk hot-plugged on the PCI bus, its serial the volume id
            qmp(monitor, {"execute": "blockdev-add", "arguments": {
                "node-name": "volume", "driver": "raw", "cache": {"direct": True},
                "file": {"driver": "file", "filename": str(volume)}}},
                {"execute": "device_add", "arguments": {
                    "driver": "virtio-blk-pci", "id": "volume0", "drive": "volume", "serial": VOLUME_ID}})  # fmt: skip
            # StampPattern._attached_volume_name: poll list_disks until it grows, the new name is the volume
            after = before
            while len(after) <= len(before) and time.monotonic() - started < ATTACH_TIMEOUT:
                time.sleep(1)
                listing = checked_run(client, "lsblk -lb --nodeps")
                after = tempest_disks(listing)
            assert after == ["vda", "vdb"], (after, listing)
            print(f"attached disk listed by lsblk after {time.monotonic() - started:.1f}s:\n{listing}")
            # the disks' sizes (the --ssh guest's /mnt is a loop device on vda, TYPE loop, which tempest skips)
            sizes = [line.split()[3] for line in listing.splitlines()[1:] if line.split()[5] == "disk"]
            assert sizes == ["16777216", "67108864"], listing
            dev = next(d for d in after if d not in before)
            # AttachVolumeShelveTestJSON._count_volumes
            assert checked_run(client, "grep -c -E [vs]d.$ /proc/partitions").strip() == "2"
            # create_timestamp(ip, dev): make_fs, mount, the timestamp, cat, umount
            checked_run(client, f"sudo mke2fs -t ext4 /dev/{dev}")
            # what make_fs logs when mke2fs fails
            assert f" {dev}\n" in checked_run(client, "sudo ls -lR /dev")
            checked_run(client, f"sudo mount /dev/{dev} /mnt")
            mounts = checked_run(client, "cat /proc/mounts")
            assert f"/dev/{dev} /mnt ext4 rw" in mounts, mounts
            checked_run(client, 'sudo sh -c "date > /mnt/timestamp; sync"')
            timestamp = checked_run(client, "sudo cat /mnt/timestamp")
            assert timestamp.strip(), timestamp
            checked_run(client, "sudo umount /mnt")
            # get_timestamp(ip, dev): what the second guest runs on the volume
            checked_run(client, f"sudo mount /dev/{dev} /mnt")
            assert checked_run(client, "sudo cat /mnt/timestamp") == timestamp
            checked_run(client, "sudo umount /mnt")
            # the volume is gone from /mnt; the boot disk's ext4 (STORE) is there again beneath it
            mounts = checked_run(client, "cat /proc/mounts")
            assert f"/dev/{dev} " not in mounts and "/dev/loop0 /mnt ext4 rw" in mounts, mounts
            print(f"tempest's volume scenario on the guest: {time.monotonic() - started:.1f}s ({timestamp.strip()})")
            # nova's detach (AttachVolumeTestJSON: as many disks listed after the detach as before the attach)
            qmp(monitor, {"execute": "device_del", "arguments": {"id": "volume0"}})
            detached = time.monotonic()
            while len(after) > len(before) and time.monotonic() - detached < ATTACH_TIMEOUT:
                time.sleep(1)
                after = tempest_disks(checked_run(client, "lsblk -lb --nodeps"))
            assert after == before, after
            print(f"detached disk gone from lsblk's list after {time.monotonic() - detached:.1f}s")
        finally:
            client.close()
        # INIT marked the volume too, within 2 s of the attach (its first line, before or after mke2fs wiped that
        # sector): the checks below hold either way, ext4 leaves its first 1024 bytes unused
        assert f"stacklab-guest: wrote {dev}" in console.read_text(errors="replace")
    finally:
        qemu.kill()
        qemu.wait(timeout=30)
        server.shutdown()
        server.server_close()
        print("console:\n" + (console.read_text(errors="replace")[-2000:] if console.exists() else ""))

    # on the host, from the file QEMU wrote: ext4 (journal, extents, checksums), clean, /timestamp the guest's line
    features = runner.run(["dumpe2fs", "-h", str(volume)], timeout=60).stdout
    feature_line = next(line for line in features.splitlines() if line.startswith("Filesystem features:"))
    assert {"has_journal", "extent", "metadata_csum"} <= set(feature_line.split()[2:]), feature_line
    runner.run(["e2fsck", "-fn", str(volume)], timeout=60)
    assert runner.run(["debugfs", "-R", "cat /timestamp", str(volume)], timeout=60).stdout == timestamp
    with volume.open("rb") as f:
        first = f.read(512).split(b"\n")[0].rstrip(b"\0").decode(errors="replace")
    print(f"the volume's first line after the scenario: {first!r}")


VOLUME_B = "5d2e8f1a-0c4b-4e7d-8a9f-1b2c3d4e5f60"  # a second cinder volume's id
_WROTE = re.compile(r"stacklab-guest: wrote (vd\w+)")


def console_text(console: Path) -> str:
    return console.read_text(errors="replace") if console.exists() else ""


def wait_console(
    qemu: subprocess.Popen[bytes], console: Path, done: Callable[[str], object], timeout: float, what: str
) -> str:
    """The console once `done(text)` holds (polled every 0.5 s); fails naming `what` after `timeout` s or when QEMU
    exits."""
    started = time.monotonic()
    text = console_text(console)
    while not done(text) and time.monotonic() - started < timeout:
        if qemu.poll() is not None:
            said = qemu.stdout.read().decode(errors="replace") if qemu.stdout else ""
            pytest.fail(f"qemu exited {qemu.poll()} waiting for {what}: {said}; console:\n{text[-3000:]}")
        time.sleep(0.5)
        text = console_text(console)
    assert done(text), f"no {what} in {timeout:g}s; console:\n{text[-3000:]}"
    return text


def hot_plug(monitor: Path, node: str, path: Path, device: str, serial: str) -> None:
    """nova's attach: a raw file on the PCI bus as a virtio disk whose serial is the volume id."""
    qmp(monitor, {"execute": "blockdev-add", "arguments": {
        "node-name": node, "driver": "raw", "cache": {"direct": True},
        "file": {"driver": "file", "filename": str(path)}}},
        {"execute": "device_add", "arguments": {
            "driver": "virtio-blk-pci", "id": device, "drive": node, "serial": serial}})  # fmt: skip


def first_line(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(512).split(b"\n")[0].rstrip(b"\0").decode(errors="replace")


def test_the_guest_marks_another_volume_attached_under_the_same_name(rootfs: Path, tmp_path: Path) -> None:
    """nova detaches a volume and attaches another one, which the guest names vdb again: INIT marks a disk per name
    and serial (the volume id), so the second volume gets its line too. An INIT that marked each name once (before
    issue 16) wrote nothing on the second volume: this test then fails waiting for its `wrote vdb`."""
    runner = LocalRunner()
    built = build_guest(rootfs, "/tmp/guest.img")
    image, console, monitor = tmp_path / "root.qcow2", tmp_path / "console.log", tmp_path / "qmp.sock"
    volume_a, volume_b = tmp_path / "a.raw", tmp_path / "b.raw"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], timeout=60)
    for volume in (volume_a, volume_b):
        runner.run(["qemu-img", "create", "-q", "-f", "raw", str(volume), "8M"], timeout=60)
    assert QEMU is not None
    argv = [QEMU, "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-nic", "none",
            "-qmp", f"unix:{monitor},server=on,wait=off",
            "-serial", f"file:{console}", "-kernel", str(rootfs / built["kernel"].lstrip("/")),
            "-initrd", str(rootfs / "tmp/guest.img"), "-append", "console=ttyS0 quiet",
            "-drive", f"file={image},if=virtio,format=qcow2,cache=writeback"]  # fmt: skip
    booted = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text = wait_console(qemu, console, _SYNCED.search, FLUSH_TIMEOUT, "'disk synced' line")
        synced = _SYNCED.search(text)
        assert synced is not None
        boot = synced.group(2)
        print(f"boot to the disk line under TCG: {time.monotonic() - booted:.1f}s")
        started = time.monotonic()
        hot_plug(monitor, "a", volume_a, "volume0", VOLUME_ID)
        text = wait_console(qemu, console, lambda t: _WROTE.findall(t) == ["vdb"], ATTACH_TIMEOUT, "'wrote vdb'")
        print(f"volume A marked as vdb after {time.monotonic() - started:.1f}s")
        # nova's detach: the guest's kernel lets the device go (DEVICE_DELETED), then the block node goes
        qmp(monitor, {"execute": "device_del", "arguments": {"id": "volume0"}})
        detached = time.monotonic()
        while time.monotonic() - detached < ATTACH_TIMEOUT:
            peripherals = qmp(monitor, {"execute": "qom-list", "arguments": {"path": "/machine/peripheral"}})[0]
            assert isinstance(peripherals, list)
            if "volume0" not in [p["name"] for p in peripherals]:
                break
            time.sleep(1)
        else:
            pytest.fail(f"volume0 still plugged {ATTACH_TIMEOUT:g}s after device_del")
        qmp(monitor, {"execute": "blockdev-del", "arguments": {"node-name": "a"}})
        print(f"volume A detached after {time.monotonic() - detached:.1f}s")
        started = time.monotonic()
        hot_plug(monitor, "b", volume_b, "volume1", VOLUME_B)
        text = wait_console(qemu, console, lambda t: len(_WROTE.findall(t)) >= 2, ATTACH_TIMEOUT, "second 'wrote'")
        assert _WROTE.findall(text) == ["vdb", "vdb"], text[-2000:]
        print(f"volume B marked as vdb after {time.monotonic() - started:.1f}s")
        time.sleep(4)  # two more rounds of INIT's loop: nothing is marked twice
        assert _WROTE.findall(console_text(console)) == ["vdb", "vdb"]
    finally:
        qemu.kill()
        qemu.wait(timeout=30)
        print("console:\n" + console_text(console)[-2000:])
    # on the host: each volume's own file holds the line this boot wrote on it (both were blank: no read:)
    assert first_line(volume_a) == first_line(volume_b) == f"stacklab-volume:vdb:{boot}"


def boot_qemu(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_tempests_root_disk_timestamp_survives_a_new_instance_of_the_disk(rootfs: Path, tmp_path: Path) -> None:
    """tempest's create_timestamp/get_timestamp without a volume (volume boot pattern, snapshot pattern, minimum
    basic, shelve): `date > /mnt/timestamp; sync` on the guest, the same timestamp read in a new instance of its
    boot disk. The --ssh guest's /mnt is an ext4 on its boot disk past the first MiB. Boot 1 is an image boot (no
    serial) on a qcow2 file; QEMU is killed right after tempest's commands (a power cut: nova's hard reboot, a
    shelve's destroy); the host then finds INIT's line alone in the first sector and the timestamp in the ext4 (after
    e2fsck replays its journal). The file is converted to a new qcow2 (what a snapshot uploads) and boot 2 takes it
    as a volume-backed instance: the boot disk (vda) has the volume's id as serial, as nova boots it. The guest takes
    vda as its boot disk, keeps its mark, mounts the ext4 and shows the timestamp. Both boots get the command line of
    stacklab's guest image (its os_command_line, which replaces nova's `root=/dev/vda`)."""
    runner = LocalRunner()
    built = build_guest(rootfs, "/tmp/ssh.img", "--ssh")
    image, snapshot = tmp_path / "root.qcow2", tmp_path / "snapshot.qcow2"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], timeout=60)
    key = paramiko.RSAKey.generate(2048)
    _, server, relay = serve_metadata(tmp_path, key, "6f1c2e0a-7777-8888-9999-0123456789ab")
    assert QEMU is not None

    def argv(port: int, console: Path, disk: list[str]) -> list[str]:
        netdev = (f"user,id=n0,net=169.254.0.0/16,host=169.254.0.2,dhcpstart={GUEST_ADDRESS},"
                  f"hostfwd=tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:22,"
                  f"guestfwd=tcp:169.254.169.254:80-cmd:{sys.executable} {relay} {server.server_port}")  # fmt: skip
        assert QEMU is not None
        return [QEMU, "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none",
                "-serial", f"file:{console}", "-kernel", str(rootfs / built["kernel"].lstrip("/")),
                "-initrd", str(rootfs / "tmp/ssh.img"), "-append", "console=ttyS0 quiet",
                *disk, "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"]  # fmt: skip

    def sshd_up(text: str) -> bool:
        return "stacklab-net: sshd on" in text

    try:
        # boot 1: from an image, tempest's create_timestamp(ip) without dev_name
        port, console = free_port(), tmp_path / "console1.log"
        qemu = boot_qemu(argv(port, console, ["-drive", f"file={image},if=virtio,format=qcow2,cache=writeback"]))
        booted = time.monotonic()
        try:
            text = wait_console(qemu, console, sshd_up, SCENARIO_TIMEOUT, "sshd line")
            print(f"boot 1 to sshd under TCG: {time.monotonic() - booted:.1f}s")
            synced = _SYNCED.search(text)
            assert synced is not None, text[-3000:]
            mark, boot1 = synced.group(1), synced.group(2)
            assert "stacklab-guest: disk written " + mark in text
            # made on this first boot, mounted before sshd listens
            assert text.index("stacklab-guest: mnt made ext4 on vda at 1 MiB") < text.index("stacklab-net: sshd on")
            client = login(port, key)
            try:
                mounts = checked_run(client, "cat /proc/mounts")
                assert "/dev/loop0 /mnt ext4 rw" in mounts, mounts
                checked_run(client, 'sudo sh -c "date > /mnt/timestamp; sync"')
                timestamp = checked_run(client, "sudo cat /mnt/timestamp")
                assert timestamp.strip(), timestamp
                # tempest's volume tests still see one disk (lsblk's TYPE disk; /proc/partitions' [vs]d.)
                assert tempest_disks(checked_run(client, "lsblk -lb --nodeps")) == ["vda"]
                assert checked_run(client, "grep -c -E [vs]d.$ /proc/partitions").strip() == "1"
            finally:
                client.close()
        finally:
            qemu.kill()  # the power cut, right after tempest's sync
            qemu.wait(timeout=30)
            print("console 1:\n" + console_text(console)[-2000:])
        print(f"timestamp {timestamp.strip()!r} written by boot {boot1}")

        # on the host, in the file: INIT's line alone in the first sector, the ext4 from 1 MiB holds the timestamp
        raw, part = tmp_path / "root.raw", tmp_path / "mnt.ext4"
        assert first_line_in_file(runner, image, raw) == f"{mark} boot:{boot1}"
        with raw.open("rb") as f:
            head = f.read(1 << 20)
            part.write_bytes(f.read())
        assert head[: head.index(b"\n") + 1] == f"{mark} boot:{boot1}\n".encode()
        fsck = runner.run(["e2fsck", "-fy", str(part)], timeout=120, check=False)  # replays the journal
        assert fsck.returncode in (0, 1), (fsck.returncode, fsck.stdout, fsck.stderr)
        assert runner.run(["debugfs", "-R", "cat /timestamp", str(part)], timeout=60).stdout == timestamp
        label = runner.run(["dumpe2fs", "-h", str(part)], timeout=60).stdout
        assert "Filesystem volume name:   stacklab-mnt" in label, label

        # boot 2: the disk as a new volume-backed instance (its serial the volume id): get_timestamp(ip)
        runner.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(image), str(snapshot)], timeout=120)
        port, console = free_port(), tmp_path / "console2.log"
        disk = ["-drive", f"file={snapshot},if=none,id=root,format=qcow2,cache=writeback",
                "-device", f"virtio-blk-pci,drive=root,serial={VOLUME_ID}"]  # fmt: skip
        qemu = boot_qemu(argv(port, console, disk))
        booted = time.monotonic()
        try:
            text = wait_console(qemu, console, sshd_up, SCENARIO_TIMEOUT, "sshd line")
            print(f"boot 2 (volume-backed) to sshd under TCG: {time.monotonic() - booted:.1f}s")
            assert f"boot disk vda has serial {VOLUME_ID[:20]}: booted from a volume" in text, text[-3000:]
            synced = _SYNCED.search(text)
            assert synced is not None and synced.group(1) == mark, text[-3000:]
            boot2 = synced.group(2)
            assert boot2 != boot1 and "stacklab-guest: disk kept " + mark in text
            assert text.index("stacklab-guest: mnt kept ext4 on vda at 1 MiB") < text.index("stacklab-net: sshd on")
            client = login(port, key)
            try:
                assert checked_run(client, "sudo cat /mnt/timestamp") == timestamp
            finally:
                client.close()
        finally:
            qemu.kill()
            qemu.wait(timeout=30)
            print("console 2:\n" + console_text(console)[-2000:])
        assert first_line_in_file(runner, snapshot, raw) == f"{mark} boot:{boot2}"
    finally:
        server.shutdown()
        server.server_close()
