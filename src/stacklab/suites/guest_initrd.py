"""Runs on a lab node with plain python3: builds the initramfs of the suites' test guest from the node's own files.

Usage: guest_initrd.py OUT.img [--net] [--ssh] -> prints {"kernel": ..., "initrd": OUT.img, "version": ...} (a line).

The guest is the node's Debian kernel (/boot/vmlinuz-*, booted by nova as a kernel/ramdisk pair, so no bootloader and
no root filesystem are needed) with this initramfs: klibc's small tools (they ship with initramfs-tools in every
stacklab image), busybox-static as /usr/bin/busybox (its `sync -d` is the fdatasync that sends the disk a FLUSH,
which klibc's sync never does), the virtio modules of that kernel, and an /init that proves what the suites need to
see:

- its root disk (the virtio disk without a serial, normally /dev/vda; cinder volumes carry their id as serial):
  the first word of the first line is its mark, `stacklab-disk:<boot id of the first
  boot>`, made on the first boot; every boot then rewrites the line as `<mark> boot:<this boot's id>`, flushes
  it to the disk (`stacklab-guest: disk synced <mark> boot:<boot id>` on the console).
  So the disk itself says whether it survived (same mark) and that a new boot used it (new boot id), which is
  what an evacuation must show; the console says `disk written <mark>` or `disk kept <mark>` too;
- every further disk (/dev/vdb...) attached later: its first line is read, then a line
  `stacklab-volume:<disk>:<boot id>` written at its start, followed by ` read:<the line found>` when the disk
  already carried such a line (a volume another guest wrote), then `stacklab-guest: wrote <disk>` on the console.
  So a volume moved to a second guest shows, on the backend, that this guest read the first one's bytes.
  A disk is marked once per name and serial: a volume detached and another one attached under the same name (vdb
  again, its serial its own volume id) gets its line too.

- with `stacklab.beat=SECONDS` on the kernel command line, a heartbeat line `stacklab-beat <boot id> <n>` on the
  console every SECONDS (n counts from 1): a guest that keeps running keeps its boot id and counts on.

The console (ttyS0) is what nova's console log shows; nothing above needs a network.

With `--net` the guest also has a NIC (NET below): virtio_net, klibc's ipconfig (DHCP) and, from the node's own
Debian packages with the shared libraries `ldd` names, bash (its /dev/tcp is the HTTP client), iputils' ping and
iproute2's ip. The default guest's initramfs stays byte for byte what it was without it.

With `--ssh` (implies `--net`) the guest is also one tempest's validation can log in to (SSH below, in NET before
its ping loop): dropbear (the image's dropbear-bin, with its libraries) listens on eth0's address :22 with an
ed25519 host key made at boot, and lets in `root` with the public keys of the metadata's `public_keys` (nova's
keypair), put in /root/.ssh/authorized_keys (0600). The user is root, not a second uid-0 name: the guest has no
other user, dropbear, `id` and `sudo` then all agree on one name, and tempest's `[validation] image_ssh_user` just
says root. The login shell is bash (tempest wraps every command in `set -eu -o pipefail`, which klibc's sh lacks);
the image's busybox-static provides the other commands tempest runs (hostname, grep, cut, date, sync, umount,
md5sum ...) as applet links in /usr/bin, never over a tool of /bin (klibc's, which INIT uses, and NET's) except
mount and ls: klibc's mount needs -t and klibc's ls has no -R, and a session's PATH (dropbear's root PATH) finds
/usr/bin's first while INIT and NET (PATH=/bin) keep klibc's. /usr/bin/sudo runs its command as root, which the
caller already is. The hostname is set from the metadata's `hostname` (its first label). The console says
`stacklab-net: sshd on <address>:22 key <host key fingerprint>` once dropbear listens.

The `--ssh` guest also runs what tempest's volume tests run on a guest (tempest/common/utils/linux/remote_client.py
and scenario/manager.py's create_timestamp/get_timestamp): `lsblk -lb --nodeps` to see an attached volume appear
(util-linux's lsblk), `sudo mke2fs -t ext4 /dev/vdX` (e2fsprogs' mke2fs, also as mkfs.ext2/3/4, with the image's
/etc/mke2fs.conf: busybox's mke2fs makes only ext2), `sudo mount /dev/vdX /mnt` (busybox's mount finds the type in
/proc/filesystems; /mnt exists), `sudo sh -c "date > /mnt/timestamp; sync"`, `sudo cat`, `sudo umount /mnt`, and
`grep -c -E [vs]d.$ /proc/partitions`. ext4 (with jbd2, mbcache, crc16 and crc32c) is built in to Debian's cloud
kernel; a kernel that has them as modules gets them in the order file INIT loads. The `--net` guest stays byte for
byte what it was without any of this.

Without a volume, tempest's create_timestamp/get_timestamp write `/mnt/timestamp` on the guest's root file system and
expect it back in a new instance of its disk (volume boot pattern: a second instance on the same volume and a third
on a volume from its snapshot; snapshot pattern: an instance from the server's image snapshot; minimum basic: a
reboot; shelve: unshelve; volume migrate: the volume retyped). So the `--ssh` guest's /mnt is an ext4 on its boot
disk from the second MiB on (STORE, in INIT once the disk's line is flushed: the line keeps the first sector to
itself), through a loop device with that offset (loop is a module in Debian's cloud kernel), made on the first boot
(no ext4 superblock magic there) and mounted on every boot before sshd starts (the journal replays what a power cut
left). A disk under 8 MiB gets none. tempest's volume tests mount a volume over it and unmount it again; lsblk shows
it as TYPE loop, which tempest's disk list skips. The boot disk is the disk without a serial; booted from a volume
every disk has one (nova gives a volume its id), so after 3 s without a serial-less disk the `--ssh` guest takes vda
(nova boots a kernel/ramdisk image's root device as vda, from an image or a volume alike). A guest without any disk
starts sshd at once. The default and `--net` guests keep waiting for a serial-less disk (no suite boots them from a
volume) and have no /mnt store.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import stat
import subprocess
import sys

WANTED = ("virtio_pci", "virtio_blk")  # with what they depend on, from the kernel's modules.dep
TOOLS = ("sh", "cat", "dd", "mount", "insmod", "sleep", "mkdir", "ls")
NET_MODULES = ("virtio_net",)
NET_TOOLS = ("ipconfig",)
NET_BINARIES = {"bash": "/usr/bin/bash", "ping": "/usr/bin/ping", "ip": "/usr/sbin/ip"}  # name in /bin -> node path
# the line of INIT after which a --net guest starts NET in the background (its modules are loaded by then)
NET_HOOK = "for m in $(cat /lib/modules/order); do [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko; done\n"
# --ssh: node path -> path in the guest (dynamic, their libraries go with NET's); busybox-static is static.
# Beside sshd, what tempest's volume tests run on the guest (tempest/common/utils/linux/remote_client.py):
# `lsblk -lb --nodeps` to find the attached disk, `sudo mke2fs -t ext4 /dev/vdX` (busybox's mke2fs makes only ext2
# and has no -t), then `sudo mount /dev/vdX /mnt` and `sudo umount /mnt`.
SSH_BINARIES = {
    "/usr/sbin/dropbear": "usr/sbin/dropbear",
    "/usr/bin/dropbearkey": "usr/bin/dropbearkey",
    "/usr/sbin/mke2fs": "usr/sbin/mke2fs",
    "/usr/bin/lsblk": "usr/bin/lsblk",
}
MKE2FS_LINKS = ("mkfs.ext2", "mkfs.ext3", "mkfs.ext4")  # e2fsprogs' names: mke2fs takes the type from its name
MKE2FS_CONF = "/etc/mke2fs.conf"  # the image's defaults per type (ext4's features), as mke2fs on the node uses
# ext4 and crc32c (metadata_csum's checksum, a softdep the guest has no modprobe to follow): built in to Debian's
# cloud kernel, where module_order adds nothing; another kernel's modules (and what they need) go in the order file.
# loop (a module in Debian's cloud kernel) carries /mnt's ext4 on the boot disk past its first MiB (STORE).
SSH_MODULES = ("crc32c_generic", "ext4", "loop")
# busybox applets linked in /usr/bin although /bin has klibc's tool of that name: klibc's mount needs -t, which
# tempest's `mount /dev/vdX /mnt` does not give (busybox's tries /proc/filesystems' types), and klibc's ls has no
# -R (tempest lists `ls -lR /dev` when mke2fs fails). A session's PATH (dropbear's root PATH) has /usr/bin before
# /bin; INIT and NET (PATH=/bin) keep klibc's.
SHADOWING_APPLETS = ("mount", "ls")
BUSYBOX = "/bin/busybox"
SSH_PACKAGES = "dropbear-bin, busybox-static, e2fsprogs and util-linux"
# the line of NET before which a --ssh guest runs SSH (the metadata is in /tmp/meta by then)
SSH_HOOK = "i=0\nwhile true; do\n"

# A --net guest's network, in bash beside INIT: the address by DHCP on eth0, its metadata from 169.254.169.254
# (the instance's uuid, and the `stacklab-marker=` and `stacklab-peer=` lines of its user-data), then one ping to
# every peer every 2 s, each reported with a counter, so a suite sees exactly when a peer became (un)reachable.
NET = r"""#!/bin/bash
say() { echo "stacklab-net: $*"; }
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 60 ]; do sleep 1; n=$((n + 1)); done
[ -e /sys/class/net/eth0 ] || { say "no eth0"; exit 0; }
mac=$(cat /sys/class/net/eth0/address)
until ipconfig -t 30 -c dhcp -d eth0 > /tmp/ipconfig.log 2>&1 && [ -e /run/net-eth0.conf ]; do
  say "no DHCP answer on eth0 ($mac) yet"; sleep 1
done
. /run/net-eth0.conf
say "dhcp eth0 mac $mac address $IPV4ADDR netmask $IPV4NETMASK"
# klibc's ipconfig ignores the classless routes (option 121) by which dnsmasq names its own port for
# 169.254.169.254: the DHCP namespace holds that address on the network, so it is on-link
ip route add 169.254.169.254/32 dev eth0
get() {  # GET $1 from the metadata service: the body on stdout, status 0 on HTTP 200
  exec 3<>/dev/tcp/169.254.169.254/80 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' "$1" >&3
  local status line cr=$'\r'
  IFS= read -r status <&3
  while IFS= read -r line <&3; do [ -z "${line%"$cr"}" ] && break; done
  while IFS= read -r line <&3 || [ -n "$line" ]; do printf '%s\n' "$line"; done
  exec 3<&-
  case "$status" in *" 200 "*) return 0 ;; esac
  return 1
}
tries=0
until get /openstack/latest/meta_data.json > /tmp/meta 2>/dev/null; do
  tries=$((tries + 1))
  [ $((tries % 10)) = 1 ] && say "metadata not served yet (try $tries)"
  sleep 3
done
meta=$(< /tmp/meta)
uuid_re='"uuid": *"([0-9a-f-]+)"'
[[ $meta =~ $uuid_re ]] && say "metadata uuid ${BASH_REMATCH[1]}"
peers=""
if get /openstack/latest/user_data > /tmp/user 2>/dev/null; then
  while IFS= read -r line; do
    case "$line" in
      stacklab-marker=*) say "metadata marker ${line#stacklab-marker=}" ;;
      stacklab-peer=*) peers="$peers ${line#stacklab-peer=}" ;;
    esac
  done < /tmp/user
else
  say "metadata has no user-data"
fi
i=0
while true; do
  i=$((i + 1))
  for peer in $peers; do
    if ping -c 1 -W 2 "$peer" > /dev/null 2>&1; then say "ping $peer ok $i"; else say "ping $peer fail $i"; fi
  done
  sleep 2
done
"""

# A --ssh guest's sshd, in NET once the metadata is read: the hostname and the public keys from it, a host key
# made now, dropbear on eth0's address with its log on the console. PATH is /bin here: the paths are spelled out.
SSH = r"""host_re='"hostname": *"([^".]+)'
if [[ $meta =~ $host_re ]]; then
  printf '%s\n' "${BASH_REMATCH[1]}" > /proc/sys/kernel/hostname
  say "hostname ${BASH_REMATCH[1]}"
fi
# nova's "public_keys": {"name": "ssh-... comment\n", ...}; each key ends in a newline, escaped in the JSON
keys=""
keys_re='"public_keys": *\{([^}]*)\}'
key_re='^[^"]*"[^"]*": *"([^"]*)"(.*)$'
if [[ $meta =~ $keys_re ]]; then
  rest=${BASH_REMATCH[1]}
  while [[ $rest =~ $key_re ]]; do
    key=${BASH_REMATCH[1]}
    rest=${BASH_REMATCH[2]}
    keys="$keys${key%\\n}"$'\n'
  done
fi
(umask 077; printf '%s' "$keys" > /root/.ssh/authorized_keys)
[ -n "$keys" ] || say "metadata has no public key: nobody can log in"
[ -d /dev/pts ] || mkdir /dev/pts
mount -t devpts devpts /dev/pts
# INIT mounts /mnt (STORE) before anyone logs in: tempest writes its timestamp there at once
n=0
while [ ! -e /run/stacklab-mnt ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done
[ -e /run/stacklab-mnt ] || say "/mnt not ready in 120 s: sshd starts without it"
if /usr/bin/dropbearkey -t ed25519 -f /etc/dropbear/host_key > /tmp/hostkey 2>&1; then
  fingerprint=""
  while read -r word value rest; do [ "$word" = Fingerprint: ] && fingerprint="$value"; done < /tmp/hostkey
  /usr/sbin/dropbear -F -E -s -r /etc/dropbear/host_key -p "$IPV4ADDR:22" -P /run/dropbear.pid 2>&1 |
    while IFS= read -r line; do say "sshd: $line"; done &
  n=0
  while [ ! -s /run/dropbear.pid ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  if [ -s /run/dropbear.pid ]; then
    say "sshd on $IPV4ADDR:22 key $fingerprint"
  else
    say "sshd did not start on $IPV4ADDR:22"
  fi
else
  say "sshd: no host key: $(< /tmp/hostkey)"
fi
"""

# tempest runs `sudo CMD`; the guest has only root, whom the caller already is
SUDO = r"""#!/bin/bash
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -n | -E | -H) shift ;;
    -u) [ "$2" = root ] || [ "$2" = "#0" ] || { echo "sudo: this guest has only root, not $2" >&2; exit 1; }; shift 2 ;;
    -*) echo "sudo: option $1 is not handled by this guest's sudo" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: sudo [-u root] COMMAND [ARG]..." >&2; exit 1; }
exec "$@"
"""

INIT = """#!/bin/sh
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /lib/modules/order); do [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko; done
# The root disk is the virtio disk without a serial: nova gives every cinder volume its id as the serial. Not
# simply vda: a volume attached while this kernel is still booting (a loaded TCG host) can be probed first.
root=""
n=0
while [ -z "$root" ] && [ $n -lt 30 ]; do
  for d in vda vdb vdc vdd; do
    if [ -z "$root" ] && [ -b /dev/$d ] && [ -z "$(cat /sys/block/$d/serial 2>/dev/null)" ]; then root=$d; fi
  done
  [ -n "$root" ] || { sleep 1; n=$((n + 1)); }
done
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "stacklab-guest: booted $boot"
[ -n "$root" ] || { echo "stacklab-guest: no root disk"; while true; do sleep 60; done; }
first=""
# the shell's read takes a byte at a time up to a newline: from a blank 1 GiB disk that is the whole disk
dd if=/dev/$root of=/tmp/head bs=512 count=1 2>/dev/null
read first rest < /tmp/head
case "$first" in
  stacklab-disk:*) mark="$first"; echo "stacklab-guest: disk kept $mark" ;;
  *) mark="stacklab-disk:$boot"; echo "stacklab-guest: disk written $mark" ;;
esac
# sync() writes the page but sends the disk no FLUSH, and QEMU (cache=none or writeback) keeps a qcow2 file's new
# cluster mapping in its memory until one comes: a reader of the file on the backend (nova's disks on NFS) would see
# zeros. fdatasync of the device (busybox's sync -d) issues the FLUSH.
echo "$mark boot:$boot" > /dev/$root
/usr/bin/busybox sync -d /dev/$root
echo "stacklab-guest: disk synced $mark boot:$boot"
# a disk is marked once per name and serial (nova gives each volume its id as serial): a volume detached and
# another attached under the same name gets its line too
mkdir /tmp/done "/tmp/done/$root-$(cat /sys/block/$root/serial 2>/dev/null)"
# stacklab.beat=SECONDS on the command line: a console heartbeat, so a suite sees the guest keep running (live
# migration: same boot id, the counter goes on) and for how long it was silent
for word in $(cat /proc/cmdline); do
  case "$word" in stacklab.beat=*) beat="${word#stacklab.beat=}" ;; esac
done
if [ -n "$beat" ]; then
  ( n=0; while true; do n=$((n + 1)); echo "stacklab-beat $boot $n"; sleep "$beat"; done ) &
fi
while true; do
  for d in vda vdb vdc vdd; do
    [ -b /dev/$d ] && key="$d-$(cat /sys/block/$d/serial 2>/dev/null)" || key=""
    if [ -n "$key" ] && [ ! -e "/tmp/done/$key" ]; then
      dd if=/dev/$d of=/tmp/vhead bs=512 count=1 2>/dev/null
      found=""
      read found rest < /tmp/vhead
      case "$found" in
        stacklab-volume:*) seen=" read:$found" ;;
        *) seen="" ;;
      esac
      echo "stacklab-volume:$d:$boot$seen" > /dev/$d
      /usr/bin/busybox sync -d /dev/$d
      mkdir "/tmp/done/$key"
      echo "stacklab-guest: wrote $d$seen"
    fi
  done
  sleep 2
done
"""

# --ssh: the lines of INIT before which ROOT_BY_NAME and NO_ROOT and after which STORE go
ROOT_HOOK = '  [ -n "$root" ] || { sleep 1; n=$((n + 1)); }\n'
NO_ROOT_HOOK = '[ -n "$root" ] || { echo "stacklab-guest: no root disk"'
STORE_HOOK = 'echo "stacklab-guest: disk synced $mark boot:$boot"\n'
# Booted from a volume, the boot disk carries that volume's id as serial like any other volume: no disk without a
# serial appears. nova boots a kernel/ramdisk image's root device as vda on the virtio bus, from an image or a
# volume alike (its `root=/dev/vda`, which the guest image's os_command_line replaces), so after 3 s without a
# serial-less disk (the disks the guest booted with are probed by INIT's insmod already; the wait covers a slow
# one) vda is the boot disk; without any disk by then the guest has none (nova always gives one; the host test of
# logging in boots none) and sshd need not wait longer. The default and --net guests keep waiting for a serial-less
# disk (no suite boots them from a volume).
ROOT_BY_NAME = r"""  if [ -z "$root" ] && [ $n -ge 3 ]; then
    if [ -b /dev/vda ]; then
      root=vda
      echo "stacklab-guest: boot disk vda has serial $(cat /sys/block/vda/serial 2>/dev/null): booted from a volume"
    else
      n=30
    fi
  fi
"""
# a guest without a boot disk has no /mnt store: sshd starts without waiting for it
NO_ROOT = '[ -n "$root" ] || echo none > /run/stacklab-mnt\n'

# /mnt of the --ssh guest: an ext4 on the boot disk from its second MiB on (INIT's line stays alone in the first
# sector), through a loop device with that offset, made on the first boot (when its superblock magic 0xEF53 is not
# there: an ext4 that is there but fails to mount is left as it is, not made anew), mounted on every boot. So what
# tempest's scenarios write to /mnt/timestamp without a volume survives what they do to the disk: a reboot, a
# snapshot booted as a new instance, a shelve, a volume-backed disk booted again or retyped. sshd waits for
# /run/stacklab-mnt (NET's SSH): tempest logs in at once and writes there. A disk under 8 MiB gets no store.
STORE = r"""size=$(cat /sys/block/$root/size)
if [ "$size" -lt 16384 ]; then
  echo "stacklab-guest: mnt none: $root has $size sectors, /mnt needs 16384"
elif /usr/bin/busybox losetup -o 1048576 /dev/loop0 /dev/$root; then
  magic=$(/usr/bin/busybox od -An -tx1 -j 1080 -N 2 /dev/loop0)
  case "$magic" in
    *"53 ef"*) how=kept ;;
    *)
      how=made
      /usr/sbin/mke2fs -q -F -t ext4 -E nodiscard -L stacklab-mnt /dev/loop0 < /dev/null > /tmp/mke2fs.log 2>&1 ||
        how=""
      ;;
  esac
  if [ -z "$how" ]; then
    echo "stacklab-guest: mnt failed: mke2fs on $root: $(cat /tmp/mke2fs.log)"
  elif mount -t ext4 /dev/loop0 /mnt; then
    echo "stacklab-guest: mnt $how ext4 on $root at 1 MiB"
  else
    echo "stacklab-guest: mnt failed: the ext4 on $root does not mount"
  fi
else
  echo "stacklab-guest: mnt failed: no loop device on $root"
fi
echo "$root" > /run/stacklab-mnt
"""


class Cpio:
    """A newc archive (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def add(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.data += b"070701" + "".join(f"{f:08x}" for f in fields).encode() + name.encode() + b"\0"
        self.data += b"\0" * (-len(self.data) % 4) + body
        self.data += b"\0" * (-len(self.data) % 4)

    def add_file(self, name: str, path: str, perm: int = 0o755) -> None:
        """The node's file at `path` (read as it is: the caller resolves links) as regular file `name`."""
        with open(path, "rb") as f:
            self.add(name, stat.S_IFREG | perm, f.read())

    def close(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def module_order(version: str, wanted: tuple[str, ...] = WANTED) -> list[tuple[str, str]]:
    """(name, path) of `wanted` and their dependencies, each after what it needs (empty when built in)."""
    base = f"/lib/modules/{version}"
    deps: dict[str, tuple[str, list[str]]] = {}
    with open(f"{base}/modules.dep") as f:
        for line in f:
            path, _, needs = line.partition(":")
            name = os.path.basename(path).split(".ko")[0]
            deps[name] = (f"{base}/{path}", [os.path.basename(n).split(".ko")[0] for n in needs.split()])
    order: list[tuple[str, str]] = []

    def visit(name: str) -> None:
        if name in deps and name not in (n for n, _ in order):
            for need in deps[name][1]:
                visit(need)
            order.append((name, deps[name][0]))

    for name in wanted:
        visit(name)
    return order


def shared_libraries(binaries: list[str]) -> list[str]:
    """The shared libraries the binaries load, as ldd names them (the name is the soname the loader looks for; the
    file may be a link to a longer name), the dynamic loader among them."""
    found: list[str] = []
    for binary in binaries:
        listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True, timeout=60).stdout
        for line in listing.splitlines():
            if "not found" in line:  # the guest would fail to start it: say so here, on the node
                raise SystemExit(f"{binary} needs {line.split()[0]}, which this node lacks")
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/") and path not in found:
                found.append(path)
    return found


def add_net(archive: Cpio, ssh: bool = False) -> None:
    """NET, ipconfig, and bash, ping and ip with their libraries (in lib/x86_64-linux-gnu, a directory the
    dynamic loader searches without a cache; the loader itself where the binaries' ELF header names it). With
    `ssh`, SSH's files too (add_ssh) and NET runs SSH."""
    for d in ("run", "lib64", "lib/x86_64-linux-gnu"):
        archive.add(d, stat.S_IFDIR | 0o755)
    for tool in NET_TOOLS:
        archive.add_file(f"bin/{tool}", f"/usr/lib/klibc/bin/{tool}")
    binaries = [os.path.realpath(p) for p in NET_BINARIES.values()]
    for name, path in zip(NET_BINARIES, binaries, strict=True):
        archive.add_file(f"bin/{name}", path)
    extra = ssh_binaries() if ssh else []
    for lib in shared_libraries(binaries + extra):
        name = os.path.basename(lib)
        target = f"lib64/{name}" if name.startswith("ld-linux") else f"lib/x86_64-linux-gnu/{name}"
        archive.add_file(target, os.path.realpath(lib))
    if ssh:
        add_ssh(archive, extra)
    archive.add("net.sh", stat.S_IFREG | 0o755, (NET.replace(SSH_HOOK, SSH + SSH_HOOK) if ssh else NET).encode())


def ssh_binaries() -> list[str]:
    """The node's SSH_BINARIES (real paths); exits naming the packages when the image lacks them."""
    missing = [p for p in (*SSH_BINARIES, BUSYBOX) if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"--ssh needs {SSH_PACKAGES} in the image; this node lacks {', '.join(missing)}")
    return [os.path.realpath(p) for p in SSH_BINARIES]


def add_ssh(archive: Cpio, binaries: list[str]) -> None:
    """dropbear, mke2fs (with its mkfs.ext* names and the image's mke2fs.conf), lsblk, busybox with a link per
    applet in /usr/bin except over those and /bin's tools, sudo, and root's account."""
    for d in ("usr/sbin", "etc", "etc/dropbear", "mnt"):
        archive.add(d, stat.S_IFDIR | 0o755)
    for d in ("root", "root/.ssh"):
        archive.add(d, stat.S_IFDIR | 0o700)
    for path, target in zip(binaries, SSH_BINARIES.values(), strict=True):
        archive.add_file(target, path)
    for link in MKE2FS_LINKS:
        archive.add(f"usr/sbin/{link}", stat.S_IFLNK | 0o777, b"mke2fs")
    if os.path.exists(MKE2FS_CONF):
        archive.add_file(MKE2FS_CONF.lstrip("/"), MKE2FS_CONF, 0o644)
    archive.add("usr/bin/sudo", stat.S_IFREG | 0o755, SUDO.encode())
    # busybox's applets never shadow a real tool: /bin's (klibc's, NET's; but SHADOWING_APPLETS) or those above
    taken = {*TOOLS, *NET_TOOLS, *NET_BINARIES, "busybox", "sudo", *MKE2FS_LINKS} - set(SHADOWING_APPLETS)
    taken.update(os.path.basename(p) for p in SSH_BINARIES.values())
    listing = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True, timeout=60).stdout
    for applet in listing.split():
        if applet not in taken:
            archive.add(f"usr/bin/{applet}", stat.S_IFLNK | 0o777, b"busybox")
    archive.add("etc/passwd", stat.S_IFREG | 0o644, b"root:*:0:0:root:/root:/bin/bash\n")
    archive.add("etc/group", stat.S_IFREG | 0o644, b"root:x:0:\n")
    archive.add("etc/shells", stat.S_IFREG | 0o644, b"/bin/bash\n/bin/sh\n")


def initramfs(version: str, *, net: bool = False, ssh: bool = False) -> bytes:
    """The guest's cpio archive (not yet compressed) for kernel `version`; `ssh` implies `net`."""
    net = net or ssh
    archive = Cpio()
    for d in ("bin", "lib", "lib/modules", "dev", "proc", "sys", "tmp", "usr", "usr/bin"):
        archive.add(d, stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    if not os.path.exists(BUSYBOX):
        raise SystemExit(f"the guest needs busybox-static in the image (its sync -d flushes the disks); no {BUSYBOX}")
    archive.add_file("usr/bin/busybox", os.path.realpath(BUSYBOX))  # static: no libraries
    for lib in glob.glob("/lib/klibc-*.so") or glob.glob("/usr/lib/klibc-*.so"):
        archive.add_file(f"lib/{os.path.basename(lib)}", lib)
    for tool in TOOLS:
        archive.add_file(f"bin/{tool}", f"/usr/lib/klibc/bin/{tool}")
    order = module_order(version, WANTED + (NET_MODULES if net else ()) + (SSH_MODULES if ssh else ()))
    for name, path in order:
        if not path.endswith(".ko"):
            raise SystemExit(f"{path}: compressed modules are not handled (klibc's insmod loads plain .ko)")
        archive.add_file(f"lib/modules/{name}.ko", path, 0o644)
    archive.add("lib/modules/order", stat.S_IFREG | 0o644, " ".join(n for n, _ in order).encode())
    if net:
        add_net(archive, ssh)
    init = INIT.replace(NET_HOOK, NET_HOOK + "/bin/bash /net.sh &\n") if net else INIT
    if ssh:
        init = init.replace(ROOT_HOOK, ROOT_BY_NAME + ROOT_HOOK).replace(NO_ROOT_HOOK, NO_ROOT + NO_ROOT_HOOK)
        init = init.replace(STORE_HOOK, STORE_HOOK + STORE)
    archive.add("init", stat.S_IFREG | 0o755, init.encode())
    return archive.close()


def main() -> None:
    out = sys.argv[1]
    ssh = "--ssh" in sys.argv[2:]
    net = "--net" in sys.argv[2:] or ssh
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise SystemExit("this node has no /boot/vmlinuz-*: the guest needs the image's kernel")
    kernel = kernels[-1]
    version = kernel.removeprefix("/boot/vmlinuz-")
    data = initramfs(version, net=net, ssh=ssh)
    with open(out, "wb") as f:
        f.write(gzip.compress(data))
    sys.stdout.write(json.dumps({"kernel": kernel, "initrd": out, "version": version}) + "\n")


if __name__ == "__main__":
    main()
