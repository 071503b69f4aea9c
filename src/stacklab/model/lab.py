"""The lab file schema. Frozen pydantic models; cross-references are checked in checks.py."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from stacklab.model.services import ServiceName
from stacklab.model.units import parse_size_mib

# Names become hostnames, unit and file names: a DNS label (no trailing '-'), short enough for every one of them.
NAME_PATTERN = r"^[a-z](?:[a-z0-9-]{0,29}[a-z0-9])?$"
# Kernel interface names (dev_valid_name: 1-15 bytes, not '.' or '..', no '/', ':' or whitespace), kept to a
# plain character set and no leading '-' or '.', so the name is safe in every file and command it reaches.
IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
# LVM's VG name rules (letters, digits, '+_.-', no leading '-', not '.'/'..'), less '+' (not valid in a systemd
# unit name, which the VG name becomes) and '..' anywhere (the name also becomes a file name).
_VG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
# A recipe is a plain name looked up under images/: no '/', no '..'.
_RECIPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# NFS exports live under one lab-owned directory on the NFS server node; each path part is a plain name.
EXPORT_ROOT = "/srv/nfs"
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MOUNT_OPTIONS = re.compile(r"[A-Za-z0-9_.-]+(=[A-Za-z0-9_.-]+)?(,[A-Za-z0-9_.-]+(=[A-Za-z0-9_.-]+)?)*")
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
SizeMiB = Annotated[int, BeforeValidator(parse_size_mib), Field(description="size in MiB; '4GiB' is accepted")]


def _written_address(value: Any) -> Any:
    """Addresses and CIDRs are written as text: pydantic would read `cidr: 10` or `cidr: true` as a number."""
    if not isinstance(value, str):
        raise ValueError("write an IPv4 address or CIDR as text, e.g. 10.0.0.0/24")
    return value


Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_written_address)]
Address = Annotated[ipaddress.IPv4Address, BeforeValidator(_written_address)]

NodeKind = Literal["auto", "vm", "container"]
Role = Literal["controller", "compute", "storage", "swift", "client"]
Device = Literal["kvm", "tun", "fuse"]
SuiteName = Literal[
    "infra",
    "storage",
    "openstack",
    "volumes",
    "attach",
    "replication",
    "caching",
    "evacuation",
    "failover",
    "swift_loss",
    "migration",
    "network",
    "shared_storage",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Model):
    bridge: str = Field(description="bridge name, e.g. br-mgmt; the kernel name gets the lab prefix unless pinned")
    cidr: Cidr
    gateway: Address | None = Field(None, description="host address on the bridge; default: first")
    mtu: int = Field(1500, ge=576, le=9216)
    vlan: int | None = Field(None, ge=1, le=4094, description="802.1Q tag on the host uplink (full kernels)")
    uplink: str | None = Field(None, description="host interface that carries the VLAN (with `vlan` only)")
    pin_name: bool = Field(False, description="use `bridge` literally as the kernel name (no lab prefix)")
    allow_public: bool = Field(False, description="allow a public (globally routed) CIDR: it hides that range")

    @field_validator("bridge", "uplink")
    @classmethod
    def _interface_name(cls, value: str | None) -> str | None:
        if value is not None and not IFNAME.fullmatch(value):
            raise ValueError(
                "an interface name is 1-15 characters: letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            )
        return value

    @model_validator(mode="after")
    def _vlan_needs_uplink(self) -> Network:
        # The bridge is fed by an 802.1Q sub-interface of the uplink; one without the other means nothing.
        if self.vlan is not None and self.uplink is None:
            raise ValueError(f"vlan {self.vlan} needs `uplink`: the host interface to tag it on (for example eno1)")
        if self.uplink is not None and self.vlan is None:
            raise ValueError(f"uplink {self.uplink} is used only with `vlan`: set the tag, or drop the uplink")
        return self

    @property
    def gateway_address(self) -> ipaddress.IPv4Address:
        return self.gateway or next(iter(self.cidr.hosts()))  # a list, not an iterator, for a /31 or /32


class Image(_Model):
    recipe: str = Field(description="recipe file under images/, without .yml")

    @field_validator("recipe")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _RECIPE.fullmatch(value) or ".." in value:
            raise ValueError("a recipe is a plain name (letters, digits, '_', '.', '-'; no '/' or '..'), e.g. storage")
        return value


class Disk(_Model):
    name: Name
    size: SizeMiB


class Nic(_Model):
    address: Address | Literal["auto"] = "auto"


def _nics_shorthand(value: Any) -> Any:
    """`nics: [mgmt, storage]` means auto addresses on both."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {v: {} for v in value}
    return value


class Node(_Model):
    kind: NodeKind = "auto"
    image: str
    cpus: int = Field(1, ge=1, le=64)
    memory: SizeMiB = 1024
    disks: list[Disk] = Field(default_factory=list)
    nics: Annotated[dict[str, Nic], BeforeValidator(_nics_shorthand)]
    roles: list[Role] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list, description="host devices passed in (containers)")
    privileged: bool | None = Field(
        None,
        description="containers: run as a privileged LXC container (its root is the host's root); default: computed "
        "from the roles, and privileged is the only mode implemented (README, Security)",
    )

    @field_validator("privileged")
    @classmethod
    def _only_privileged(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError(
                "unprivileged LXC nodes are not implemented: the shared image rootfs belongs to the host's root (an "
                "idmap needs an id-shifted copy or idmapped mounts), and the storage, compute and client roles need "
                "devices an unprivileged container cannot use (loop, device-mapper, configfs, /dev/kvm); see the "
                "README's Security section"
            )
        return value


class Lvm(_Model):
    node: str
    vg: str = "cinder-volumes"
    size: SizeMiB = Field(10240, description="the loop-backed file's size (without `disk`)")
    disk: Name | None = Field(
        None,
        description="a data disk of the node (nodes.<node>.disks, a VM node's) as the volume group's one PV, "
        "instead of a loop-backed file: the VG is the whole disk",
    )

    @field_validator("vg")
    @classmethod
    def _lvm_name(cls, value: str) -> str:
        if not _VG.fullmatch(value) or ".." in value:
            raise ValueError(
                "a volume group name is 1-63 letters, digits, '_', '.' or '-', not starting with '-' or '.', "
                "without '..'"
            )
        return value


class IscsiTarget(_Model):
    name: Name
    backing: Literal["lvm", "file", "rbd"] = "file"
    size: SizeMiB = 1024


class Iscsi(_Model):
    node: str
    implementation: Literal["auto", "lio", "tgt"] = "auto"
    chap: bool = True
    initiators: list[str] = Field(default_factory=list, description="client nodes allowed by ACL")
    targets: list[IscsiTarget] = Field(default_factory=list)


class NfsExport(_Model):
    name: Name
    path: str
    size: SizeMiB | None = None

    @field_validator("path")
    @classmethod
    def _under_export_root(cls, value: str) -> str:
        # The path is written into ganesha's config and knfsd's exports line, and created with mkdir -p: only
        # a normalised path below the lab's export root, of plain parts, can reach them.
        parts = value.removeprefix(f"{EXPORT_ROOT}/").split("/")
        if not value.startswith(f"{EXPORT_ROOT}/") or len(parts) > 8:
            raise ValueError(f"an export path is a directory under {EXPORT_ROOT}/, e.g. {EXPORT_ROOT}/images")
        if not all(_PATH_PART.fullmatch(part) and ".." not in part for part in parts):
            raise ValueError(
                "each part of an export path is letters, digits, '_', '.' or '-' (not starting with '.'; "
                "no quotes, blanks, '//' or '..')"
            )
        return value


class Nfs(_Model):
    node: str
    implementation: Literal["auto", "knfsd", "ganesha"] = "auto"
    versions: list[Literal[3, 4]] = Field(default_factory=lambda: list[Literal[3, 4]]([3, 4]))
    exports: list[NfsExport] = Field(default_factory=list)


class CephOsd(_Model):
    node: str
    count: int = Field(1, ge=1, le=12)
    size: SizeMiB = 4096


class Ceph(_Model):
    implementation: Literal["auto", "cephadm", "packages"] = "auto"
    mons: list[str] = Field(min_length=1)
    mgrs: list[str] = Field(default_factory=list, description="default: the first monitor")
    osds: list[CephOsd] = Field(min_length=1)
    pools: list[Name] = Field(default_factory=lambda: ["volumes", "images", "vms"])
    clients: list[Name] = Field(default_factory=lambda: ["cinder", "glance", "nova"])
    replicas: int = Field(3, ge=1, le=5)


class Storage(_Model):
    lvm: Lvm | None = None
    iscsi: Iscsi | None = None
    nfs: Nfs | None = None
    ceph: Ceph | None = None


class Glance(_Model):
    store: Literal["file", "nfs", "rbd"] = "file"
    cache: bool = True
    nodes: list[str] = Field(
        default_factory=list,
        description="store nfs: the nodes that each run glance-api over the same NFS mount of the store (the "
        "catalog's image endpoint is the first, as a load balancer's address would be); default: the controller",
    )
    export: Name | None = Field(None, description="store nfs: the storage.nfs export glance mounts; default: the first")


class CinderLvm(_Model):
    """cinder's LVMVolumeDriver over iSCSI on the node of storage.lvm (its volume group): one cinder backend per
    target helper, `lvm-<helper>`, each with its volume type."""

    node: str | None = Field(None, description="node running cinder-volume for LVM: storage.lvm's node, a VM node")
    target_helpers: list[Literal["lioadm", "tgtadm"]] = Field(
        default_factory=lambda: list[Literal["lioadm", "tgtadm"]](["lioadm"]),
        min_length=1,
        description="lioadm: LIO through cinder-rtstool (port 3260); tgtadm: tgtd (3260, or 3261 beside LIO)",
    )
    chap: bool = Field(True, description="use_chap_auth: cinder makes a CHAP account for each volume's target")


class CinderNfs(_Model):
    """cinder's NfsDriver: volumes are files on the lab's NFS export(s), mounted by cinder-volume over br-storage."""

    node: str | None = Field(None, description="node running cinder-volume for NFS (a VM node); default: the LVM "
                             "backend's node, else storage.nfs's node")  # fmt: skip
    exports: list[Name] = Field(default_factory=list, description="storage.nfs exports to use; default: all")
    mount_options: str = Field("vers=4.2", description="nfs_mount_options")
    mount_point_base: str = Field("/var/lib/cinder/mnt", description="nfs_mount_point_base")

    @field_validator("mount_options")
    @classmethod
    def _mount_options(cls, value: str) -> str:
        if not _MOUNT_OPTIONS.fullmatch(value):
            raise ValueError("mount options are comma-separated key or key=value words (letters, digits, '_.-')")
        return value

    @field_validator("mount_point_base")
    @classmethod
    def _mount_point_base(cls, value: str) -> str:
        parts = value.split("/")[1:]
        if not value.startswith("/") or not parts or not all(_PATH_PART.fullmatch(p) and ".." not in p for p in parts):
            raise ValueError("the mount point base is an absolute path of plain parts, e.g. /var/lib/cinder/mnt")
        return value


class Cinder(_Model):
    backends: list[Literal["lvm", "nfs", "rbd"]] = Field(
        default_factory=lambda: list[Literal["lvm", "nfs", "rbd"]](["rbd"])
    )
    lvm: CinderLvm | None = Field(None, description="settings of the lvm backend (default: CinderLvm's)")
    nfs: CinderNfs | None = Field(None, description="settings of the nfs backend (default: CinderNfs's)")
    volume_node: str | None = Field(None, description="node running cinder-volume; default: the controller")
    volume_nodes: list[str] = Field(
        default_factory=list,
        description="nodes that each run a cinder-volume service for the same backends (not active-active: each "
        "manages the volumes it created until `cinder-manage volume update_host` moves them); the controller first",
    )


class Swift(_Model):
    proxy: str | None = Field(None, description="default: the controller")
    nodes: list[str] = Field(default_factory=list, description="default: nodes with the swift role")
    replicas: int = Field(3, ge=1, le=5)
    devices: int = Field(
        1,
        ge=1,
        le=4,
        description="devices per storage node (/srv/node/d1..dN, each a mount point); more devices than replicas "
        "give the ring handoff devices on the surviving nodes when a node is lost",
    )
    device_kind: Literal["auto", "tmpfs", "directory"] = Field(
        "auto",
        description="what a device is: `tmpfs` (a size-capped tmpfs mount each, mount_check on; needs user xattrs "
        "on tmpfs, Linux 6.6+) or `directory` (plain directories, mount_check off: the swift_loss unmounted and "
        "full device cases are skipped); auto: tmpfs where `stacklab doctor` finds tmpfs takes user xattrs",
    )


# nova's own name for the zone of every compute no host aggregate places elsewhere (default_availability_zone)
NOVA_DEFAULT_ZONE = "nova"


class NovaNode(_Model):
    """One compute's departures from `openstack.nova`, as an operator sets them in that host's nova.conf."""

    images_type: Literal["qcow2", "rbd"] | None = Field(
        None, description="this compute's instance disks: qcow2 (local files over a cached base image) or rbd; "
        "default: openstack.nova.images_type"
    )  # fmt: skip
    availability_zone: Name | None = Field(
        None, description="a zone of its own (a host aggregate with this zone): boots that name no zone stay in "
        "nova's default zone, so a compute whose disks differ from the others gets only what asks for it"
    )  # fmt: skip


# QEMU's x86 CPU models (qemu-system-x86 7.2, `-cpu help`) a lab may give nova's guests: the generic ones and the
# named generations. A closed list: the name reaches nova.conf, and a typo would only show as nova-compute refusing
# to start.
GuestCpuModel = Literal[
    "qemu64", "kvm64", "Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell-noTSX", "Broadwell-noTSX",
    "Skylake-Client-noTSX-IBRS", "Cascadelake-Server-noTSX", "Icelake-Server-noTSX", "Opteron_G4", "Opteron_G5",
    "EPYC", "EPYC-Rome", "EPYC-Milan",
]  # fmt: skip


class NovaImageCache(_Model):
    """nova.conf `[image_cache]` on every compute: how often the cache manager runs and when it removes a base image
    (`_base`) no instance uses any more."""

    manager_interval: int = Field(2400, ge=5, le=86400, description="seconds between two cache manager passes")
    remove_unused_base_images: bool = True
    remove_unused_original_minimum_age_seconds: int = Field(
        86400, ge=0, le=31536000, description="an unused base image younger than this (since its last use) stays"
    )


class Nova(_Model):
    computes: list[str] = Field(default_factory=list, description="default: nodes with the compute role")
    images_type: Literal["qcow2", "rbd"] = "qcow2"
    instances_on: Literal["local", "nfs", "rbd"] = "local"
    instances_export: Name | None = Field(
        None, description="instances_on nfs: the storage.nfs export every compute mounts at nova's instances_path; "
        "default: the first"
    )  # fmt: skip
    overrides: dict[Name, NovaNode] = Field(
        default_factory=dict, description="per compute node: its images_type and availability zone"
    )
    image_cache: NovaImageCache | None = Field(None, description="default: nova's (40 min passes, 24 h age)")
    cpu_model: GuestCpuModel | None = Field(
        None, description="the guests' virtual CPU, a QEMU model (nova [libvirt] cpu_mode custom, cpu_models): "
        "default nova's host-model, which under TCG on a VM compute is the outer QEMU's `max` CPU (EPYC with la57, "
        "pks, pku ...) and breaks a nested guest's live migration; qemu64 is what every TCG host runs the same"
    )  # fmt: skip

    def images_type_of(self, node: str) -> str:
        """The instance disk type of compute `node` (its override, else the lab's)."""
        override = self.overrides.get(node)
        return (override.images_type if override else None) or self.images_type

    def zone_of(self, node: str) -> str:
        override = self.overrides.get(node)
        return (override.availability_zone if override else None) or NOVA_DEFAULT_ZONE


def address_range(value: Any) -> Any:
    """`first-last` (two IPv4 addresses, first <= last) as written; kept as text, read with `range_bounds`."""
    if not isinstance(value, str):
        raise ValueError("write the pool as text: first-last, e.g. 10.244.30.100-10.244.30.150")
    range_bounds(value)
    return value


def range_bounds(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    first, sep, last = text.partition("-")
    try:
        bounds = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
    except ValueError:
        bounds = None
    if not sep or bounds is None:
        raise ValueError(f"{text!r} is not a range of two IPv4 addresses: write first-last, e.g. 10.0.3.100-10.0.3.150")
    if bounds[0] > bounds[1]:
        raise ValueError(f"the range {text} ends before it starts")
    return bounds


class NeutronExternal(_Model):
    """An external (provider) network: a flat neutron network on one lab network, whose addresses neutron hands to
    routers' gateways and floating IPs; the host's address on that bridge is the subnet's gateway, so the host
    reaches a floating IP without a route (model/neutron_external.py)."""

    network: Name = Field(description="the lab network (its own bridge; not mgmt or storage) that carries it; the "
                          "controller, where neutron's L3 agent runs, needs a NIC on it")  # fmt: skip
    pool: Annotated[str, BeforeValidator(address_range)] = Field(
        description="first-last: the addresses neutron may hand out, inside the network's cidr and off the host's "
        "and the nodes' addresses there"
    )

    @property
    def pool_bounds(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return range_bounds(self.pool)


class Neutron(_Model):
    external: NeutronExternal | None = Field(
        None, description="an external network: neutron's L3 agent, routers and floating IPs the host can reach"
    )


class OpenStack(_Model):
    release: Literal["zed"] = "zed"
    controller: str | None = Field(None, description="default: the node with the controller role")
    services: list[ServiceName] = Field(default_factory=list)
    glance: Glance = Field(default_factory=Glance)
    cinder: Cinder = Field(default_factory=Cinder)
    swift: Swift = Field(default_factory=Swift)
    nova: Nova = Field(default_factory=Nova)
    # None, not a default section: a lab that does not ask keeps neutron's spec (no `config`) as it was
    neutron: Neutron | None = None


class Verify(_Model):
    suites: list[SuiteName] = Field(default_factory=list)


class Lab(_Model):
    """A whole lab: networks, images, nodes, storage, OpenStack services and the suites that prove them."""

    name: Name
    description: str = ""
    prefix: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9]{1,4}$",
        description="kernel-name prefix; default: derived from the name",
    )
    networks: dict[Name, Network] = Field(min_length=1)
    images: dict[Name, Image] = Field(default_factory=dict)
    nodes: dict[Name, Node] = Field(default_factory=dict)
    storage: Storage = Field(default_factory=Storage)
    openstack: OpenStack | None = None
    verify: Verify = Field(default_factory=Verify)
    # Set by the loader: the file this lab came from (for messages), not part of the schema.
    source: str = Field("<string>", exclude=True, json_schema_extra={"readOnly": True})

    @property
    def kernel_prefix(self) -> str:
        """Short per-lab prefix for kernel names (15 characters at most), so two labs share a host."""
        if self.prefix:
            return self.prefix
        return "s" + hashlib.sha1(self.name.encode()).hexdigest()[:3]

    def bridge_ifname(self, network: str) -> str:
        net = self.networks[network]
        return net.bridge if net.pin_name else f"{self.kernel_prefix}{net.bridge}"

    def nodes_with_role(self, role: Role) -> list[str]:
        return [name for name, node in self.nodes.items() if role in node.roles]
