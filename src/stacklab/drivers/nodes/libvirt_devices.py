"""Typed libvirt device objects: disks (file, block, network with auth and hosts), NICs on a bridge, the serial
console."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import ClassVar, Literal, Self, cast

from stacklab.drivers.nodes.libvirt_xml import (
    LibvirtXMLError,
    XMLConfig,
    bool_attr,
    int_attr,
    literal,
    required_attr,
    sub_element,
    text_of,
)

DiskSource = Literal["file", "block", "network"]


DiskDevice = Literal["disk", "cdrom"]


DiskFormat = Literal["qcow2", "raw"]


NetworkProtocol = Literal["rbd", "iscsi", "nfs"]


SecretType = Literal["ceph", "iscsi"]


HostTransport = Literal["tcp", "unix", "rdma", None]


MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# Kernel interface names are at most 15 bytes; libvirt drops target names with its own reserved prefixes.
IFNAME_MAX = 15


RESERVED_TAP_PREFIXES = ("vnet", "vif", "macvtap", "macvlan")


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
class DiskConfig(XMLConfig):
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
        driver = sub_element(disk, "driver", name="qemu", type=self.driver_format)
        if self.cache is not None:
            driver.set("cache", self.cache)
        if self.auth is not None:
            auth = sub_element(disk, "auth", username=self.auth.username)
            secret = sub_element(auth, "secret", type=self.auth.secret_type)
            if self.auth.secret_uuid is not None:
                secret.set("uuid", self.auth.secret_uuid)
            else:
                secret.set("usage", cast(str, self.auth.secret_usage))
        if self.source_type == "file":
            sub_element(disk, "source", file=self.path)
        elif self.source_type == "block":
            sub_element(disk, "source", dev=self.path)
        else:
            source = sub_element(disk, "source", protocol=cast(str, self.protocol), name=self.path)
            for host in self.hosts:
                host_elem = sub_element(source, "host", name=host.name)
                if host.port is not None:
                    host_elem.set("port", str(host.port))
                if host.transport is not None:
                    host_elem.set("transport", host.transport)
            if self.protocol == "nfs":
                # libvirt's schema requires <identity> on nfs sources, even with no attributes.
                identity = sub_element(source, "identity")
                if self.nfs_user is not None:
                    identity.set("user", self.nfs_user)
                if self.nfs_group is not None:
                    identity.set("group", self.nfs_group)
        sub_element(disk, "target", dev=self.target_dev, bus=self.bus)
        if self.readonly:
            sub_element(disk, "readonly")
        if self.serial is not None:
            sub_element(disk, "serial", self.serial)
        return disk

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        source_type: DiskSource = literal(elem.get("type"), DiskSource, "disk type")
        target = elem.find("target")
        source = elem.find("source")
        if target is None or source is None:
            raise LibvirtXMLError("<disk> needs <source> and <target>")
        driver = elem.find("driver")
        protocol: NetworkProtocol | None = None
        hosts: tuple[DiskHost, ...] = ()
        identity = source.find("identity")
        if source_type == "file":
            path = required_attr(source, "file")
        elif source_type == "block":
            path = required_attr(source, "dev")
        else:
            protocol = literal(source.get("protocol"), NetworkProtocol, "network disk protocol")
            path = required_attr(source, "name")
            hosts = tuple(
                DiskHost(
                    name=required_attr(h, "name"),
                    port=int_attr(h, "port"),
                    transport=literal(h.get("transport"), HostTransport, "host transport"),
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
                username=required_attr(auth_elem, "username"),
                secret_type=literal(secret.get("type"), SecretType, "secret type"),
                secret_uuid=secret.get("uuid"),
                secret_usage=secret.get("usage"),
            )
        return cls(
            target_dev=required_attr(target, "dev"),
            source_type=source_type,
            path=path,
            driver_format=literal(
                driver.get("type", "raw") if driver is not None else "raw", DiskFormat, "disk format"
            ),
            bus=target.get("bus", "virtio"),
            device=literal(elem.get("device", "disk"), DiskDevice, "disk device"),
            readonly=elem.find("readonly") is not None,
            cache=driver.get("cache") if driver is not None else None,
            serial=text_of(elem, "serial"),
            protocol=protocol,
            hosts=hosts,
            auth=auth,
            nfs_user=identity.get("user") if identity is not None else None,
            nfs_group=identity.get("group") if identity is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class InterfaceConfig(XMLConfig):
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
        if not MAC_RE.match(self.mac):
            raise ValueError(f"invalid MAC address {self.mac!r}")
        if self.target_dev is not None:
            if len(self.target_dev) > IFNAME_MAX:
                raise ValueError(f"tap name {self.target_dev!r} is longer than {IFNAME_MAX} characters")
            if self.target_dev.startswith(RESERVED_TAP_PREFIXES):
                raise ValueError(f"tap name {self.target_dev!r} uses a prefix libvirt reserves and discards")

    def to_element(self) -> ET.Element:
        iface = ET.Element("interface", type="bridge")
        sub_element(iface, "mac", address=self.mac)
        sub_element(iface, "source", bridge=self.source_bridge)
        if self.target_dev is not None:
            sub_element(iface, "target", dev=self.target_dev)
        sub_element(iface, "model", type=self.model)
        if self.mtu is not None:
            sub_element(iface, "mtu", size=str(self.mtu))
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
            source_bridge=required_attr(source, "bridge"),
            mac=required_attr(mac, "address"),
            model=model.get("type", "virtio") if model is not None else "virtio",
            target_dev=target.get("dev") if target is not None else None,
            mtu=int_attr(mtu, "size") if mtu is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class SerialConsoleConfig(XMLConfig):
    """A pty serial port whose output virtlogd also copies to `log_file`, so each node's console is on disk.

    `append` keeps earlier boots' output across restarts (libvirt truncates the log otherwise).
    """

    ROOT: ClassVar[str] = "serial"

    log_file: str
    append: bool = True
    port: int = 0

    def to_element(self) -> ET.Element:
        serial = ET.Element("serial", type="pty")
        sub_element(serial, "log", file=self.log_file, append="on" if self.append else "off")
        sub_element(serial, "target", port=str(self.port))
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
            log_file=required_attr(log, "file"),
            append=bool_attr(log.get("append")),
            port=int(target.get("port", "0")) if target is not None else 0,
        )
