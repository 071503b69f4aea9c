"""libvirt config objects: golden XML, round trips, libvirt-shaped input, libvirt's test:///default driver.

Regenerate the golden files after an intended change with `STACKLAB_REGEN_GOLDEN=1 pytest <this file>` and
review the diff.
"""

from __future__ import annotations

import dataclasses
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.nodes.libvirt_config import (
    METADATA_NS,
    METADATA_PREFIX,
    CpuConfig,
    DomainConfig,
    MetadataConfig,
    owner_of,
)
from stacklab.drivers.nodes.libvirt_devices import DiskAuth, DiskConfig, DiskHost, InterfaceConfig, SerialConsoleConfig
from stacklab.drivers.nodes.libvirt_storage import StoragePoolConfig, StorageVolumeConfig
from stacklab.drivers.nodes.libvirt_xml import LibvirtXMLError
from stacklab.plan.naming import stable_mac
from tests.golden_util import regenerating

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "libvirt"
LAB = "demo"
STATE = "/var/lib/stacklab/demo"


# ---------------------------------------------------------------------------------------------------------
# Sample objects (what the VM driver will build for a lab node)


def node_domain(name: str = "sl-demo-ctl1", node: str = "ctl1") -> DomainConfig:
    return DomainConfig(
        name=name,
        uuid="6f0c3b1e-8d2a-4c55-9a61-0b7e2f9d4c11",
        memory_mib=1024,
        vcpus=2,
        kernel=f"{STATE}/images/deb12/vmlinuz",
        initrd=f"{STATE}/images/deb12/initrd.img",
        cmdline="root=/dev/vda rw console=ttyS0 net.ifnames=0",
        emulator="/usr/bin/qemu-system-x86_64",
        disks=(
            DiskConfig(target_dev="vda", path=f"{STATE}/pool/{node}.qcow2"),
            DiskConfig(target_dev="vdb", path=f"{STATE}/pool/{node}-seed.iso", driver_format="raw", readonly=True),
        ),
        interfaces=(
            InterfaceConfig(source_bridge="sld-mgmt", mac=stable_mac(LAB, node, 0), target_dev=f"sld-{node}-0"),
            InterfaceConfig(
                source_bridge="sld-stor", mac=stable_mac(LAB, node, 1), target_dev=f"sld-{node}-1", mtu=9000
            ),
        ),
        serial=SerialConsoleConfig(log_file=f"{STATE}/logs/{node}.console.log"),
        metadata=MetadataConfig(lab=LAB, node=node, spec_hash="0123456789abcdef"),
    )


RBD_DISK = DiskConfig(
    target_dev="vdc",
    source_type="network",
    protocol="rbd",
    path="volumes/volume-1",
    driver_format="raw",
    cache="none",
    serial="vol1",
    hosts=(DiskHost(name="10.30.0.11", port=6789), DiskHost(name="10.30.0.12", port=6789)),
    auth=DiskAuth(username="cinder", secret_type="ceph", secret_uuid="2a5b7c1d-3e4f-4a6b-8c9d-0e1f2a3b4c5d"),
)
ISCSI_DISK = DiskConfig(
    target_dev="vdd",
    source_type="network",
    protocol="iscsi",
    path="iqn.2024-01.dev.stacklab:demo-vol2/1",
    driver_format="raw",
    hosts=(DiskHost(name="10.30.0.21", port=3260),),
    auth=DiskAuth(username="chapuser", secret_type="iscsi", secret_usage="demo-chap"),
)
NFS_DISK = DiskConfig(
    target_dev="vde",
    source_type="network",
    protocol="nfs",
    path="/exports/demo/vol3.raw",
    driver_format="raw",
    hosts=(DiskHost(name="10.30.0.31", transport="tcp"),),
    nfs_user="cinder",
)


def storage_domain() -> DomainConfig:
    """A compute-like node with every network disk kind, kvm type and no direct kernel boot."""
    return DomainConfig(
        name="sl-demo-cmp1",
        uuid="0d6b8a7c-1f2e-4d3c-b5a6-978877665544",
        memory_mib=2048,
        virt_type="kvm",
        cpu=CpuConfig(mode="host-passthrough", model=None),
        features=("acpi", "apic"),
        on_reboot="destroy",
        disks=(
            DiskConfig(target_dev="vda", path=f"{STATE}/pool/cmp1.qcow2"),
            DiskConfig(target_dev="vdb", source_type="block", path="/dev/loop7", driver_format="raw"),
            RBD_DISK,
            ISCSI_DISK,
            NFS_DISK,
        ),
        rng_source=None,
        memballoon=True,
        metadata=MetadataConfig(lab=LAB, node="cmp1"),
    )


POOL = StoragePoolConfig(name="sl-demo", path=f"{STATE}/pool", mode="0755")
OVERLAY = StorageVolumeConfig(
    name="ctl1.qcow2", capacity_bytes=4 * 1024**3, backing_path=f"{STATE}/images/deb12/root.qcow2"
)

GOLDEN: dict[str, Callable[[], Any]] = {
    "domain-node": node_domain,
    "domain-network-disks": storage_domain,
    "disk-rbd": lambda: RBD_DISK,
    "pool-dir": lambda: POOL,
    "volume-overlay": lambda: OVERLAY,
    "metadata-owner": lambda: MetadataConfig(lab=LAB, node="ctl1"),
}


def canonical(xml: str) -> str:
    return ET.canonicalize(xml, strip_text=True)


# ---------------------------------------------------------------------------------------------------------
# Golden files and round trips


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_xml(name: str) -> None:
    xml = GOLDEN[name]().to_xml()
    path = GOLDEN_DIR / f"{name}.xml"
    if regenerating():
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(xml + "\n")
    assert path.exists(), f"{path} is missing; create it with STACKLAB_REGEN_GOLDEN=1"
    assert canonical(xml) == canonical(path.read_text()), f"{name}: XML differs from {path}"


def test_no_stale_golden_files() -> None:
    stale = {p.stem for p in GOLDEN_DIR.glob("*.xml")} - set(GOLDEN)
    assert not stale, f"golden files with no test case: {sorted(stale)}"


ROUND_TRIP: list[Any] = [
    node_domain(),
    storage_domain(),
    dataclasses.replace(node_domain(), cpu=CpuConfig(mode="maximum", model=None), serial=None, metadata=None),
    DomainConfig(name="bare", memory_mib=128, cpu=None, features=()),
    RBD_DISK,
    ISCSI_DISK,
    NFS_DISK,
    dataclasses.replace(NFS_DISK, nfs_user=None, nfs_group="64055"),
    DiskConfig(target_dev="sda", path="/x/seed.iso", driver_format="raw", device="cdrom", bus="sata"),
    InterfaceConfig(source_bridge="br0", mac="02:00:00:00:00:01"),
    SerialConsoleConfig(log_file="/x/console.log", append=False, port=1),
    MetadataConfig(lab=LAB, node="ctl1", spec_hash="abc"),
    POOL,
    StoragePoolConfig(name="p", path="/p", uuid="9b1d1f53-9a43-4d4b-8e4e-3f9f0c1b2a3d"),
    OVERLAY,
    StorageVolumeConfig(name="seed.iso", capacity_bytes=376832, format="raw", path="/p/seed.iso"),
]


@pytest.mark.parametrize("obj", ROUND_TRIP, ids=lambda o: f"{type(o).__name__}")
def test_parse_to_xml_round_trip(obj: Any) -> None:
    parsed = type(obj).parse(obj.to_xml())
    assert parsed == obj
    assert canonical(parsed.to_xml()) == canonical(obj.to_xml())


def test_domain_xml_carries_the_mark_in_its_own_namespace() -> None:
    root = ET.fromstring(node_domain().to_xml())
    owner = root.find(f"metadata/{{{METADATA_NS}}}owner")
    assert owner is not None
    assert (owner.get("lab"), owner.get("node")) == (LAB, "ctl1")
    assert f"xmlns:{METADATA_PREFIX}=" in node_domain().to_xml()


# ---------------------------------------------------------------------------------------------------------
# Reading what libvirt writes

# Shaped like `virsh dumpxml` from libvirt 9 / QEMU 7.2 for a running domain: single quotes, KiB, PCI
# addresses, aliases, auth under <source>, a foreign metadata namespace, and devices we do not model.
LIBVIRT_DUMP = """<domain type='qemu' id='3'>
  <name>sl-demo-ctl1</name>
  <uuid>6f0c3b1e-8d2a-4c55-9a61-0b7e2f9d4c11</uuid>
  <metadata>
    <other:thing xmlns:other='https://example.org/other'/>
    <stacklab:owner xmlns:stacklab='https://stacklab.dev/xmlns/domain/1' lab='demo' node='ctl1'/>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource><partition>/machine</partition></resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <kernel>/k/vmlinuz</kernel>
    <cmdline>console=ttyS0</cmdline>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact' check='partial'><model fallback='allow'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/p/ctl1.qcow2' index='2'/>
      <backingStore type='file' index='3'><format type='qcow2'/><source file='/i/root.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='rbd' name='volumes/v1' index='1'>
        <host name='10.30.0.11' port='6789'/>
        <auth username='cinder'><secret type='ceph' uuid='2a5b7c1d-3e4f-4a6b-8c9d-0e1f2a3b4c5d'/></auth>
      </source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='x' volume='y'/>
      <target dev='vdz' bus='virtio'/>
    </disk>
    <controller type='pci' index='0' model='pcie-root'><alias name='pcie.0'/></controller>
    <interface type='bridge'>
      <mac address='02:AB:CD:EF:01:00'/>
      <source bridge='sld-mgmt'/>
      <target dev='sld-ctl1-0'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:00:00:09'/>
      <source network='default'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <log file='/l/ctl1.console.log' append='on'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <log file='/l/ctl1.console.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'/>
</domain>
"""


def test_parse_libvirt_dump() -> None:
    dom = DomainConfig.parse(LIBVIRT_DUMP)
    assert dom.owner == ("demo", "ctl1")
    assert dom.memory_mib == 1024
    assert dom.vcpus == 2
    assert dom.machine == "pc-q35-7.2"
    assert dom.cpu == CpuConfig()
    assert dom.macs == ("02:ab:cd:ef:01:00",)  # lower-cased; the network-type NIC is skipped
    assert [d.target_dev for d in dom.disks] == ["vda", "vdb"]  # the pool-volume disk is skipped
    assert dom.disks[0] == DiskConfig(target_dev="vda", path="/p/ctl1.qcow2")
    rbd = dom.disks[1]
    assert rbd.protocol == "rbd"
    assert rbd.hosts == (DiskHost(name="10.30.0.11", port=6789),)
    assert rbd.auth is not None
    assert rbd.auth.secret_uuid == "2a5b7c1d-3e4f-4a6b-8c9d-0e1f2a3b4c5d"
    assert dom.serial == SerialConsoleConfig(log_file="/l/ctl1.console.log")
    assert dom.rng_source == "/dev/urandom"
    assert not dom.memballoon
    assert owner_of(LIBVIRT_DUMP) == ("demo", "ctl1")


@pytest.mark.parametrize(
    ("unit", "amount", "mib"),
    [("KiB", "524288", 512), ("MiB", "512", 512), ("GiB", "2", 2048), ("bytes", str(256 * 1024**2), 256)],
)
def test_memory_units(unit: str, amount: str, mib: int) -> None:
    xml = LIBVIRT_DUMP.replace("<memory unit='KiB'>1048576</memory>", f"<memory unit='{unit}'>{amount}</memory>")
    assert DomainConfig.parse(xml).memory_mib == mib


# ---------------------------------------------------------------------------------------------------------
# Ownership and MACs


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (f"<stacklab:owner xmlns:stacklab='{METADATA_NS}' lab='a' node='b'/>", ("a", "b")),
        ("", None),
        (f"<stacklab:owner xmlns:stacklab='{METADATA_NS}' lab='a'/>", None),
        ("<owner lab='a' node='b'/>", None),  # no namespace: not our mark
        ("<x:owner xmlns:x='https://stacklab.dev/xmlns/domain/2' lab='a' node='b'/>", None),
    ],
    ids=["marked", "no-metadata", "partial-mark", "no-namespace", "other-namespace"],
)
def test_owner_of(metadata: str, expected: tuple[str, str] | None) -> None:
    xml = f"<domain type='qemu'><name>d</name><metadata>{metadata}</metadata></domain>"
    assert owner_of(xml) == expected


def test_owner_of_rejects_malformed_xml() -> None:
    with pytest.raises(LibvirtXMLError, match="not well-formed"):
        owner_of("<domain><name>d</name>")


# ---------------------------------------------------------------------------------------------------------
# Invalid objects fail at construction, with the offending name in the message


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: dataclasses.replace(node_domain(), cpu=CpuConfig(mode="host-passthrough", model=None)),
            "TCG",
        ),
        (lambda: CpuConfig(mode="custom", model=None), "needs a model"),
        (
            lambda: dataclasses.replace(
                node_domain(), interfaces=(node_domain().interfaces[0], node_domain().interfaces[0])
            ),
            "duplicate MAC",
        ),
        (
            lambda: dataclasses.replace(node_domain(), disks=(node_domain().disks[0],) * 2),
            "duplicate disk target vda",
        ),
        (lambda: DomainConfig(name="d", memory_mib=0), "positive"),
        (lambda: DomainConfig(name="d", memory_mib=64, cmdline="x"), "need a kernel"),
        (lambda: InterfaceConfig(source_bridge="b", mac="02:00:00:00:00"), "invalid MAC"),
        (
            lambda: InterfaceConfig(source_bridge="b", mac=stable_mac("a", "b", 0), target_dev="x" * 16),
            "longer",
        ),
        (
            lambda: InterfaceConfig(source_bridge="b", mac=stable_mac("a", "b", 0), target_dev="vnet3"),
            "reserves",
        ),
        (lambda: DiskConfig(target_dev="vdc", source_type="network", protocol="rbd", path="p/i"), "host"),
        (lambda: DiskConfig(target_dev="vdc", path="/f", protocol="rbd"), "cannot have"),
        (lambda: DiskAuth(username="u", secret_type="ceph"), "exactly one"),
        (lambda: DiskConfig(target_dev="vdc", path="/f", nfs_user="u"), "nfs disks only"),
        (lambda: StorageVolumeConfig(name="v", capacity_bytes=1, format="raw", backing_path="/b"), "qcow2"),
    ],
)
def test_invalid_objects_are_refused(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("cls", "xml", "message"),
    [
        (DomainConfig, "<pool type='dir'/>", "expected <domain>"),
        (DomainConfig, "<domain", "not well-formed"),
        (DomainConfig, "<domain type='xen'><name>d</name><memory>1</memory><os><type/></os></domain>", "xen"),
        (StoragePoolConfig, "<pool type='logical'><name>p</name></pool>", "logical"),
        (InterfaceConfig, "<interface type='network'><source network='default'/></interface>", "network"),
        (SerialConsoleConfig, "<serial type='pty'><target port='0'/></serial>", "not be captured"),
        (
            DiskConfig,
            "<disk type='network'><source protocol='gluster' name='v'/><target dev='vdb'/></disk>",
            "gluster",
        ),
    ],
)
def test_unreadable_xml_is_refused(cls: Any, xml: str, message: str) -> None:
    with pytest.raises(LibvirtXMLError, match=message):
        cls.parse(xml)


# ---------------------------------------------------------------------------------------------------------
# libvirt's test:///default driver: our XML is accepted and what libvirt hands back parses to the same thing


@pytest.fixture
def lv() -> Any:
    """The libvirt module, or a skip naming why it cannot be imported."""
    try:
        import libvirt
    except ImportError as exc:
        pytest.skip(f"libvirt-python cannot be imported ({exc}); install python3-libvirt")
    return libvirt


@pytest.fixture
def conn(lv: Any) -> Iterator[Any]:
    # The test driver's state is shared by every connection in this process; tests use unique names.
    connection = lv.open("test:///default")
    try:
        yield connection
    finally:
        connection.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_libvirt_defines_domain_and_reads_back_owner_and_macs(lv: Any, conn: Any) -> None:
    desired = dataclasses.replace(node_domain(name=unique("sl-demo-ctl1")), uuid=None)
    dom = conn.defineXMLFlags(desired.to_xml(), lv.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        assert not dom.isActive()
        dumped = dom.XMLDesc(0)
        observed = DomainConfig.parse(dumped)
        assert owner_of(dumped) == (LAB, "ctl1")
        assert observed.macs == (stable_mac(LAB, "ctl1", 0), stable_mac(LAB, "ctl1", 1))
        assert observed.uuid == dom.UUIDString()
        # Everything we asked for comes back as we asked it; only the uuid is libvirt's.
        assert observed == dataclasses.replace(desired, uuid=dom.UUIDString())
        # The mark is also reachable through libvirt's metadata API, by namespace.
        mark = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        assert MetadataConfig.parse(mark) == desired.metadata
    finally:
        dom.undefine()


def test_libvirt_defines_domain_with_network_disks(lv: Any, conn: Any) -> None:
    desired = dataclasses.replace(storage_domain(), name=unique("sl-demo-cmp1"), uuid=None)
    dom = conn.defineXMLFlags(desired.to_xml(), lv.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        observed = DomainConfig.parse(dom.XMLDesc(0))
        assert observed.disks == desired.disks
        assert observed.owner == (LAB, "cmp1")
    finally:
        dom.undefine()


@pytest.mark.parametrize("domain", [o for o in ROUND_TRIP if isinstance(o, DomainConfig)], ids=lambda d: f"{d.name}")
def test_every_domain_we_render_passes_libvirts_schema(lv: Any, conn: Any, domain: DomainConfig) -> None:
    dom = conn.defineXMLFlags(
        dataclasses.replace(domain, name=unique(domain.name), uuid=None).to_xml(),
        lv.VIR_DOMAIN_DEFINE_VALIDATE,
    )
    dom.undefine()


def test_libvirt_set_metadata_accepts_our_mark(lv: Any, conn: Any) -> None:
    desired = DomainConfig(name=unique("sl-demo-bare"), memory_mib=128)
    dom = conn.defineXML(desired.to_xml())
    try:
        assert owner_of(dom.XMLDesc(0)) is None
        mark = MetadataConfig(lab=LAB, node="bare", spec_hash="feedface")
        dom.setMetadata(
            lv.VIR_DOMAIN_METADATA_ELEMENT,
            mark.to_metadata_api_xml(),
            METADATA_PREFIX,
            METADATA_NS,
            lv.VIR_DOMAIN_AFFECT_CONFIG,
        )
        assert DomainConfig.parse(dom.XMLDesc(0)).metadata == mark
        assert MetadataConfig.parse(dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)) == mark
    finally:
        dom.undefine()


def test_libvirt_defines_pool_and_overlay_volume(lv: Any, conn: Any) -> None:
    desired_pool = dataclasses.replace(POOL, name=unique("sl-demo"))
    pool = conn.storagePoolDefineXML(desired_pool.to_xml(), lv.VIR_STORAGE_POOL_DEFINE_VALIDATE)
    try:
        observed_pool = StoragePoolConfig.parse(pool.XMLDesc(0))
        assert observed_pool == dataclasses.replace(desired_pool, uuid=pool.UUIDString())
        pool.create(0)  # the test driver keeps pools in memory; nothing is made on disk
        # The test driver refuses VIR_STORAGE_VOL_CREATE_VALIDATE, so the volume is not schema-checked here.
        vol = pool.createXML(OVERLAY.to_xml(), 0)
        try:
            observed_vol = StorageVolumeConfig.parse(vol.XMLDesc(0))
            assert observed_vol == dataclasses.replace(OVERLAY, path=vol.path())
            assert observed_vol.path == f"{POOL.path}/{OVERLAY.name}"
        finally:
            vol.delete(0)
    finally:
        if pool.isActive():
            pool.destroy()
        pool.undefine()
