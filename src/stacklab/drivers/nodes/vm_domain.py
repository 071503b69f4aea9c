"""Pure parts of a VM node: libvirt names, the on-disk layout, and the domain config built from a node spec
(golden-tested)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacklab.drivers.nodes.libvirt_config import CpuConfig, DomainConfig, DomainType, MetadataConfig
from stacklab.drivers.nodes.libvirt_devices import DiskConfig, InterfaceConfig, SerialConsoleConfig
from stacklab.errors import PlanError
from stacklab.plan.naming import disk_serial

LOG = logging.getLogger(__name__)

SSH_USER = "root"
SSH_PORT = 22

GIB = 1024**3
MIB = 1024**2
ROOT_DISK_BYTES = 8 * GIB  # overlay size; cloud-init's resizefs grows the root filesystem to it
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"


def domain_name(lab: str, node: str) -> str:
    return f"stacklab-{lab}-{node}"


def pool_name(lab: str) -> str:
    return f"stacklab-{lab}"


@dataclass(frozen=True)
class VmLayout:
    """Where one node's files live under the lab state dir."""

    state_dir: Path
    node: str

    @property
    def vm_dir(self) -> Path:
        return self.state_dir / "vm"

    @property
    def pool_dir(self) -> Path:
        return self.vm_dir / "pool"

    @property
    def node_dir(self) -> Path:
        return self.vm_dir / self.node

    @property
    def console_log(self) -> Path:
        return self.node_dir / "console.log"

    @property
    def volume_prefix(self) -> str:
        return f"{self.node}."

    @property
    def root_volume(self) -> str:
        return f"{self.node}.root.qcow2"

    @property
    def seed_volume(self) -> str:
        return f"{self.node}.seed.iso"

    def data_volume(self, disk: str) -> str:
        return f"{self.node}.disk-{disk}.qcow2"

    def path(self, volume: str) -> Path:
        return self.pool_dir / volume


def choose_virt_type(accel: str, kvm_usable: bool | None) -> DomainType:
    """'kvm' only when the spec asks for it and the probe did not find KVM unable to run guests."""
    if accel == "kvm" and kvm_usable is not False:
        return "kvm"
    if accel == "kvm":
        LOG.warning("spec asks for KVM but the host probe says KVM cannot run guests; using TCG")
    return "qemu"


def image_hash_of_kernel(kernel: str | None) -> str | None:
    """The image hash a domain boots, read from its kernel path (`.../vm-<hash>/vmlinuz`, see vm_disk)."""
    if not kernel:
        return None
    parent = Path(kernel).parent.name
    return parent.removeprefix("vm-") if parent.startswith("vm-") else None


def _vd(index: int) -> str:
    if not 0 <= index < 26:
        raise ValueError(f"too many disks for one VM ({index + 1}); at most 26")
    return f"vd{chr(ord('a') + index)}"


def bare_address(cidr_address: str) -> str:
    return cidr_address.split("/", 1)[0]


def node_addresses_of(spec: Mapping[str, Any]) -> dict[str, str]:
    return {str(nic["network"]): bare_address(str(nic["address"])) for nic in spec.get("nics", [])}


def mgmt_address(spec: Mapping[str, Any]) -> str:
    """The address SSH uses: the node's first NIC (the lab's management network)."""
    nics = spec.get("nics", [])
    if not nics:
        raise PlanError("a VM node needs at least one NIC (SSH and cloud-init readiness go over it)")
    return bare_address(str(nics[0]["address"]))


def disk_devices(spec: Mapping[str, Any]) -> dict[str, str]:
    """Data disk name -> guest device: vda is the root disk, data disks follow in spec order, the seed is last."""
    return {str(d["name"]): f"/dev/{_vd(i + 1)}" for i, d in enumerate(spec.get("disks", []))}


def build_domain(
    *,
    lab: str,
    node: str,
    spec: Mapping[str, Any],
    spec_hash: str,
    layout: VmLayout,
    kernel: str,
    initrd: str,
    virt_type: DomainType,
) -> DomainConfig:
    """The domain a node spec asks for (pure; the golden tests pin its XML)."""
    disks = [DiskConfig(target_dev="vda", path=str(layout.path(layout.root_volume)), driver_format="qcow2")]
    for index, disk in enumerate(spec.get("disks", []), start=1):
        name = str(disk["name"])
        disks.append(
            DiskConfig(
                target_dev=_vd(index),
                path=str(layout.path(layout.data_volume(name))),
                driver_format="qcow2",
                serial=disk_serial(name),  # the guest sees plan.naming.disk_device(name)
            )
        )
    disks.append(
        DiskConfig(
            target_dev=_vd(len(disks)),
            path=str(layout.path(layout.seed_volume)),
            driver_format="raw",
            readonly=True,
        )
    )
    interfaces = tuple(
        InterfaceConfig(
            source_bridge=str(nic["bridge"]),
            mac=str(nic["mac"]),
            target_dev=str(nic["host_ifname"]),
            mtu=int(nic["mtu"]) if nic.get("mtu") else None,
        )
        for nic in spec.get("nics", [])
    )
    cpu = CpuConfig(mode="host-passthrough", model=None) if virt_type == "kvm" else CpuConfig()
    return DomainConfig(
        name=domain_name(lab, node),
        memory_mib=int(spec["memory_mib"]),
        vcpus=int(spec.get("cpus", 1)),
        virt_type=virt_type,
        kernel=kernel,
        initrd=initrd,
        cmdline=CMDLINE,
        cpu=cpu,
        disks=tuple(disks),
        interfaces=interfaces,
        serial=SerialConsoleConfig(log_file=str(layout.console_log)),
        metadata=MetadataConfig(lab=lab, node=node, spec_hash=spec_hash),
    )


def vm_outputs(
    *,
    domain: str,
    virt_type: DomainType,
    spec: Mapping[str, Any],
    layout: VmLayout,
    key_file: str,
    ready_seconds: float,
    pool: str,
    uri: str,
) -> dict[str, Any]:
    return {
        "kind": "vm",
        "domain": domain,
        "accel": "kvm" if virt_type == "kvm" else "tcg",
        "addresses": node_addresses_of(spec),
        "ssh": {"host": mgmt_address(spec), "user": SSH_USER, "port": SSH_PORT, "key": key_file},
        "console_log": str(layout.console_log),
        "ready_seconds": round(ready_seconds, 2),
        "disks": disk_devices(spec),
        "pool": pool,
        "uri": uri,
    }
