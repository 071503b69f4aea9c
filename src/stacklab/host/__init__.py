"""Host capability detection (what `stacklab doctor` reports) and the choice of implementation per role."""

from stacklab.host.capabilities import CgroupLayout, HostReport, find_tools, probe_host
from stacklab.host.choose import ROLES, Choice, choose, choose_all, implementations
from stacklab.host.features import Capability
from stacklab.host.kvm_probe import BOOT_SECTOR, BootProbe, KvmStatus, boot_probe, probe_kvm

__all__ = [
    "BOOT_SECTOR",
    "ROLES",
    "BootProbe",
    "Capability",
    "CgroupLayout",
    "Choice",
    "HostReport",
    "KvmStatus",
    "boot_probe",
    "choose",
    "choose_all",
    "find_tools",
    "implementations",
    "probe_host",
    "probe_kvm",
]
