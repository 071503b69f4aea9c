"""What the `volumes` suite reads on cinder's kernel backends themselves (lvm with LIO or tgt, nfs), from the
storage node and the client, through stacklab's SSH runner. Pure parsers are unit-tested on recorded outputs.

- LIO: rtslib-fb's view of configfs on the storage node (`LIO_LISTING`, one python3 run): per target its portals,
  LUNs with the backstore's device, node ACLs with their CHAP user id and the sha256 of their CHAP password (the
  password itself never crosses SSH).
- tgt: `tgtadm --lld iscsi --mode target --op show` (targets, their LUNs' backing store paths, accounts and ACLs)
  and `--mode portal --op show`.
- NFS: `findmnt` of the volume file on the cinder-volume node (the mount that carries it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from stacklab.exec.runner import Runner
from stacklab.suites.storage_paths import IO_TIMEOUT, kernel_login

LIO_LISTING = """
import hashlib, json
from rtslib_fb import RTSRoot
out = []
for t in RTSRoot().targets:
    if t.fabric_module.name != "iscsi":
        continue
    for tpg in t.tpgs:
        out.append({
            "iqn": t.wwn, "tpg": tpg.tag, "enabled": bool(tpg.enable),
            "authentication": tpg.get_attribute("authentication"),
            "portals": ["%s:%s" % (p.ip_address, p.port) for p in tpg.network_portals],
            "luns": [{"lun": l.lun, "device": l.storage_object.udev_path} for l in tpg.luns],
            "acls": [{"initiator": a.node_wwn, "chap_userid": a.chap_userid,
                      "chap_password_sha256": hashlib.sha256(a.chap_password.encode()).hexdigest()}
                     for a in tpg.node_acls],
        })
print(json.dumps(out))
"""


@dataclass
class TgtTarget:
    iqn: str
    backing: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    acls: list[str] = field(default_factory=list)


def lio_targets(runner: Runner) -> list[dict[str, Any]]:
    """LIO's iSCSI targets on the node as rtslib-fb sees them (configfs)."""
    out = runner.run(["python3", "-c", LIO_LISTING], timeout=IO_TIMEOUT).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def parse_tgt_targets(text: str) -> dict[str, TgtTarget]:
    """Pure: `tgtadm --lld iscsi --mode target --op show` -> iqn -> its backing stores, accounts and ACLs."""
    targets: dict[str, TgtTarget] = {}
    current: TgtTarget | None = None
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        head = re.match(r"^Target \d+: (\S+)$", raw)
        if head:
            current = targets.setdefault(head.group(1), TgtTarget(head.group(1)))
            section = ""
            continue
        if current is None or not line:
            continue
        if line.endswith("information:"):
            section = line
        elif line.startswith("Backing store path:"):
            path = line.partition(":")[2].strip()
            if path and path != "None":
                current.backing.append(path)
        elif section == "Account information:":
            current.accounts.append(line)
        elif section == "ACL information:":
            current.acls.append(line)
    return targets


def tgt_targets(runner: Runner) -> dict[str, TgtTarget]:
    argv = ["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"]
    return parse_tgt_targets(runner.run(argv, timeout=60.0).stdout)


def tgt_portals(runner: Runner) -> list[str]:
    out = runner.run(["tgtadm", "--lld", "iscsi", "--mode", "portal", "--op", "show"], timeout=60.0).stdout
    return re.findall(r"^Portal: (\S+),\d+$", out, flags=re.M)


def parse_findmnt(text: str) -> dict[str, str]:
    """Pure: `findmnt -n -P -o SOURCE,TARGET,FSTYPE,OPTIONS` (one line) -> its fields."""
    return dict(re.findall(r'(\w+)="([^"]*)"', text.strip().splitlines()[0] if text.strip() else ""))


def mount_option(options: str, key: str) -> str | None:
    for item in options.split(","):
        name, _, value = item.partition("=")
        if name == key:
            return value
    return None


def chap_login(
    runner: Runner, *, iface: str, initiator: str, iqn: str, portal: str, lun: int, chap: tuple[str, str]
) -> tuple[str, str]:
    """The kernel initiator logs in with cinder's connection info as os-brick would: an iface with the connector's
    initiator IQN, SendTargets discovery, CHAP written into the 0600 node record through stdin (never argv), login,
    the LUN's disk. Returns (device, `iscsiadm -m session -P 3`)."""
    runner.run(["modprobe", "iscsi_tcp"], timeout=60.0)
    runner.run(["systemctl", "start", "iscsid"], timeout=60.0, check=False)
    session = kernel_login(runner, iface=iface, initiator=initiator, iqn=iqn, portal=portal, chap=chap, lun=lun,
                           iface_may_exist=True)  # fmt: skip
    return session.device, session.details


@dataclass(frozen=True)
class SessionState:
    """One target's session as `iscsiadm -m session -P 1` reports it (SID kept across a recovery)."""

    sid: str
    session: str  # iSCSI Session State: LOGGED_IN, FAILED, FREE
    connection: str  # iSCSI Connection State: LOGGED IN, TRANSPORT WAIT, IN LOGIN...


def parse_session_state(block: str) -> SessionState | None:
    """Pure: a target's part of `iscsiadm -m session -P 1` (storage_paths.session_block) -> its state."""
    fields = dict(re.findall(r"^\s*(SID|iSCSI Session State|iSCSI Connection State): (.*?)\s*$", block, flags=re.M))
    if "SID" not in fields:
        return None
    return SessionState(fields["SID"], fields.get("iSCSI Session State", ""), fields.get("iSCSI Connection State", ""))


def set_recovery_timeout(runner: Runner, sid: str, seconds: int) -> None:
    """How long the kernel queues a failed session's I/O before failing it (open-iscsi's replacement_timeout, 120 s
    by default; nova leaves it so): set on the live session through sysfs."""
    path = f"/sys/class/iscsi_session/session{sid}/recovery_tmo"
    runner.run(["sh", "-c", 'echo "$1" > "$2"', "sh", str(seconds), path], timeout=30.0)
