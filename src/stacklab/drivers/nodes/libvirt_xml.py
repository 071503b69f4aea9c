"""What every typed libvirt object shares: ElementTree helpers, libvirt's scaled-integer units, the XMLConfig base
(to_xml/parse round trip) and LibvirtXMLError."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, ClassVar, Self, get_args

# libvirt's scaled-integer units (docs: formatdomain.html#memory-allocation, formatstorage.html).
UNIT_BYTES: dict[str, int] = {
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


MIB = 1024**2


class LibvirtXMLError(ValueError):
    """libvirt XML that these objects cannot read: malformed, wrong root, or a required part missing."""


def sub_element(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def text_of(elem: ET.Element, path: str) -> str | None:
    found = elem.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def required_text(elem: ET.Element, path: str) -> str:
    value = text_of(elem, path)
    if not value:
        raise LibvirtXMLError(f"<{elem.tag}> has no <{path}>")
    return value


def required_attr(elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None:
        raise LibvirtXMLError(f"<{elem.tag}> has no attribute {name!r}")
    return value


def literal(value: str | None, kind: Any, what: str) -> Any:
    """Check a string against a Literal type, so parse() never builds an object to_xml() could not render.

    Returns Any because a Literal alias is not a class mypy can bind a TypeVar to; the caller's field type
    is what mypy checks.
    """
    allowed: tuple[str | None, ...] = get_args(kind)
    if value not in allowed:
        names = ", ".join(a for a in allowed if a is not None)
        raise LibvirtXMLError(f"unsupported {what} {value!r} (supported: {names})")
    return value


def bytes_of(elem: ET.Element, default_unit: str) -> int:
    unit = elem.get("unit", default_unit).lower()
    if unit not in UNIT_BYTES:
        raise LibvirtXMLError(f"<{elem.tag}> has unknown unit {unit!r}")
    text = (elem.text or "").strip()
    if not text.isdigit():
        raise LibvirtXMLError(f"<{elem.tag}> is not a whole number: {text!r}")
    return int(text) * UNIT_BYTES[unit]


def int_attr(elem: ET.Element, name: str) -> int | None:
    value = elem.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise LibvirtXMLError(f"<{elem.tag} {name}=...> is not a whole number: {value!r}")
    return int(value)


def bool_attr(value: str | None) -> bool:
    return value in ("on", "yes")


class XMLConfig:
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
