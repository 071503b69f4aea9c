"""Pure renderers for a lab's Ceph cluster: ceph.conf, keyrings, cephadm service specs and bootstrap argv.

No I/O here: the `ceph/<lab>` resource spec (see plan/expand.py) goes in, text or argv lists come out, and the
golden tests in tests/golden/ceph/ pin every byte. Policy that the drivers share (pg counts, crush weights,
which health checks a lab deliberately accepts, the caps OpenStack clients get) lives here too, so it is
tested in one place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

CONF_PATH = "/etc/ceph/ceph.conf"
ADMIN_KEYRING_PATH = "/etc/ceph/ceph.client.admin.keyring"
BOOTSTRAP_OSD_KEYRING_PATH = "/var/lib/ceph/bootstrap-osd/ceph.keyring"
MON_V2_PORT = 3300
MON_V1_PORT = 6789

# OSD memory: Ceph's default target (4 GiB per OSD) cannot fit three OSDs, a mon and a mgr in a lab node.
# 896 MiB is the target the hand-built lab used (host-notes/storage.md: ~70 MB idle RSS per OSD).
OSD_MEMORY_TARGET = 896 * 1024 * 1024
BLUESTORE_CACHE_SIZE = 128 * 1024 * 1024
# Lab hosts often have less than 30 % of their disk free (Ceph's default warning threshold), which makes a
# healthy lab report MON_DISK_LOW. Warn at 10 %; the mon still stops itself at the default 5 % (crit).
MON_DATA_AVAIL_WARN = 10

_KEY_RE = re.compile(r"^[A-Za-z0-9+/]{38}==$")
_ENTITY_RE = re.compile(r"^(mon\.|(client|mgr|osd)\.[A-Za-z0-9_.-]+)$")

# The caps Ceph's own documentation gives the daemons and the admin.
MON_CAPS: Mapping[str, str] = {"mon": "allow *"}
ADMIN_CAPS: Mapping[str, str] = {"mds": "allow *", "mgr": "allow *", "mon": "allow *", "osd": "allow *"}
BOOTSTRAP_OSD_CAPS: Mapping[str, str] = {"mgr": "allow r", "mon": "profile bootstrap-osd"}
MGR_CAPS: Mapping[str, str] = {"mds": "allow *", "mon": "allow profile mgr", "osd": "allow *"}

# OpenStack's usual client caps (the Ceph "Block Devices and OpenStack" guide), by client name.
_CLIENT_POOLS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (pools written, pools read only)
    "glance": (("images",), ()),
    "cinder": (("volumes", "vms"), ("images",)),
    "cinder-backup": (("backups",), ()),
    "nova": (("vms",), ("images",)),
}


class CephSpecError(ValueError):
    """The resource spec cannot make a working cluster (the driver turns this into a PlanError)."""


@dataclass(frozen=True)
class OsdSet:
    node: str
    count: int
    size_mib: int


@dataclass(frozen=True)
class CephSpec:
    """Typed view of the `ceph/<lab>` resource spec."""

    lab: str
    implementation: str
    mons: tuple[tuple[str, str], ...]  # (node, storage address), first = bootstrap mon
    mgrs: tuple[str, ...]
    osds: tuple[OsdSet, ...]
    pools: tuple[str, ...]
    clients: tuple[str, ...]
    replicas: int
    public_network: str
    client_nodes: tuple[str, ...] = ()  # nodes that get ceph.conf and the client keyrings (no admin key)
    # every Ceph node's br-storage address (mons, mgrs, OSD nodes); specs recorded before it came lack it
    storage_addresses: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_spec(cls, lab: str, spec: Mapping[str, Any]) -> CephSpec:
        mons = tuple((str(n), str(ip)) for n, ip in dict(spec["mons"]).items())
        out = cls(
            lab=lab,
            implementation=str(spec.get("implementation", "packages")),
            mons=mons,
            mgrs=tuple(str(m) for m in (spec.get("mgrs") or ([mons[0][0]] if mons else []))),
            osds=tuple(OsdSet(str(o["node"]), int(o["count"]), int(o["size_mib"])) for o in spec["osds"]),
            pools=tuple(str(p) for p in spec.get("pools", ())),
            clients=tuple(str(c) for c in spec.get("clients", ())),
            replicas=int(spec.get("replicas", 3)),
            public_network=str(spec.get("public_network") or ""),
            client_nodes=tuple(str(n) for n in spec.get("client_nodes", ())),
            storage_addresses=tuple((str(n), str(ip)) for n, ip in dict(spec.get("storage_addresses") or {}).items()),
        )
        out.check()
        return out

    def check(self) -> None:
        if not self.mons:
            raise CephSpecError("a cluster needs at least one monitor")
        if not self.public_network:
            raise CephSpecError("no public_network: the lab has no `storage` network for Ceph traffic")
        if self.osd_count < self.replicas:
            raise CephSpecError(
                f"{self.osd_count} OSD(s) cannot hold {self.replicas} replicas: every placement group would stay"
                " undersized; add OSDs or lower `replicas`"
            )
        for size in (o.size_mib for o in self.osds):
            if size < 1024:
                raise CephSpecError(f"OSD size {size} MiB is below the 1 GiB BlueStore needs for its metadata")

    @property
    def mon_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.mons)

    @property
    def first_mon(self) -> str:
        return self.mons[0][0]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node running a Ceph daemon, mons first (in spec order), then the rest sorted."""
        rest = sorted({*self.mgrs, *(o.node for o in self.osds)} - set(self.mon_names))
        return (*self.mon_names, *rest)

    @property
    def osd_count(self) -> int:
        return sum(o.count for o in self.osds)

    def osd_sizes(self, node: str) -> list[int]:
        """Sizes (MiB) of the OSDs a node should carry, in creation order."""
        return [o.size_mib for o in self.osds if o.node == node for _ in range(o.count)]

    @property
    def osd_hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.node for o in self.osds))

    @property
    def min_size(self) -> int:
        """Ceph's own rule: a majority of the replicas (1 of 1, 1 of 2, 2 of 3, 3 of 5)."""
        return max(1, self.replicas - self.replicas // 2)

    @property
    def chooseleaf_type(self) -> int:
        """Spread replicas over hosts (1) when there are enough OSD hosts, else over OSDs of one host (0)."""
        return 1 if len(self.osd_hosts) >= self.replicas else 0

    @property
    def pg_num(self) -> int:
        """PGs per pool: ~100 PG replicas per OSD shared by the pools, a power of two in [8, 128]."""
        target = self.osd_count * 100 / self.replicas / max(1, len(self.pools))
        return int(min(128, max(8, 2 ** math.floor(math.log2(max(1.0, target))))))

    @property
    def marker(self) -> str:
        return f"managed by stacklab: lab={self.lab} resource=ceph/{self.lab}"


def check_key(key: str) -> str:
    """A cephx secret as ceph-authtool prints it (base64 of 28 bytes); anything else is refused."""
    key = key.strip()
    if not _KEY_RE.match(key):
        raise ValueError("not a cephx key (expected 40 base64 characters ending in '==')")
    return key


def mon_addrvec(ip: str) -> str:
    return f"[v2:{ip}:{MON_V2_PORT},v1:{ip}:{MON_V1_PORT}]"


def mon_host(spec: CephSpec) -> str:
    return ",".join(mon_addrvec(ip) for _, ip in spec.mons)


def osd_weight(size_mib: int) -> str:
    """CRUSH weight in TiB, as Ceph computes it for a device of that size (never 0)."""
    return f"{max(size_mib / (1024 * 1024), 0.0001):.4f}"


def accepted_health_checks(spec: CephSpec) -> dict[str, str]:
    """Health warnings a lab accepts on purpose, each with the reason. Everything else must clear."""
    accepted: dict[str, str] = {}
    if spec.replicas == 1:
        accepted["POOL_NO_REDUNDANCY"] = "the lab asks for replicas: 1, so pools without redundancy are intended"
    return accepted


def _ini(sections: Sequence[tuple[str, Sequence[tuple[str, object]]]], header: Sequence[str]) -> str:
    lines = [f"# {h}" for h in header]
    for name, options in sections:
        if not options:
            continue
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_ini_value(value)}" for key, value in options)
    return "\n".join(lines) + "\n"


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def global_options(spec: CephSpec, fsid: str) -> list[tuple[str, object]]:
    """The [global] options every node and the cephadm bootstrap share."""
    return [
        ("fsid", fsid),
        ("mon_host", mon_host(spec)),
        ("public_network", spec.public_network),
        ("cluster_network", spec.public_network),
        ("ms_bind_ipv4", True),
        ("ms_bind_ipv6", False),
        ("auth_cluster_required", "cephx"),
        ("auth_service_required", "cephx"),
        ("auth_client_required", "cephx"),
        ("auth_allow_insecure_global_id_reclaim", False),
        ("osd_pool_default_size", spec.replicas),
        ("osd_pool_default_min_size", spec.min_size),
        ("osd_pool_default_pg_autoscale_mode", "off"),
        ("osd_crush_chooseleaf_type", spec.chooseleaf_type),
        # Pools are never deleted by stacklab (the whole cluster goes at `down`), so keep the safety on.
        ("mon_allow_pool_delete", False),
    ]


def render_ceph_conf(spec: CephSpec, fsid: str, *, node: str | None = None, address: str | None = None) -> str:
    """ceph.conf for one node (`node` and its storage `address`) or, without them, for a plain client.

    Daemons bind to the node's storage address (public_addr/cluster_addr); OSD hosts pin their crush location
    and never move themselves under the machine's hostname at start.
    """
    glob = global_options(spec, fsid)
    if address:
        glob += [("public_addr", address), ("cluster_addr", address)]
    mon: list[tuple[str, object]] = [("mon_data_avail_warn", MON_DATA_AVAIL_WARN)]
    osd: list[tuple[str, object]] = [
        ("osd_objectstore", "bluestore"),
        ("osd_crush_update_on_start", False),
    ]
    sizes = spec.osd_sizes(node) if node else []
    if node and sizes:
        osd.append(("crush_location", f"root=default host={node}"))
        osd.append(("bluestore_block_size", sizes[0] * 1024 * 1024))
    osd += [
        ("bluestore_fsck_on_mkfs", False),
        ("osd_memory_target", OSD_MEMORY_TARGET),
        ("bluestore_cache_size", BLUESTORE_CACHE_SIZE),
    ]
    header = [spec.marker, f"node: {node}" if node else "client configuration"]
    return _ini([("global", glob), ("mon", mon), ("osd", osd)], header)


def render_keyring(entity: str, key: str, caps: Mapping[str, str] | None = None) -> str:
    """One keyring section in the format ceph-authtool writes (`ceph auth import` reads it back)."""
    if not _ENTITY_RE.match(entity):
        raise ValueError(f"bad cephx entity name {entity!r}")
    lines = [f"[{entity}]", f"\tkey = {check_key(key)}"]
    for service in sorted(caps or {}):
        value = (caps or {})[service]
        if '"' in value or "\n" in value:
            raise ValueError(f"bad caps for {entity} {service}: {value!r}")
        lines.append(f'\tcaps {service} = "{value}"')
    return "\n".join(lines) + "\n"


def client_caps(client: str) -> dict[str, str]:
    """OpenStack's usual caps for `client.<client>`; an unknown client gets rbd on every pool."""
    if client not in _CLIENT_POOLS:
        return {"mgr": "profile rbd", "mon": "profile rbd", "osd": "profile rbd"}
    write, read_only = _CLIENT_POOLS[client]
    osd = [f"profile rbd pool={p}" for p in write] + [f"profile rbd-read-only pool={p}" for p in read_only]
    return {
        "mgr": ", ".join(f"profile rbd pool={p}" for p in write),
        "mon": "profile rbd",
        "osd": ", ".join(osd),
    }


def client_keyring_path(client: str) -> str:
    return f"/etc/ceph/ceph.client.{client}.keyring"


# ---------------------------------------------------------------------------------------------------------
# cephadm (kernel/production path)

CEPHADM_DIR = "/etc/stacklab/ceph"
CEPHADM_SPEC_PATH = f"{CEPHADM_DIR}/services.yml"
CEPHADM_BOOTSTRAP_CONF_PATH = f"{CEPHADM_DIR}/bootstrap.conf"
CEPHADM_PUB_KEY_PATH = "/etc/ceph/ceph.pub"


def render_cephadm_bootstrap_conf(spec: CephSpec) -> str:
    """The `--config` file cephadm bootstrap loads into the cluster's central config (no fsid/mon_host)."""
    glob = [(k, v) for k, v in global_options(spec, "") if k not in {"fsid", "mon_host"}]
    mon: list[tuple[str, object]] = [("mon_data_avail_warn", MON_DATA_AVAIL_WARN)]
    osd: list[tuple[str, object]] = [
        ("osd_memory_target", OSD_MEMORY_TARGET),
        ("bluestore_cache_size", BLUESTORE_CACHE_SIZE),
    ]
    return _ini([("global", glob), ("mon", mon), ("osd", osd)], [spec.marker, "cephadm bootstrap --config"])


def render_cephadm_spec(spec: CephSpec, osd_paths: Mapping[str, Sequence[str]]) -> str:
    """Service specs (mon, mgr, one osd spec per host) for `ceph orch apply -i`.

    `osd_paths` maps each OSD host to the devices its OSDs use (lab disks such as /dev/vdb, or the LVs the
    driver made on loop-backed files).
    """
    docs: list[dict[str, Any]] = [
        {
            "service_type": "mon",
            "placement": {"hosts": [f"{node}:{ip}" for node, ip in spec.mons]},
        },
        {"service_type": "mgr", "placement": {"hosts": list(spec.mgrs)}},
    ]
    for node in spec.osd_hosts:
        docs.append(
            {
                "service_type": "osd",
                "service_id": f"stacklab_{node}",
                "placement": {"hosts": [node]},
                "spec": {"data_devices": {"paths": list(osd_paths.get(node, ()))}, "objectstore": "bluestore"},
            }
        )
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)


def cephadm_bootstrap_argv(spec: CephSpec, fsid: str) -> list[str]:
    """`cephadm bootstrap` on the first mon: its storage address, our fsid and config, no monitoring stack."""
    mon_ip = spec.mons[0][1]
    argv = [
        "cephadm",
        "bootstrap",
        "--fsid",
        fsid,
        "--mon-ip",
        mon_ip,
        "--cluster-network",
        spec.public_network,
        "--config",
        CEPHADM_BOOTSTRAP_CONF_PATH,
        "--output-config",
        CONF_PATH,
        "--output-keyring",
        ADMIN_KEYRING_PATH,
        "--output-pub-ssh-key",
        CEPHADM_PUB_KEY_PATH,
        "--ssh-user",
        "root",
        "--skip-monitoring-stack",
        "--skip-dashboard",
    ]
    if len(spec.nodes) == 1:
        argv.append("--single-host-defaults")
    return argv
