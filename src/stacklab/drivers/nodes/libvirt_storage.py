"""Typed libvirt storage objects: a dir pool and its volumes (qcow2 overlays, raw disks)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import ClassVar, Self

from stacklab.drivers.nodes.libvirt_devices import DiskFormat
from stacklab.drivers.nodes.libvirt_xml import (
    LibvirtXMLError,
    XMLConfig,
    bytes_of,
    literal,
    required_text,
    sub_element,
    text_of,
)


@dataclass(frozen=True, kw_only=True)
class StoragePoolConfig(XMLConfig):
    """The lab's own dir pool, holding its overlays and seeds; owned by name (pools carry no metadata)."""

    ROOT: ClassVar[str] = "pool"

    name: str
    path: str
    uuid: str | None = None
    mode: str | None = None

    def to_element(self) -> ET.Element:
        pool = ET.Element("pool", type="dir")
        sub_element(pool, "name", self.name)
        if self.uuid is not None:
            sub_element(pool, "uuid", self.uuid)
        target = sub_element(pool, "target")
        sub_element(target, "path", self.path)
        if self.mode is not None:
            sub_element(sub_element(target, "permissions"), "mode", self.mode)
        return pool

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        if elem.get("type") != "dir":
            raise LibvirtXMLError(f"unsupported pool type {elem.get('type')!r} (supported: dir)")
        return cls(
            name=required_text(elem, "name"),
            path=required_text(elem, "target/path"),
            uuid=text_of(elem, "uuid"),
            mode=text_of(elem, "target/permissions/mode"),
        )


@dataclass(frozen=True, kw_only=True)
class StorageVolumeConfig(XMLConfig):
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
        sub_element(vol, "name", self.name)
        sub_element(vol, "capacity", str(self.capacity_bytes), unit="bytes")
        target = sub_element(vol, "target")
        if self.path is not None:
            sub_element(target, "path", self.path)
        sub_element(target, "format", type=self.format)
        if self.backing_path is not None:
            backing = sub_element(vol, "backingStore")
            sub_element(backing, "path", self.backing_path)
            sub_element(backing, "format", type=self.backing_format)
        return vol

    @classmethod
    def from_element(cls, elem: ET.Element) -> Self:
        capacity = elem.find("capacity")
        if capacity is None:
            raise LibvirtXMLError("<volume> has no <capacity>")
        fmt = elem.find("target/format")
        backing_fmt = elem.find("backingStore/format")
        return cls(
            name=required_text(elem, "name"),
            capacity_bytes=bytes_of(capacity, "bytes"),
            format=literal(fmt.get("type") if fmt is not None else "raw", DiskFormat, "volume format"),
            backing_path=text_of(elem, "backingStore/path"),
            backing_format=literal(
                backing_fmt.get("type") if backing_fmt is not None else "qcow2", DiskFormat, "backing format"
            ),
            path=text_of(elem, "target/path"),
        )
