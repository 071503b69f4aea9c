"""Runs on a compute node with plain python3: follows an instance's console log and stamps every line as it lands.

Usage: beat_watch.py LOG OUT [PORT_MIN PORT_MAX]   (until stopped: the suite runs it as a transient systemd unit
and stops the unit)

The suites' guest, booted with `stacklab.beat=SECONDS` on its command line, writes `stacklab-beat <boot id> <n>`
to its serial console every SECONDS; libvirt writes the console to LOG on the compute where the guest runs. Each
complete line read from LOG is appended to OUT as `<wall clock seconds> <line>`, so the suite can tell when the
guest last spoke on the source compute and first spoke on the destination. The lab's computes are containers on
one kernel: their wall clocks are the same clock, and stamps from two computes compare directly.

LOG may not exist yet (the destination's log appears when libvirt starts the incoming QEMU), may be removed (nova
cleans the source's instance directory once the guest has left): the open file is read to its end either way, and
a new file at LOG (another inode, or a shorter one) is followed from its start.

With a port range, each TCP socket of the node (its network namespace: /proc/net/tcp) that listens on or is
connected to a port of that range is written once, when first seen, as `<stamp> socket LISTEN <ip:port>` or
`<stamp> socket ESTAB <local ip:port> <peer ip:port>`: QEMU's incoming migration listens on one of libvirt's
migration ports for the seconds the memory copy takes, so the suite sees which address it bound and who connected.
"""

from __future__ import annotations

import os
import sys
import time

POLL = 0.05  # seconds between reads: the resolution of the stamps, well below the guest's beat period


STATES = {"0A": "LISTEN", "01": "ESTAB"}


def address(field: str) -> str:
    """`0B0AA8C0:C000` (/proc/net/tcp: the IPv4 address as a little-endian word, the port big-endian) -> ip:port."""
    ip, port = field.split(":")
    return f"{'.'.join(str(b) for b in reversed(bytes.fromhex(ip)))}:{int(port, 16)}"


def sockets(ports: range) -> set[str]:
    """The node's listening and established IPv4 TCP sockets with a local or peer port in `ports`."""
    found = set()
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            local, peer, state = address(fields[1]), address(fields[2]), STATES.get(fields[3])
            if state and (int(local.rsplit(":", 1)[1]) in ports or int(peer.rsplit(":", 1)[1]) in ports):
                found.add(f"{state} {local}" if state == "LISTEN" else f"{state} {local} {peer}")
    return found


def follow(log: str, out: str, ports: range = range(0)) -> None:
    handle = None
    known: set[str] = set()
    inode = -1
    pending = b""
    with open(out, "a", buffering=1) as sink:
        while True:
            try:
                stat = os.stat(log)
            except FileNotFoundError:
                stat = None
            if stat is not None and (handle is None or stat.st_ino != inode or stat.st_size < handle.tell()):
                if handle is not None:
                    handle.close()
                handle, inode, pending = open(log, "rb"), stat.st_ino, b""  # noqa: SIM115 (kept open on purpose)
            if ports:
                for entry in sorted(sockets(ports) - known):
                    sink.write(f"{time.time():.3f} socket {entry}\n")
                    known.add(entry)
            chunk = handle.read() if handle is not None else b""
            if chunk:
                now = time.time()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    sink.write(f"{now:.3f} {line.decode(errors='replace').rstrip()}\n")
            else:
                time.sleep(POLL)


if __name__ == "__main__":
    span = range(int(sys.argv[3]), int(sys.argv[4]) + 1) if len(sys.argv) > 4 else range(0)
    follow(sys.argv[1], sys.argv[2], span)
