"""Prove that KVM runs a guest, not only that /dev/kvm exists.

On some hosts /dev/kvm opens and KVM_CREATE_VM works, yet guests abort or hang (the CI host type: `-cpu host`
fails on an MSR write, other CPU models hang in early boot). So the probe boots a real guest: a 512-byte boot
sector that writes 1 to an `isa-debug-exit` port. QEMU then exits with status (1 << 1) | 1 = 3, which only
happens if the guest's first instructions really ran. Anything else (another status, an error line, a hang
until the timeout) means guests cannot be trusted to run under that accelerator.

The boot sector is written to a temporary file on this machine, so the runner must share this filesystem
(a LocalRunner, or a runner inside a node that sees the same path).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stacklab.errors import StackLabError
from stacklab.exec.runner import CommandTimeout, Runner

LOG = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
DEFAULT_TIMEOUT = 10.0
DEBUG_EXIT_PORT = 0xF4
# isa-debug-exit turns a guest write of v into QEMU's exit status (v << 1) | 1; the guest writes 1.
EXPECTED_EXIT = (1 << 1) | 1

Accel = Literal["kvm", "tcg"]

# Real-mode code at 0x7c00:  mov al,1 / out 0xf4,al / cli / hlt / jmp back to hlt
_CODE = bytes([0xB0, 0x01, 0xE6, DEBUG_EXIT_PORT, 0xFA, 0xF4, 0xEB, 0xFD])
BOOT_SECTOR = _CODE + bytes(510 - len(_CODE)) + b"\x55\xaa"

# stderr lines worth quoting first, most telling first
_TELLING = (re.compile(r"MSR", re.IGNORECASE), re.compile(r"error|failed|could not|cannot", re.IGNORECASE))


@dataclass(frozen=True)
class KvmStatus:
    """Whether /dev/kvm exists and whether a guest was seen to run under KVM (None: not tested)."""

    device_present: bool
    usable_for_guests: bool | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "device_present": self.device_present,
            "usable_for_guests": self.usable_for_guests,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BootProbe:
    """The outcome of booting the probe sector once under one accelerator."""

    accel: Accel
    ran: bool
    reason: str
    returncode: int | None  # None when it timed out or could not start


def qemu_argv(qemu: str, boot_image: Path, accel: Accel) -> list[str]:
    """The QEMU command line of the probe: no display, no defaults, the debug-exit device, one IDE disk."""
    cpu = "host" if accel == "kvm" else "max"
    return [
        qemu,
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-machine",
        "pc",
        "-m",
        "16",
        "-display",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-device",
        f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04",
        "-drive",
        f"format=raw,file={boot_image},if=ide",
    ]


def _telling_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for pattern in _TELLING:
        for line in lines:
            if pattern.search(line):
                return line
    return lines[0] if lines else ""


def boot_probe(
    runner: Runner,
    *,
    accel: Accel,
    qemu: str = QEMU,
    timeout: float = DEFAULT_TIMEOUT,
    workdir: Path | None = None,
    sector: bytes = BOOT_SECTOR,
) -> BootProbe:
    """Boot the probe sector under `accel` and report whether the guest ran its `out` instruction.

    `sector` replaces the boot sector (tests use one that never writes the port, to see the probe fail).
    """
    with tempfile.TemporaryDirectory(prefix="stacklab-kvm-probe-", dir=workdir) as tmp:
        image = Path(tmp) / "boot.img"
        image.write_bytes(sector)
        argv = qemu_argv(qemu, image, accel)
        try:
            result = runner.run(argv, timeout=timeout, check=False)
        except CommandTimeout:
            LOG.debug("%s probe timed out after %ss", accel, timeout)
            return BootProbe(
                accel,
                ran=False,
                reason=f"a test guest under {accel} did not finish within {timeout:g}s (hangs)",
                returncode=None,
            )
        except StackLabError as exc:  # e.g. the binary vanished between detection and the run
            return BootProbe(accel, ran=False, reason=f"could not start {qemu}: {exc.message}", returncode=None)
    line = _telling_line(result.stderr)
    if result.returncode == EXPECTED_EXIT:
        LOG.debug("%s probe guest ran (%.2fs)", accel, result.duration)
        return BootProbe(
            accel,
            ran=True,
            reason=f"a test guest ran under {accel} (exit {EXPECTED_EXIT} from isa-debug-exit)",
            returncode=result.returncode,
        )
    if result.returncode < 0:
        how = f"was killed by signal {-result.returncode}"
    else:
        how = f"exited {result.returncode} (expected {EXPECTED_EXIT})"
    detail = f": {line}" if line else ""
    LOG.debug("%s probe failed: rc=%s stderr=%r", accel, result.returncode, result.stderr)
    return BootProbe(
        accel,
        ran=False,
        reason=f"a test guest under {accel} did not run; QEMU {how}{detail}",
        returncode=result.returncode,
    )


def probe_kvm(
    runner: Runner,
    *,
    device_present: bool,
    qemu: str | None,
    timeout: float = DEFAULT_TIMEOUT,
    workdir: Path | None = None,
) -> KvmStatus:
    """KVM status from /dev/kvm's presence and, when QEMU is installed, a real guest boot under `-accel kvm`."""
    if not device_present:
        return KvmStatus(False, False, "/dev/kvm is absent")
    if qemu is None:
        return KvmStatus(True, None, f"{QEMU} not installed; cannot prove KVM works")
    probe = boot_probe(runner, accel="kvm", qemu=qemu, timeout=timeout, workdir=workdir)
    LOG.info("KVM probe: %s", probe.reason)
    return KvmStatus(True, probe.ran, probe.reason)


DEFAULT_QEMU_USER = "libvirt-qemu"
# What Debian's libvirt-daemon-system gives its QEMU user before the package is even installed.
DEFAULT_QEMU_GROUPS = ("kvm",)
_QEMU_CONF_USER = re.compile(r'^\s*user\s*=\s*"([^"]+)"', re.MULTILINE)


def _table(text: str | None) -> list[list[str]]:
    return [line.split(":") for line in (text or "").splitlines() if line and not line.startswith("#")]


def qemu_user_problem(root: Path = Path("/")) -> str | None:
    """Why the user libvirt runs QEMU as cannot open /dev/kvm read-write (None: it can).

    The boot probe runs as root; libvirt's QEMU does not (Debian: `libvirt-qemu`, group `kvm`). A host whose
    /dev/kvm belongs to another group (no udev rule set it) passes the probe yet fails every domain start with
    "Could not access KVM kernel module: Permission denied". Read from files under `root` only.
    """

    def read(path: str) -> str | None:
        try:
            return (root / path.lstrip("/")).read_text(errors="replace")
        except OSError:
            return None

    try:
        st = (root / "dev/kvm").stat()
    except OSError:
        return "/dev/kvm is absent"
    match = _QEMU_CONF_USER.search(read("/etc/libvirt/qemu.conf") or "")
    user = match.group(1) if match else DEFAULT_QEMU_USER
    passwd = {row[0]: row for row in _table(read("/etc/passwd")) if len(row) >= 4}
    groups = _table(read("/etc/group"))
    gid_names = {int(row[2]): row[0] for row in groups if len(row) >= 3 and row[2].isdigit()}
    if user in ("root", "+0") or (user in passwd and passwd[user][2] == "0"):
        return None
    if user in passwd:
        uid = int(passwd[user][2])
        member_of = {int(passwd[user][3])} | {
            int(row[2]) for row in groups if len(row) >= 4 and row[2].isdigit() and user in row[3].split(",")
        }
    else:  # libvirt not installed yet: its package will add the user to `kvm`
        uid = -1
        member_of = {gid for gid, name in gid_names.items() if name in DEFAULT_QEMU_GROUPS}
    rw = 0o6
    if (st.st_uid == uid and (st.st_mode >> 6) & rw == rw) or (st.st_gid in member_of and (st.st_mode >> 3) & rw == rw):
        return None
    if st.st_mode & rw == rw:
        return None
    group = gid_names.get(st.st_gid, str(st.st_gid))
    return (
        f"/dev/kvm (mode {st.st_mode & 0o777:04o}, group {group}) cannot be opened by {user}, the user libvirt "
        f"runs QEMU as; to use KVM give {user} access (e.g. `usermod -aG {group} {user}`)"
    )


def kvm_for_libvirt(status: KvmStatus, root: Path = Path("/")) -> KvmStatus:
    """`status` downgraded to unusable when the guest ran as root but libvirt's QEMU user cannot open /dev/kvm."""
    if not status.usable_for_guests:
        return status
    problem = qemu_user_problem(root)
    if problem is None:
        return status
    return KvmStatus(status.device_present, False, f"{status.reason}, but {problem}")
