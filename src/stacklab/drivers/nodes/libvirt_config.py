"""Typed config objects for libvirt XML: domains, disks, NICs, serial consoles, dir pools and volumes.

In the spirit of nova's `virt/libvirt/config.py`: each object renders itself with `to_xml()` and reads
libvirt's XML back with `parse()`, so the VM driver can compare a defined domain's `XMLDesc()` with what it
wants and recover the lab/node ownership mark, disks and MACs. Policy (names, paths, which disks a node
gets) lives in the driver; these objects only know the XML, built with ElementTree, never string templates.

`parse()` of libvirt's own output keeps what these objects model and ignores what libvirt adds (PCI addresses,
aliases, `<currentMemory>`, `<boot>`, the `<console>` twin of the serial port). `parse(to_xml(x)) == x` holds
for every object.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, cast, get_args

LOG = logging.getLogger(__name__)

METADATA_NS = "https://stacklab.dev/xmlns/domain/1"
METADATA_PREFIX = "stacklab"
# ElementTree picks prefixes from a global registry; without this the mark would serialise as `ns0:owner`.
ET.register_namespace(METADATA_PREFIX, METADATA_NS)
_OWNER_TAG = f"{{{METADATA_NS}}}owner"

DomainType = Literal["qemu", "kvm"]
CpuMode = Literal["custom", "host-model", "host-passthrough", "maximum"]
LifecycleAction = Literal["destroy", "restart", "preserve", "rename-restart"]
DiskSource = Literal["file", "block", "network"]
DiskDevice = Literal["disk", "cdrom"]
DiskFormat = Literal["qcow2", "raw"]
NetworkProtocol = Literal["rbd", "iscsi", "nfs"]
SecretType = Literal["ceph", "iscsi"]
HostTransport = Literal["tcp", "unix", "rdma", None]

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Kernel interface names are at most 15 bytes; libvirt drops target names with its own reserved prefixes.
_IFNAME_MAX = 15
_RESERVED_TAP_PREFIXES = ("vnet", "vif", "macvtap", "macvlan")

# libvirt's scaled-integer units (docs: formatdomain.html#memory-allocation, formatstorage.html).
_UNIT_BYTES: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
    "pb": 1000**5,
    "p": 1024**5,
    "pib": 1024**5,
}
_MIB = 1024**2


class LibvirtXMLError(ValueError):
    """libvirt XML that these objects cannot read: malformed, wrong root, or a required part missing."""


# ----------------------------------------------------------------------------------------------------
# Small XML helpers


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def _text(elem: ET.Element, path: str) -> str | None:
    found = elem.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _required_text(elem: ET.Element, path: str) -> str:
    value = _text(elem, path)
    if not value:
        raise LibvirtXMLError(f"<{elem.tag}> has no <{path}>")
    return value


def _required_attr(elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None:
        raise LibvirtXMLError(f"<{elem.tag}> has no attribute {name!r}")
    return value


def _literal(value: str | None, kind: Any, what: str) -> Any:
    """Check a string against a Literal type, so parse() never builds an object to_xml() could not render.

    Returns Any because a Literal alias is not a class mypy can bind a TypeVar to; the caller's field type
    is what mypy checks.
    """
    allowed: tuple[str | None, ...] = get_args(kind)
    if value not in allowed:
        names = ", ".join(a for a in allowed if a is not None)
        raise LibvirtXMLError(f"unsupported {what} {value!r} (supported: {names})")
    return value


def _bytes_of(elem: ET.Element, default_unit: str) -> int:
    unit = elem.get("unit", default_unit).lower()
    if unit not in _UNIT_BYTES:
        raise LibvirtXMLError(f"<{elem.tag}> has unknown unit {unit!r}")
    text = (elem.text or "").strip()
    if not text.isdigit():
        raise LibvirtXMLError(f"<{elem.tag}> is not a whole number: {text!r}")
    return int(text) * _UNIT_BYTES[unit]


def _int_attr(elem: ET.Element, name: str) -> int | None:
    value = elem.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise LibvirtXMLError(f"<{elem.tag} {name}=...> is not a whole number: {value!r}")
    return int(value)


def _bool_attr(value: str | None) -> bool:
    return value in ("on", "yes")


class _XMLConfig:
    """Shared to_xml/parse plumbing; subclasses build and read one element."""

    ROOT: ClassVar[str]
    # Other root tags parse() accepts for the same object.
    ROOT_ALIASES: ClassVar[tuple[str, ...]] = ()

    def to_element(self) -> ET.Element:
        raise NotImplementedError

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        raise NotImplementedError

    def to_xml(self) -> str:
        elem = self.to_element()
        ET.indent(elem)
        return ET.tostring(elem, encoding="unicode")

    @classmethod
    def parse(cls, xml: str) -> Self:
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise LibvirtXMLError(f"not well-formed XML for <{cls.ROOT}>: {exc}") from exc
        if root.tag != cls.ROOT and root.tag not in cls.ROOT_ALIASES:
            raise LibvirtXMLError(f"expected <{cls.ROOT}>, got <{root.tag}>")
        return cls.from_element(root)


# ----------------------------------------------------------------------------------------------------
# Helpers the VM driver uses directly


def owner_of(domain_xml: str) -> tuple[str, str] | None:
    """(lab, node) from a domain's stacklab mark, or None when the domain carries no complete mark.

    Reads only `<metadata>`, so domains with devices these objects do not model still answer.
    """
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError as exc:
        raise LibvirtXMLError(f"not well-formed domain XML: {exc}") from exc
    owner = root.find(f"metadata/{_OWNER_TAG}")
    if owner is None:
        return None
    lab, node = owner.get("lab"), owner.get("node")
    if not lab or not node:
        LOG.warning("domain %s has a stacklab mark without lab/node; treating it as not owned", _text(root, "name"))
        return None
    return lab, node


# ----------------------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True, kw_only=True)
class DiskHost:
    """One server of a network disk (Ceph mon, iSCSI portal, NFS server)."""

    name: str
    port: int | None = None
    transport: HostTransport = None

    def __post_init__(self) -> None:
        # tcp is libvirt's default and it omits it from its XML; storing None keeps desired == observed.
        if self.transport == "tcp":
            object.__setattr__(self, "transport", None)


@dataclass(frozen=True, kw_only=True)
class DiskAuth:
    """Credentials for a network disk, by reference to a libvirt secret (uuid or usage name, not both)."""

    username: str
    secret_type: SecretType
    secret_uuid: str | None = None
    secret_usage: str | None = None

    def __post_init__(self) -> None:
        if (self.secret_uuid is None) == (self.secret_usage is None):
            raise ValueError("DiskAuth needs exactly one of secret_uuid and secret_usage")


@dataclass(frozen=True, kw_only=True)
class DiskConfig(_XMLConfig):
    """A guest disk: a local file (qcow2 overlay, raw seed ISO), a host block device, or a network disk.

    For network disks `path` is libvirt's source name: `pool/image` for rbd, `iqn.../lun` for iscsi and the
    export path of the file for nfs; QEMU's user-space drivers reach them without kernel initiators.
    """

    ROOT: ClassVar[str] = "disk"

    target_dev: str
    source_type: DiskSource = "file"
    path: str
    driver_format: DiskFormat = "qcow2"
    bus: str = "virtio"
    device: DiskDevice = "disk"
    readonly: bool = False
    cache: str | None = None
    serial: str | None = None
    protocol: NetworkProtocol | None = None
    hosts: tuple[DiskHost, ...] = ()
    auth: DiskAuth | None = None
    # NFS only: the user/group libnfs presents to the server (libvirt's <identity>); None = QEMU's own.
    nfs_user: str | None = None
    nfs_group: str | None = None

    def __post_init__(self) -> None:
        if self.source_type == "network":
            if self.protocol is None or not self.hosts:
                raise ValueError(f"network disk {self.target_dev} needs a protocol and at least one host")
        elif self.protocol is not None or self.hosts or self.auth is not None:
            raise ValueError(f"{self.source_type} disk {self.target_dev} cannot have protocol, hosts or auth")
        if self.protocol != "nfs" and (self.nfs_user is not None or self.nfs_group is not None):
            raise ValueError(f"disk {self.target_dev}: nfs_user/nfs_group apply to nfs disks only")

    def to_element(self) -> ET.Element:
        disk = ET.Element("disk", type=self.source_type, device=self.device)
        driver = _sub(disk, "driver", name="qemu", type=self.driver_format)
        if self.cache is not None:
            driver.set("cache", self.cache)
        if self.auth is not None:
            auth = _sub(disk, "auth", username=self.auth.username)
            secret = _sub(auth, "secret", type=self.auth.secret_type)
            if self.auth.secret_uuid is not None:
                secret.set("uuid", self.auth.secret_uuid)
            else:
                secret.set("usage", cast(str, self.auth.secret_usage))
        if self.source_type == "file":
            _sub(disk, "source", file=self.path)
        elif self.source_type == "block":
            _sub(disk, "source", dev=self.path)
        else:
            source = _sub(disk, "source", protocol=cast(str, self.protocol), name=self.path)
            for host in self.hosts:
                host_elem = _sub(source, "host", name=host.name)
                if host.port is not None:
                    host_elem.set("port", str(host.port))
                if host.transport is not None:
                    host_elem.set("transport", host.transport)
            if self.protocol == "nfs":
                # libvirt's schema requires <identity> on nfs sources, even with no attributes.
                identity = _sub(source, "identity")
                if self.nfs_user is not None:
                    identity.set("user", self.nfs_user)
                if self.nfs_group is not None:
                    identity.set("group", self.nfs_group)
        _sub(disk, "target", dev=self.target_dev, bus=self.bus)
        if self.readonly:
            _sub(disk, "readonly")
        if self.serial is not None:
            _sub(disk, "serial", self.serial)
        return disk

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        source_type: DiskSource = _literal(elem.get("type"), DiskSource, "disk type")
        target = elem.find("target")
        source = elem.find("source")
        if target is None or source is None:
            raise LibvirtXMLError("<disk> needs <source> and <target>")
        driver = elem.find("driver")
        protocol: NetworkProtocol | None = None
        hosts: tuple[DiskHost, ...] = ()
        identity = source.find("identity")
        if source_type == "file":
            path = _required_attr(source, "file")
        elif source_type == "block":
            path = _required_attr(source, "dev")
        else:
            protocol = _literal(source.get("protocol"), NetworkProtocol, "network disk protocol")
            path = _required_attr(source, "name")
            hosts = tuple(
                DiskHost(
                    name=_required_attr(h, "name"),
                    port=_int_attr(h, "port"),
                    transport=_literal(h.get("transport"), HostTransport, "host transport"),
                )
                for h in source.findall("host")
            )
        # libvirt accepts <auth> under <disk> or under <source> and dumps it where it was given.
        auth_elem = elem.find("auth")
        if auth_elem is None:
            auth_elem = source.find("auth")
        auth = None
        if auth_elem is not None:
            secret = auth_elem.find("secret")
            if secret is None:
                raise LibvirtXMLError("<auth> has no <secret>")
            auth = DiskAuth(
                username=_required_attr(auth_elem, "username"),
                secret_type=_literal(secret.get("type"), SecretType, "secret type"),
                secret_uuid=secret.get("uuid"),
                secret_usage=secret.get("usage"),
            )
        return cls(
            target_dev=_required_attr(target, "dev"),
            source_type=source_type,
            path=path,
            driver_format=_literal(
                driver.get("type", "raw") if driver is not None else "raw", DiskFormat, "disk format"
            ),
            bus=target.get("bus", "virtio"),
            device=_literal(elem.get("device", "disk"), DiskDevice, "disk device"),
            readonly=elem.find("readonly") is not None,
            cache=driver.get("cache") if driver is not None else None,
            serial=_text(elem, "serial"),
            protocol=protocol,
            hosts=hosts,
            auth=auth,
            nfs_user=identity.get("user") if identity is not None else None,
            nfs_group=identity.get("group") if identity is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class InterfaceConfig(_XMLConfig):
    """A virtio NIC on a lab bridge. `target_dev` names the host tap so `down` can find it by lab prefix."""

    ROOT: ClassVar[str] = "interface"

    source_bridge: str
    mac: str
    model: str = "virtio"
    target_dev: str | None = None
    mtu: int | None = None

    def __post_init__(self) -> None:
        # libvirt reports MACs in lower case; normalising keeps desired == observed.
        object.__setattr__(self, "mac", self.mac.lower())
        if not _MAC_RE.match(self.mac):
            raise ValueError(f"invalid MAC address {self.mac!r}")
        if self.target_dev is not None:
            if len(self.target_dev) > _IFNAME_MAX:
                raise ValueError(f"tap name {self.target_dev!r} is longer than {_IFNAME_MAX} characters")
            if self.target_dev.startswith(_RESERVED_TAP_PREFIXES):
                raise ValueError(f"tap name {self.target_dev!r} uses a prefix libvirt reserves and discards")

    def to_element(self) -> ET.Element:
        iface = ET.Element("interface", type="bridge")
        _sub(iface, "mac", address=self.mac)
        _sub(iface, "source", bridge=self.source_bridge)
        if self.target_dev is not None:
            _sub(iface, "target", dev=self.target_dev)
        _sub(iface, "model", type=self.model)
        if self.mtu is not None:
            _sub(iface, "mtu", size=str(self.mtu))
        return iface

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        if elem.get("type") != "bridge":
            raise LibvirtXMLError(f"unsupported interface type {elem.get('type')!r} (supported: bridge)")
        source, mac = elem.find("source"), elem.find("mac")
        if source is None or mac is None:
            raise LibvirtXMLError("<interface> needs <source> and <mac>")
        target, model, mtu = elem.find("target"), elem.find("model"), elem.find("mtu")
        return cls(
            source_bridge=_required_attr(source, "bridge"),
            mac=_required_attr(mac, "address"),
            model=model.get("type", "virtio") if model is not None else "virtio",
            target_dev=target.get("dev") if target is not None else None,
            mtu=_int_attr(mtu, "size") if mtu is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class SerialConsoleConfig(_XMLConfig):
    """A pty serial port whose output virtlogd also copies to `log_file`, so each node's console is on disk.

    `append` keeps earlier boots' output across restarts (libvirt truncates the log otherwise).
    """

    ROOT: ClassVar[str] = "serial"

    log_file: str
    append: bool = True
    port: int = 0

    def to_element(self) -> ET.Element:
        serial = ET.Element("serial", type="pty")
        _sub(serial, "log", file=self.log_file, append="on" if self.append else "off")
        _sub(serial, "target", port=str(self.port))
        return serial

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        if elem.get("type") != "pty":
            raise LibvirtXMLError(f"unsupported serial type {elem.get('type')!r} (supported: pty)")
        log = elem.find("log")
        if log is None:
            raise LibvirtXMLError("<serial> has no <log file=...>; the console would not be captured")
        target = elem.find("target")
        return cls(
            log_file=_required_attr(log, "file"),
            append=_bool_attr(log.get("append")),
            port=int(target.get("port", "0")) if target is not None else 0,
        )


# ----------------------------------------------------------------------------------------------------
# Domain


@dataclass(frozen=True, kw_only=True)
class MetadataConfig(_XMLConfig):
    """The ownership mark: `<stacklab:owner lab=... node=.../>` in stacklab's own XML namespace.

    It is the only element in the namespace, so libvirt's metadata API can read and replace it on a defined
    domain: `dom.setMetadata(VIR_DOMAIN_METADATA_ELEMENT, m.to_metadata_api_xml(), METADATA_PREFIX,
    METADATA_NS, flags)`, and `parse(dom.metadata(VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS))`. `spec_hash`
    lets observe() spot a domain defined from an older spec without re-deriving its XML.
    """

    ROOT: ClassVar[str] = _OWNER_TAG
    # libvirt's metadata API hands the element back without its namespace (the uri was the lookup key).
    ROOT_ALIASES: ClassVar[tuple[str, ...]] = ("owner",)

    lab: str
    node: str
    spec_hash: str | None = None

    def to_element(self) -> ET.Element:
        return self._owner_element(_OWNER_TAG)

    def to_metadata_api_xml(self) -> str:
        """The mark for `virDomainSetMetadata`, which adds the namespace itself and fails if it is present."""
        return ET.tostring(self._owner_element("owner"), encoding="unicode")

    def _owner_element(self, tag: str) -> ET.Element:
        owner = ET.Element(tag, lab=self.lab, node=self.node)
        if self.spec_hash is not None:
            owner.set("spec-hash", self.spec_hash)
        return owner

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        return cls(
            lab=_required_attr(elem, "lab"),
            node=_required_attr(elem, "node"),
            spec_hash=elem.get("spec-hash"),
        )


@dataclass(frozen=True, kw_only=True)
class CpuConfig:
    """The guest CPU. Under TCG use a named model (`qemu64`) or mode `maximum` (QEMU's `-cpu max`);
    host-passthrough needs KVM, and KVM does not run guests on the CI host type."""

    mode: CpuMode = "custom"
    model: str | None = "qemu64"

    def __post_init__(self) -> None:
        if (self.mode == "custom") != (self.model is not None):
            raise ValueError("cpu mode 'custom' needs a model; other modes take none")

    def to_element(self) -> ET.Element:
        cpu = ET.Element("cpu", mode=self.mode)
        if self.model is not None:
            cpu.set("match", "exact")
            _sub(cpu, "model", self.model, fallback="allow")
        return cpu

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        mode: CpuMode = _literal(elem.get("mode", "custom"), CpuMode, "cpu mode")
        return cls(mode=mode, model=_text(elem, "model") if mode == "custom" else None)


@dataclass(frozen=True, kw_only=True)
class DomainConfig(_XMLConfig):
    """A lab VM: direct kernel boot on q35, virtio disks and NICs, a logged serial console and an RNG.

    `virt_type` defaults to 'qemu' (TCG) because libvirt lists kvm on hosts where it cannot run guests;
    choosing kvm is the capability probe's decision, not this object's.
    """

    ROOT: ClassVar[str] = "domain"

    name: str
    memory_mib: int
    vcpus: int = 1
    uuid: str | None = None
    virt_type: DomainType = "qemu"
    arch: str = "x86_64"
    machine: str = "q35"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    cpu: CpuConfig | None = field(default_factory=CpuConfig)
    features: tuple[str, ...] = ("acpi",)
    on_poweroff: LifecycleAction = "destroy"
    on_reboot: LifecycleAction = "restart"
    on_crash: LifecycleAction = "destroy"
    emulator: str | None = None
    disks: tuple[DiskConfig, ...] = ()
    interfaces: tuple[InterfaceConfig, ...] = ()
    serial: SerialConsoleConfig | None = None
    # Entropy for the guest; without it a TCG guest can wait minutes for getrandom() during boot.
    rng_source: str | None = "/dev/urandom"
    # Off by default: it saved no memory in measurements here and libvirt adds one unless told 'none'.
    memballoon: bool = False
    metadata: MetadataConfig | None = None

    def __post_init__(self) -> None:
        if self.memory_mib <= 0 or self.vcpus <= 0:
            raise ValueError(f"domain {self.name}: memory_mib and vcpus must be positive")
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise ValueError(f"domain {self.name}: initrd/cmdline need a kernel (direct kernel boot)")
        if self.virt_type == "qemu" and self.cpu is not None and self.cpu.mode == "host-passthrough":
            raise ValueError(
                f"domain {self.name}: cpu mode host-passthrough needs KVM; under TCG use model qemu64 or mode maximum"
            )
        for what, values in (
            ("disk target", [d.target_dev for d in self.disks]),
            ("MAC", [i.mac for i in self.interfaces]),
        ):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"domain {self.name}: duplicate {what} {', '.join(dupes)}")

    @property
    def owner(self) -> tuple[str, str] | None:
        return (self.metadata.lab, self.metadata.node) if self.metadata is not None else None

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(i.mac for i in self.interfaces)

    def to_element(self) -> ET.Element:
        dom = ET.Element("domain", type=self.virt_type)
        _sub(dom, "name", self.name)
        if self.uuid is not None:
            _sub(dom, "uuid", self.uuid)
        if self.metadata is not None:
            _sub(dom, "metadata").append(self.metadata.to_element())
        _sub(dom, "memory", str(self.memory_mib), unit="MiB")
        _sub(dom, "vcpu", str(self.vcpus))

        os_elem = _sub(dom, "os")
        _sub(os_elem, "type", "hvm", arch=self.arch, machine=self.machine)
        if self.kernel is not None:
            _sub(os_elem, "kernel", self.kernel)
            if self.initrd is not None:
                _sub(os_elem, "initrd", self.initrd)
            if self.cmdline is not None:
                _sub(os_elem, "cmdline", self.cmdline)
        else:
            _sub(os_elem, "boot", dev="hd")

        if self.features:
            features = _sub(dom, "features")
            for name in self.features:
                _sub(features, name)
        if self.cpu is not None:
            dom.append(self.cpu.to_element())
        _sub(dom, "on_poweroff", self.on_poweroff)
        _sub(dom, "on_reboot", self.on_reboot)
        _sub(dom, "on_crash", self.on_crash)

        devices = _sub(dom, "devices")
        if self.emulator is not None:
            _sub(devices, "emulator", self.emulator)
        for disk in self.disks:
            devices.append(disk.to_element())
        for iface in self.interfaces:
            devices.append(iface.to_element())
        if self.serial is not None:
            devices.append(self.serial.to_element())
            # The console is the serial port's twin; libvirt would add it anyway, we say so explicitly.
            console = _sub(devices, "console", type="pty")
            _sub(console, "target", type="serial", port=str(self.serial.port))
        if self.rng_source is not None:
            rng = _sub(devices, "rng", model="virtio")
            _sub(rng, "backend", self.rng_source, model="random")
        _sub(devices, "memballoon", model="virtio" if self.memballoon else "none")
        return dom

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        virt_type: DomainType = _literal(elem.get("type"), DomainType, "domain type")
        memory = elem.find("memory")
        os_type = elem.find("os/type")
        if memory is None or os_type is None:
            raise LibvirtXMLError("<domain> needs <memory> and <os><type>")
        owner = elem.find(f"metadata/{_OWNER_TAG}")
        cpu = elem.find("cpu")
        features = elem.find("features")
        balloon = elem.find("devices/memballoon")
        serials = elem.findall("devices/serial")

        disks: list[DiskConfig] = []
        interfaces: list[InterfaceConfig] = []
        for disk in elem.findall("devices/disk"):
            try:
                disks.append(DiskConfig.from_element(disk))
            except LibvirtXMLError as exc:
                # A hand-added device must not make the whole domain unreadable; the driver sees it as drift.
                LOG.debug("ignoring disk in domain %s: %s", _text(elem, "name"), exc)
        for iface in elem.findall("devices/interface"):
            try:
                interfaces.append(InterfaceConfig.from_element(iface))
            except LibvirtXMLError as exc:
                LOG.debug("ignoring interface in domain %s: %s", _text(elem, "name"), exc)

        return cls(
            name=_required_text(elem, "name"),
            memory_mib=_bytes_of(memory, "KiB") // _MIB,
            vcpus=int(_required_text(elem, "vcpu")),
            uuid=_text(elem, "uuid"),
            virt_type=virt_type,
            arch=os_type.get("arch", "x86_64"),
            machine=os_type.get("machine", "q35"),
            kernel=_text(elem, "os/kernel"),
            initrd=_text(elem, "os/initrd"),
            cmdline=_text(elem, "os/cmdline"),
            cpu=CpuConfig.from_element(cpu) if cpu is not None else None,
            features=tuple(f.tag for f in features) if features is not None else (),
            on_poweroff=_literal(_text(elem, "on_poweroff") or "destroy", LifecycleAction, "on_poweroff"),
            on_reboot=_literal(_text(elem, "on_reboot") or "restart", LifecycleAction, "on_reboot"),
            on_crash=_literal(_text(elem, "on_crash") or "destroy", LifecycleAction, "on_crash"),
            emulator=_text(elem, "devices/emulator"),
            disks=tuple(disks),
            interfaces=tuple(interfaces),
            serial=SerialConsoleConfig.from_element(serials[0]) if serials else None,
            rng_source=_text(elem, "devices/rng/backend") or None,
            memballoon=balloon is not None and balloon.get("model") != "none",
            metadata=MetadataConfig.from_element(owner) if owner is not None else None,
        )


# ----------------------------------------------------------------------------------------------------
# Storage


@dataclass(frozen=True, kw_only=True)
class StoragePoolConfig(_XMLConfig):
    """The lab's own dir pool, holding its overlays and seeds; owned by name (pools carry no metadata)."""

    ROOT: ClassVar[str] = "pool"

    name: str
    path: str
    uuid: str | None = None
    mode: str | None = None

    def to_element(self) -> ET.Element:
        pool = ET.Element("pool", type="dir")
        _sub(pool, "name", self.name)
        if self.uuid is not None:
            _sub(pool, "uuid", self.uuid)
        target = _sub(pool, "target")
        _sub(target, "path", self.path)
        if self.mode is not None:
            _sub(_sub(target, "permissions"), "mode", self.mode)
        return pool

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        if elem.get("type") != "dir":
            raise LibvirtXMLError(f"unsupported pool type {elem.get('type')!r} (supported: dir)")
        return cls(
            name=_required_text(elem, "name"),
            path=_required_text(elem, "target/path"),
            uuid=_text(elem, "uuid"),
            mode=_text(elem, "target/permissions/mode"),
        )


@dataclass(frozen=True, kw_only=True)
class StorageVolumeConfig(_XMLConfig):
    """A volume in the lab pool, typically a qcow2 overlay whose backingStore is the cached image.

    `path` is where libvirt put it; it is set by parse() and may be left None when creating.
    """

    ROOT: ClassVar[str] = "volume"

    name: str
    capacity_bytes: int
    format: DiskFormat = "qcow2"
    backing_path: str | None = None
    backing_format: DiskFormat = "qcow2"
    path: str | None = None

    def __post_init__(self) -> None:
        if self.capacity_bytes <= 0:
            raise ValueError(f"volume {self.name}: capacity_bytes must be positive")
        if self.backing_path is not None and self.format != "qcow2":
            raise ValueError(f"volume {self.name}: only qcow2 volumes can have a backing store")

    def to_element(self) -> ET.Element:
        vol = ET.Element("volume", type="file")
        _sub(vol, "name", self.name)
        _sub(vol, "capacity", str(self.capacity_bytes), unit="bytes")
        target = _sub(vol, "target")
        if self.path is not None:
            _sub(target, "path", self.path)
        _sub(target, "format", type=self.format)
        if self.backing_path is not None:
            backing = _sub(vol, "backingStore")
            _sub(backing, "path", self.backing_path)
            _sub(backing, "format", type=self.backing_format)
        return vol

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        capacity = elem.find("capacity")
        if capacity is None:
            raise LibvirtXMLError("<volume> has no <capacity>")
        fmt = elem.find("target/format")
        backing_fmt = elem.find("backingStore/format")
        return cls(
            name=_required_text(elem, "name"),
            capacity_bytes=_bytes_of(capacity, "bytes"),
            format=_literal(fmt.get("type") if fmt is not None else "raw", DiskFormat, "volume format"),
            backing_path=_text(elem, "backingStore/path"),
            backing_format=_literal(
                backing_fmt.get("type") if backing_fmt is not None else "qcow2", DiskFormat, "backing format"
            ),
            path=_text(elem, "target/path"),
        )
