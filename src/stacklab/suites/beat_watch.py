"""Runs on a compute node with plain python3: follows an instance's console log and stamps every line as it lands.

Usage: beat_watch.py LOG OUT   (until stopped: the suite runs it as a transient systemd unit and stops the unit)

The suites' guest, booted with `stacklab.beat=SECONDS` on its command line, writes `stacklab-beat <boot id> <n>`
to its serial console every SECONDS; libvirt writes the console to LOG on the compute where the guest runs. Each
complete line read from LOG is appended to OUT as `<wall clock seconds> <line>`, so the suite can tell when the
guest last spoke on the source compute and first spoke on the destination. The lab's computes are containers on
one kernel: their wall clocks are the same clock, and stamps from two computes compare directly.

LOG may not exist yet (the destination's log appears when libvirt starts the incoming QEMU), may be removed (nova
cleans the source's instance directory once the guest has left): the open file is read to its end either way, and
a new file at LOG (another inode, or a shorter one) is followed from its start.
"""

from __future__ import annotations

import os
import sys
import time

POLL = 0.05  # seconds between reads: the resolution of the stamps, well below the guest's beat period


def follow(log: str, out: str) -> None:
    handle = None
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
    follow(sys.argv[1], sys.argv[2])
