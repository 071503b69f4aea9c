"""Types shared by the iSCSI driver and its backends: names, the resolved layout of one `iscsi/<node>` resource,
what a backend observed, and the backend interface (pure: no I/O; the backends import this, never the driver)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stacklab.exec.runner import Runner

IQN_BASE = "iqn.2026-11.dev.stacklab"
ISCSI_PORT = 3260
DATA_LUN = 1
FILE_DIR = "/var/lib/stacklab/iscsi"
CEPH_CONF = "/etc/ceph/ceph.conf"
RBD_TIMEOUT = 60.0
CHAP_SECRET_LENGTH = 16  # 12-16 characters suit every common initiator (some reject longer CHAP secrets)


# --- names shared with the suites and the client configuration ---------------------------------------------


def initiator_iqn(lab: str, node: str) -> str:
    """The initiator IQN a client node uses, e.g. `iqn.2026-11.dev.stacklab:aio:compute1`. Pure."""
    return f"{IQN_BASE}:{lab}:{node}"


def target_iqn(iqn_prefix: str, target: str) -> str:
    return f"{iqn_prefix}:{target}"


def chap_secret_name(target: str) -> str:
    """Name of the target's CHAP secret in the lab's secrets dir (read it with stacklab.secrets)."""
    return f"iscsi-chap-{target}"


def chap_user(lab: str, target: str) -> str:
    return f"{lab}-{target}"


def rbd_image_name(target: str) -> str:
    return f"iscsi-{target}"


def lv_name(target: str) -> str:
    return f"iscsi-{target}"


# --- the layout of one resource (what the spec resolves to) ---------------------------------------------


@dataclass(frozen=True)
class TargetLayout:
    """One target as both backends build it."""

    name: str
    iqn: str
    backing: str  # file | lvm | rbd
    size_mib: int
    path: str  # file path, /dev/VG/LV, or pool/image for rbd
    initiators: tuple[str, ...]  # initiator IQNs in the ACL
    chap_user: str | None  # None when CHAP is off
    chap_secret: str | None  # secret name (never the value)

    @property
    def lun(self) -> int:
        return DATA_LUN


@dataclass(frozen=True)
class IscsiLayout:
    """Pure resolution of an `iscsi/<node>` spec against the lab (no I/O)."""

    lab: str
    node: str
    implementation: str
    portal_ip: str
    iqn_prefix: str
    chap: bool
    allowed_network: str | None  # storage CIDR: the only network the node's port filter lets reach the portal
    initiator_nodes: tuple[str, ...]
    targets: tuple[TargetLayout, ...]
    vg: str | None = None
    rbd_pool: str | None = None

    @property
    def portal(self) -> str:
        return f"{self.portal_ip}:{ISCSI_PORT}"

    def owns(self, iqn: str) -> bool:
        return iqn.startswith(self.iqn_prefix + ":")

    def target(self, name: str) -> TargetLayout:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


# --- what a backend observed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetSeen:
    """One target as a backend found it on the node (backend-neutral)."""

    iqn: str
    luns: Mapping[int, str] = field(default_factory=dict)  # lun -> backing path (file, device, pool/image)
    initiators: tuple[str, ...] = ()  # IQN ACL entries
    addresses: tuple[str, ...] = ()  # address ACL entries (tgt)
    chap_users: tuple[str, ...] = ()
    portals: tuple[str, ...] = ()  # per-target portals (LIO); tgt's are global

    def to_json(self) -> dict[str, Any]:
        return {
            "iqn": self.iqn,
            "luns": {str(k): v for k, v in sorted(self.luns.items())},
            "initiators": list(self.initiators),
            "addresses": list(self.addresses),
            "chap_users": list(self.chap_users),
            "portals": list(self.portals),
        }


@dataclass(frozen=True)
class TargetsSeen:
    """What an iSCSI target on the node serves: targets by IQN, the daemon's portals, and extra problems."""

    targets: Mapping[str, TargetSeen]
    portals: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # e.g. "tgt is not running", "persisted config differs"


def target_problems(plan: IscsiLayout, want: TargetLayout, seen: TargetSeen) -> list[str]:
    """Pure: how one observed target differs from its plan (empty when it matches)."""
    out: list[str] = []
    if seen.luns.get(want.lun) != want.path:
        out.append(f"LUN {want.lun} backed by {seen.luns.get(want.lun)!r}, want {want.path!r}")
    if sorted(seen.initiators) != sorted(want.initiators):
        out.append(f"initiator ACL {sorted(seen.initiators)} != {sorted(want.initiators)}")
    if seen.addresses:
        # tgt admits an initiator matching the address OR the IQN ACL: an address ACL would open the target to
        # every IQN on the network. The network is restricted by the node's port filter instead.
        out.append(f"address ACL {list(seen.addresses)} present (IQN ACLs only)")
    want_users = [want.chap_user] if want.chap_user else []
    if sorted(set(seen.chap_users)) != want_users:
        out.append(f"CHAP users {sorted(set(seen.chap_users))} != {want_users}")
    if plan.implementation == "lio" and list(seen.portals) != [plan.portal]:
        out.append(f"portals {list(seen.portals)} != [{plan.portal!r}]")
    return out


def drift_of(plan: IscsiLayout, seen: TargetsSeen) -> tuple[str, ...]:
    """Pure: everything `apply` would have to fix, as human-readable lines."""
    drift = list(seen.problems)
    for want in plan.targets:
        have = seen.targets.get(want.iqn)
        if have is None:
            drift.append(f"target {want.iqn} missing")
            continue
        drift.extend(f"target {want.name}: {p}" for p in target_problems(plan, want, have))
    wanted = {t.iqn for t in plan.targets}
    drift.extend(f"target {iqn} is not in the lab file" for iqn in sorted(seen.targets) if iqn not in wanted)
    if plan.implementation == "tgt" and list(seen.portals) != [plan.portal]:
        drift.append(f"tgtd portals {list(seen.portals)} != [{plan.portal!r}]")
    return tuple(drift)


# --- the backend interface ----------------------------------------------------------------------------------


class IscsiTargetBackend(Protocol):
    """What tgt and LIO both provide. `secrets` maps CHAP secret names to values (empty when CHAP is off)."""

    implementation: str

    def check_node(self, runner: Runner, plan: IscsiLayout, resource_id: str) -> None:
        """Raise PlanError when the node cannot run this implementation (before anything is touched)."""
        ...

    def prepare(self, runner: Runner, plan: IscsiLayout, secrets: Mapping[str, str]) -> None:
        """Daemon, portal binding and persisted configuration, so a restart of the service restores the targets."""
        ...

    def ensure_target(
        self, runner: Runner, plan: IscsiLayout, target: TargetLayout, secrets: Mapping[str, str]
    ) -> None:
        """Make one target live exactly as planned (create it, or rebuild it when it differs)."""
        ...

    def remove_target(self, runner: Runner, plan: IscsiLayout, iqn: str) -> None:
        """Remove one live target of the lab (and its CHAP account)."""
        ...

    def finish(self, runner: Runner, plan: IscsiLayout) -> None:
        """After all targets: save/verify (e.g. LIO saveconfig, tgt portal check)."""
        ...

    def observe(self, runner: Runner, plan: IscsiLayout, secrets: Mapping[str, str]) -> TargetsSeen | None:
        """Read-only: the lab's targets on the node, or None when this implementation has nothing there.

        `secrets` holds the CHAP secrets that exist already, to compare persisted configuration with."""
        ...

    def delete(self, runner: Runner, plan: IscsiLayout) -> None:
        """Remove every target of the lab, the accounts and the persisted configuration. Idempotent."""
        ...
