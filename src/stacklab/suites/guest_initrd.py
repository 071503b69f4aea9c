"""Runs on a lab node with plain python3: builds the initramfs of the suites' test guest from the node's own files.

Usage: guest_initrd.py OUT.img  -> prints {"kernel": ..., "initrd": OUT.img, "version": ...} as one JSON line.

The guest is the node's Debian kernel (/boot/vmlinuz-*, booted by nova as a kernel/ramdisk pair, so no bootloader and
no root filesystem are needed) with this initramfs: klibc's small tools (they ship with initramfs-tools in every
stacklab image), the virtio modules of that kernel, and an /init that proves what the suites need to see:

- its root disk (the virtio disk without a serial, normally /dev/vda; cinder volumes carry their id as serial):
  the first word of the first line is its mark, `stacklab-disk:<boot id of the first
  boot>`, made on the first boot; every boot then rewrites the line as `<mark> boot:<this boot's id>` and syncs.
  So the disk itself says whether it survived (same mark) and that a new boot used it (new boot id), which is
  what an evacuation must show; the console says `disk written <mark>` or `disk kept <mark>` too;
- every further disk (/dev/vdb...) attached later: its first line is read, then a line
  `stacklab-volume:<disk>:<boot id>` written at its start, followed by ` read:<the line found>` when the disk
  already carried such a line (a volume another guest wrote), then `stacklab-guest: wrote <disk>` on the console.
  So a volume moved to a second guest shows, on the backend, that this guest read the first one's bytes.

- with `stacklab.beat=SECONDS` on the kernel command line, a heartbeat line `stacklab-beat <boot id> <n>` on the
  console every SECONDS (n counts from 1): a guest that keeps running keeps its boot id and counts on.

The console (ttyS0) is what nova's console log shows; nothing here needs a network.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import stat
import sys

WANTED = ("virtio_pci", "virtio_blk")  # with what they depend on, from the kernel's modules.dep
TOOLS = ("sh", "cat", "dd", "mount", "insmod", "sleep", "sync", "mkdir", "ls")

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
echo "$mark boot:$boot" > /dev/$root
sync
mkdir /tmp/done /tmp/done/$root
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
    if [ -b /dev/$d ] && [ ! -e /tmp/done/$d ]; then
      dd if=/dev/$d of=/tmp/vhead bs=512 count=1 2>/dev/null
      found=""
      read found rest < /tmp/vhead
      case "$found" in
        stacklab-volume:*) seen=" read:$found" ;;
        *) seen="" ;;
      esac
      echo "stacklab-volume:$d:$boot$seen" > /dev/$d
      sync
      mkdir /tmp/done/$d
      echo "stacklab-guest: wrote $d$seen"
    fi
  done
  sleep 2
done
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

    def close(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def module_order(version: str) -> list[tuple[str, str]]:
    """(name, path) of WANTED and their dependencies, each after what it needs (empty when built in)."""
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

    for name in WANTED:
        visit(name)
    return order


def main() -> None:
    out = sys.argv[1]
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise SystemExit("this node has no /boot/vmlinuz-*: the guest needs the image's kernel")
    kernel = kernels[-1]
    version = kernel.removeprefix("/boot/vmlinuz-")
    archive = Cpio()
    for d in ("bin", "lib", "lib/modules", "dev", "proc", "sys", "tmp"):
        archive.add(d, stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    for lib in glob.glob("/lib/klibc-*.so") or glob.glob("/usr/lib/klibc-*.so"):
        with open(lib, "rb") as f:
            archive.add(f"lib/{os.path.basename(lib)}", stat.S_IFREG | 0o755, f.read())
    for tool in TOOLS:
        with open(f"/usr/lib/klibc/bin/{tool}", "rb") as f:
            archive.add(f"bin/{tool}", stat.S_IFREG | 0o755, f.read())
    order = module_order(version)
    for name, path in order:
        if not path.endswith(".ko"):
            raise SystemExit(f"{path}: compressed modules are not handled (klibc's insmod loads plain .ko)")
        with open(path, "rb") as f:
            archive.add(f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, f.read())
    archive.add("lib/modules/order", stat.S_IFREG | 0o644, " ".join(n for n, _ in order).encode())
    archive.add("init", stat.S_IFREG | 0o755, INIT.encode())
    with open(out, "wb") as f:
        f.write(gzip.compress(archive.close()))
    sys.stdout.write(json.dumps({"kernel": kernel, "initrd": out, "version": version}) + "\n")


if __name__ == "__main__":
    main()
