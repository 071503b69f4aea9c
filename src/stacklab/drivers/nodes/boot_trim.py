"""What a node image leaves out of every boot: units no lab node needs and cloud-init modules no seed uses.

A TCG VM node has one slow vCPU: everything its boot starts runs on it, and stacklab waits for the end of the
boot (`cloud-init status --wait` needs cloud-final, which is ordered after multi-user.target and so after every
oneshot unit that target wants). `image.generalise` applies both parts to every image, so VM and container nodes
boot the same trimmed rootfs. Units are masked, not removed: `systemctl unmask` gives a node the unit back as the
package shipped it (its enablement links are left alone).
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG = logging.getLogger(__name__)

# (unit, why no lab node needs it at boot)
MASKED_UNITS: tuple[tuple[str, str], ...] = (
    (
        "e2scrub_reap.service",
        "removes snapshots a killed e2scrub left behind; nodes never run e2scrub (its timer is masked below). It ran "
        "at every boot before multi-user.target: 18-75 s under TCG",
    ),
    ("e2scrub_all.timer", "would snapshot and fsck LVM-backed ext4 weekly, volumes cinder owns among them"),
    ("apt-daily.timer", "nodes have no internet; Persistent=true fires it at the first boot after a restore"),
    ("apt-daily-upgrade.timer", "nodes have no internet; Persistent=true fires it at the first boot after a restore"),
    ("dpkg-db-backup.timer", "Persistent=true fires it at the first boot after a restore; nodes are disposable"),
)

CLOUD_MODULES_CFG_NAME = "91-stacklab-modules.cfg"
# cloud-init imports every listed module in each of its four boot stages (a Python process each, 6-9 CPU-seconds
# per stage on a TCG vCPU) and runs the per-instance ones once. The lists are Debian 12's cloud.cfg (22.4) minus
# modules for software and services a lab node has not, and with growpart/resizefs once per instance.
CLOUD_MODULES_CFG = """\
# written by stacklab: the cloud-init modules of lab nodes (Debian's cloud.cfg lists, trimmed).
# Dropped: migrator (no older cloud-init ran here), snap, ssh-import-id and phone-home (no internet), keyboard,
# grub-dpkg (VMs boot their kernel directly; 6.6 s on a TCG first boot), apt-pipelining, byobu,
# disable-ec2-metadata, fan, landscape, lxd, puppet, chef, mcollective, salt-minion, the RMC and RightScale
# modules, install-hotplug (no NIC hotplug), ssh-authkey-fingerprints and keys-to-console (stacklab learns host
# keys over SSH; 1.8 s on a TCG first boot).
cloud_init_modules:
 - seed_random
 - bootcmd
 - write-files
 # the root overlay's size is fixed when the node is made: grow the filesystem at its first boot, not at each
 - [growpart, once-per-instance]
 - [resizefs, once-per-instance]
 - disk_setup
 - mounts
 - set_hostname
 - update_hostname
 - update_etc_hosts
 - ca-certs
 - rsyslog
 - users-groups
 - ssh
cloud_config_modules:
 - locale
 - set-passwords
 - apt-configure
 - ntp
 - timezone
 - runcmd
cloud_final_modules:
 - package-update-upgrade-install
 - write-files-deferred
 - scripts-vendor
 - scripts-per-once
 - scripts-per-boot
 - scripts-per-instance
 - scripts-user
 - final-message
 - power-state-change
"""

_UNIT_DIRS = ("usr/lib/systemd/system", "lib/systemd/system")


def mask_units(rootfs: Path) -> list[str]:
    """Mask (link to /dev/null in /etc/systemd/system) each MASKED_UNITS unit the image ships; returns them."""
    masked = []
    target_dir = rootfs / "etc/systemd/system"
    for unit, _why in MASKED_UNITS:
        if not any((rootfs / folder / unit).exists() for folder in _UNIT_DIRS):
            continue
        target_dir.mkdir(parents=True, exist_ok=True)
        link = target_dir / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
        masked.append(unit)
    LOG.debug("masked at boot: %s", ", ".join(masked) or "nothing")
    return masked


def write_cloud_modules(rootfs: Path) -> bool:
    """Write the trimmed module lists into the image's cloud.cfg.d (False when the image has no cloud-init)."""
    cloud_cfg = rootfs / "etc/cloud/cloud.cfg.d"
    if not cloud_cfg.is_dir():
        return False
    path = cloud_cfg / CLOUD_MODULES_CFG_NAME
    path.write_text(CLOUD_MODULES_CFG)
    path.chmod(0o644)
    return True
