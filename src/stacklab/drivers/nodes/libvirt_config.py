"""Typed config objects for libvirt XML: the domain (with its metadata mark and CPU), built from the devices of
libvirt_devices.py; dir pools and volumes are in libvirt_storage.py, the shared XML base in libvirt_xml.py.

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
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

from stacklab.drivers.nodes.libvirt_devices import DiskConfig, InterfaceConfig, SerialConsoleConfig
from stacklab.drivers.nodes.libvirt_xml import (
    MIB,
    LibvirtXMLError,
    XMLConfig,
    bytes_of,
    literal,
    required_attr,
    required_text,
    sub_element,
    text_of,
)

LOG = logging.getLogger(__name__)

METADATA_NS = "https://stacklab.dev/xmlns/domain/1"
METADATA_PREFIX = "stacklab"
# ElementTree picks prefixes from a global registry; without this the mark would serialise as `ns0:owner`.
ET.register_namespace(METADATA_PREFIX, METADATA_NS)
OWNER_TAG = f"{{{METADATA_NS}}}owner"

DomainType = Literal["qemu", "kvm"]
CpuMode = Literal["custom", "host-model", "host-passthrough", "maximum"]
LifecycleAction = Literal["destroy", "restart", "preserve", "rename-restart"]


# ----------------------------------------------------------------------------------------------------
# Small XML helpers


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
    owner = root.find(f"metadata/{OWNER_TAG}")
    if owner is None:
        return None
    lab, node = owner.get("lab"), owner.get("node")
    if not lab or not node:
        LOG.warning("domain %s has a stacklab mark without lab/node; treating it as not owned", text_of(root, "name"))
        return None
    return lab, node


# ----------------------------------------------------------------------------------------------------
# Devices


# ----------------------------------------------------------------------------------------------------
# Domain


@dataclass(frozen=True, kw_only=True)
class MetadataConfig(XMLConfig):
    """The ownership mark: `<stacklab:owner lab=... node=.../>` in stacklab's own XML namespace.

    It is the only element in the namespace, so libvirt's metadata API can read and replace it on a defined
    domain: `dom.setMetadata(VIR_DOMAIN_METADATA_ELEMENT, m.to_metadata_api_xml(), METADATA_PREFIX,
    METADATA_NS, flags)`, and `parse(dom.metadata(VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS))`. `spec_hash`
    lets observe() spot a domain defined from an older spec without re-deriving its XML.
    """

    ROOT: ClassVar[str] = OWNER_TAG
    # libvirt's metadata API hands the element back without its namespace (the uri was the lookup key).
    ROOT_ALIASES: ClassVar[tuple[str, ...]] = ("owner",)

    lab: str
    node: str
    spec_hash: str | None = None

    def to_element(self) -> ET.Element:
        return self._owner_element(OWNER_TAG)

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
            lab=required_attr(elem, "lab"),
            node=required_attr(elem, "node"),
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
            sub_element(cpu, "model", self.model, fallback="allow")
        return cpu

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        mode: CpuMode = literal(elem.get("mode", "custom"), CpuMode, "cpu mode")
        return cls(mode=mode, model=text_of(elem, "model") if mode == "custom" else None)


@dataclass(frozen=True, kw_only=True)
class DomainConfig(XMLConfig):
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
        sub_element(dom, "name", self.name)
        if self.uuid is not None:
            sub_element(dom, "uuid", self.uuid)
        if self.metadata is not None:
            sub_element(dom, "metadata").append(self.metadata.to_element())
        sub_element(dom, "memory", str(self.memory_mib), unit="MiB")
        sub_element(dom, "vcpu", str(self.vcpus))

        os_elem = sub_element(dom, "os")
        sub_element(os_elem, "type", "hvm", arch=self.arch, machine=self.machine)
        if self.kernel is not None:
            sub_element(os_elem, "kernel", self.kernel)
            if self.initrd is not None:
                sub_element(os_elem, "initrd", self.initrd)
            if self.cmdline is not None:
                sub_element(os_elem, "cmdline", self.cmdline)
        else:
            sub_element(os_elem, "boot", dev="hd")

        if self.features:
            features = sub_element(dom, "features")
            for name in self.features:
                sub_element(features, name)
        if self.cpu is not None:
            dom.append(self.cpu.to_element())
        sub_element(dom, "on_poweroff", self.on_poweroff)
        sub_element(dom, "on_reboot", self.on_reboot)
        sub_element(dom, "on_crash", self.on_crash)

        devices = sub_element(dom, "devices")
        if self.emulator is not None:
            sub_element(devices, "emulator", self.emulator)
        for disk in self.disks:
            devices.append(disk.to_element())
        for iface in self.interfaces:
            devices.append(iface.to_element())
        if self.serial is not None:
            devices.append(self.serial.to_element())
            # The console is the serial port's twin; libvirt would add it anyway, we say so explicitly.
            console = sub_element(devices, "console", type="pty")
            sub_element(console, "target", type="serial", port=str(self.serial.port))
        if self.rng_source is not None:
            rng = sub_element(devices, "rng", model="virtio")
            sub_element(rng, "backend", self.rng_source, model="random")
        sub_element(devices, "memballoon", model="virtio" if self.memballoon else "none")
        return dom

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        virt_type: DomainType = literal(elem.get("type"), DomainType, "domain type")
        memory = elem.find("memory")
        os_type = elem.find("os/type")
        if memory is None or os_type is None:
            raise LibvirtXMLError("<domain> needs <memory> and <os><type>")
        owner = elem.find(f"metadata/{OWNER_TAG}")
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
                LOG.debug("ignoring disk in domain %s: %s", text_of(elem, "name"), exc)
        for iface in elem.findall("devices/interface"):
            try:
                interfaces.append(InterfaceConfig.from_element(iface))
            except LibvirtXMLError as exc:
                LOG.debug("ignoring interface in domain %s: %s", text_of(elem, "name"), exc)

        return cls(
            name=required_text(elem, "name"),
            memory_mib=bytes_of(memory, "KiB") // MIB,
            vcpus=int(required_text(elem, "vcpu")),
            uuid=text_of(elem, "uuid"),
            virt_type=virt_type,
            arch=os_type.get("arch", "x86_64"),
            machine=os_type.get("machine", "q35"),
            kernel=text_of(elem, "os/kernel"),
            initrd=text_of(elem, "os/initrd"),
            cmdline=text_of(elem, "os/cmdline"),
            cpu=CpuConfig.from_element(cpu) if cpu is not None else None,
            features=tuple(f.tag for f in features) if features is not None else (),
            on_poweroff=literal(text_of(elem, "on_poweroff") or "destroy", LifecycleAction, "on_poweroff"),
            on_reboot=literal(text_of(elem, "on_reboot") or "restart", LifecycleAction, "on_reboot"),
            on_crash=literal(text_of(elem, "on_crash") or "destroy", LifecycleAction, "on_crash"),
            emulator=text_of(elem, "devices/emulator"),
            disks=tuple(disks),
            interfaces=tuple(interfaces),
            serial=SerialConsoleConfig.from_element(serials[0]) if serials else None,
            rng_source=text_of(elem, "devices/rng/backend") or None,
            memballoon=balloon is not None and balloon.get("model") != "none",
            metadata=MetadataConfig.from_element(owner) if owner is not None else None,
        )


# ----------------------------------------------------------------------------------------------------
# Storage
