"""Pure tests of the VM driver's policy: names, virt type, and the domain XML a node spec turns into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.nodes.libvirt_config import DomainConfig, owner_of
from stacklab.drivers.nodes.vm_domain import (
    VmLayout,
    build_domain,
    choose_virt_type,
    disk_devices,
    domain_name,
    mgmt_address,
    pool_name,
    vm_outputs,
)
from stacklab.errors import PlanError
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from tests.golden_util import check_golden

LAB = """
name: vmlab
prefix: svm
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.250.1.0/24}
  storage: {bridge: br-storage, cidr: 10.250.2.0/24, mtu: 9000}
images:
  base: {recipe: debian-12-base}
nodes:
  ceph1:
    kind: vm
    image: base
    cpus: 2
    memory: 1536MiB
    nics:
      mgmt: {address: 10.250.1.21}
      storage: {address: 10.250.2.21}
    disks:
      - {name: osd0, size: 4GiB}
      - {name: osd1, size: 4GiB}
"""

STATE = Path("/var/lib/stacklab/labs/vmlab")


def node_spec(accel: str = "tcg") -> tuple[dict[str, Any], str]:
    lab = load_lab_text(LAB, "vmlab.yml")
    resource = next(r for r in expand(lab, {"node_kind": "vm", "accel": accel}) if r.id == "node/ceph1")
    return dict(resource.spec), resource.hash


def domain_for(spec: dict[str, Any], spec_hash: str, virt_type: Any = "qemu") -> DomainConfig:
    return build_domain(
        lab="vmlab",
        node="ceph1",
        spec=spec,
        spec_hash=spec_hash,
        layout=VmLayout(STATE, "ceph1"),
        kernel="/var/cache/stacklab/images/base/vm-abc/vmlinuz",
        initrd="/var/cache/stacklab/images/base/vm-abc/initrd.img",
        virt_type=virt_type,
    )


def test_domain_xml_from_node_spec_matches_golden() -> None:
    spec, spec_hash = node_spec()
    config = domain_for(spec, "0123456789abcdef")
    check_golden("vm/domain-ceph1-tcg.xml", config.to_xml() + "\n")
    # what libvirt hands back parses into the same object, and the mark says whose it is
    assert DomainConfig.parse(config.to_xml()) == config
    assert owner_of(config.to_xml()) == ("vmlab", "ceph1")
    assert spec_hash  # the real spec hash goes into the mark at apply time


def test_domain_follows_the_spec_not_a_derived_mac() -> None:
    spec, _ = node_spec()
    config = domain_for(spec, "h")
    assert [i.mac for i in config.interfaces] == [n["mac"] for n in spec["nics"]]
    assert [i.target_dev for i in config.interfaces] == [n["host_ifname"] for n in spec["nics"]]
    assert [i.source_bridge for i in config.interfaces] == ["svmbr-mgmt", "svmbr-storage"]
    assert [i.mtu for i in config.interfaces] == [1500, 9000]
    assert config.memory_mib == 1536 and config.vcpus == 2
    # root overlay, data disks in spec order, the cidata seed last, all virtio (no AHCI in the cloud kernel)
    assert [(d.target_dev, Path(d.path).name) for d in config.disks] == [
        ("vda", "ceph1.root.qcow2"),
        ("vdb", "ceph1.disk-osd0.qcow2"),
        ("vdc", "ceph1.disk-osd1.qcow2"),
        ("vdd", "ceph1.seed.iso"),
    ]
    assert {d.bus for d in config.disks} == {"virtio"}
    assert config.disks[-1].readonly and config.disks[-1].driver_format == "raw"
    assert config.cmdline is not None and "root=/dev/vda rw" in config.cmdline and "console=ttyS0" in config.cmdline
    assert config.serial is not None and config.serial.log_file == str(STATE / "vm/ceph1/console.log")


def test_kvm_domain_uses_host_cpu() -> None:
    spec, _ = node_spec("kvm")
    config = domain_for(spec, "h", virt_type=choose_virt_type(spec["accel"], True))
    assert config.virt_type == "kvm"
    assert config.cpu is not None and config.cpu.mode == "host-passthrough"


@pytest.mark.parametrize(
    ("accel", "usable", "expected"),
    [
        ("tcg", None, "qemu"),
        ("tcg", True, "qemu"),
        ("kvm", True, "kvm"),
        ("kvm", None, "kvm"),  # no probe ran: the planner's choice stands
        ("kvm", False, "qemu"),  # libvirt lists kvm, but the probe saw it fail to run a guest
    ],
)
def test_choose_virt_type(accel: str, usable: bool | None, expected: str) -> None:
    assert choose_virt_type(accel, usable) == expected


def test_names_outputs_and_devices() -> None:
    spec, _ = node_spec()
    assert domain_name("vmlab", "ceph1") == "stacklab-vmlab-ceph1"
    assert pool_name("vmlab") == "stacklab-vmlab"
    assert mgmt_address(spec) == "10.250.1.21"
    assert disk_devices(spec) == {"osd0": "/dev/vdb", "osd1": "/dev/vdc"}
    out = vm_outputs(
        domain="stacklab-vmlab-ceph1",
        virt_type="qemu",
        spec=spec,
        layout=VmLayout(STATE, "ceph1"),
        key_file="/k/id_ed25519",
        ready_seconds=61.234,
        pool="stacklab-vmlab",
        uri="qemu:///system",
    )
    assert out["kind"] == "vm" and out["accel"] == "tcg" and out["ready_seconds"] == 61.23
    assert out["addresses"] == {"mgmt": "10.250.1.21", "storage": "10.250.2.21"}
    assert out["ssh"] == {"host": "10.250.1.21", "user": "root", "port": 22, "key": "/k/id_ed25519"}
    assert out["console_log"] == str(STATE / "vm/ceph1/console.log")


def test_a_vm_without_nics_is_refused() -> None:
    with pytest.raises(PlanError, match="at least one NIC"):
        mgmt_address({"nics": []})
