"""What images leave out of a node's boot: masked units and the trimmed cloud-init module lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stacklab.drivers.nodes.boot_trim import (
    CLOUD_MODULES_CFG,
    CLOUD_MODULES_CFG_NAME,
    MASKED_UNITS,
    mask_units,
    write_cloud_modules,
)
from stacklab.drivers.nodes.image import generalise
from stacklab.drivers.nodes.seed import render_nocloud

# Debian 12's /etc/cloud/cloud.cfg (cloud-init 22.4.2-1+deb12u4), the lists the trimmed ones replace.
DEBIAN_LISTS = {
    "cloud_init_modules": "migrator seed_random bootcmd write-files growpart resizefs disk_setup mounts set_hostname "
    "update_hostname update_etc_hosts ca-certs rsyslog users-groups ssh",
    "cloud_config_modules": "snap ssh-import-id keyboard locale set-passwords grub-dpkg apt-pipelining apt-configure "
    "ntp timezone disable-ec2-metadata runcmd byobu",
    "cloud_final_modules": "package-update-upgrade-install fan landscape lxd write-files-deferred puppet chef "
    "mcollective salt-minion reset_rmc refresh_rmc_and_interface rightscale_userdata scripts-vendor scripts-per-once "
    "scripts-per-boot scripts-per-instance scripts-user ssh-authkey-fingerprints keys-to-console install-hotplug "
    "phone-home final-message power-state-change",
}

# Every top-level key of the shipped user-data template and the module that acts on it.
USER_DATA_KEYS = {
    "hostname": "set_hostname",
    "preserve_hostname": "set_hostname",
    "manage_etc_hosts": "update_etc_hosts",
    "locale": "locale",
    "disable_root": "ssh",
    "ssh_deletekeys": "ssh",
    "ssh_genkeytypes": "ssh",
    "ssh_authorized_keys": "ssh",
    "apt": "apt-configure",
    "package_update": "package-update-upgrade-install",
    "package_upgrade": "package-update-upgrade-install",
    "write_files": "write-files",
}


def _lists() -> dict[str, list[Any]]:
    data = yaml.safe_load(CLOUD_MODULES_CFG)
    assert set(data) == set(DEBIAN_LISTS)
    return {stage: list(mods) for stage, mods in data.items()}


def _name(item: Any) -> str:
    return str(item[0] if isinstance(item, list) else item)


def test_trimmed_lists_keep_debians_modules_and_order() -> None:
    # a misspelt or foreign name would only be a warning in the guest's cloud-init.log, and the module not run
    for stage, mods in _lists().items():
        names = [_name(m) for m in mods]
        debian = DEBIAN_LISTS[stage].split()
        assert names == [m for m in debian if m in names], stage


def test_growpart_and_resizefs_run_once_per_instance() -> None:
    init = _lists()["cloud_init_modules"]
    assert ["growpart", "once-per-instance"] in init and ["resizefs", "once-per-instance"] in init
    assert all(item[1] == "once-per-instance" for item in init if isinstance(item, list))


def test_every_user_data_key_has_its_module_kept(tmp_path: Path) -> None:
    files = render_nocloud(
        lab_name="t",
        node_name="vm1",
        node_spec={
            "nics": [{"network": "mgmt", "device": "eth0", "mac": "02:00:00:00:00:01", "address": "10.0.0.5/24"}]
        },
        public_key="ssh-ed25519 AAAAC3Nza stacklab-t",
        hosts={"vm1": "10.0.0.5"},
    )
    keys = set(yaml.safe_load(files["user-data"]))
    assert keys <= set(USER_DATA_KEYS), f"user-data keys without a known module: {keys - set(USER_DATA_KEYS)}"
    kept = {_name(m) for mods in _lists().values() for m in mods}
    assert {USER_DATA_KEYS[k] for k in keys} <= kept


def _ship(rootfs: Path, *units: str) -> None:
    folder = rootfs / "usr/lib/systemd/system"
    folder.mkdir(parents=True, exist_ok=True)
    for unit in units:
        (folder / unit).write_text("[Unit]\n")


def test_mask_units_masks_what_the_image_ships_only(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    _ship(rootfs, "e2scrub_reap.service", "apt-daily.timer")
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "e2scrub_reap.service").symlink_to("/lib/systemd/system/e2scrub_reap.service")
    (rootfs / "etc/systemd/system/apt-daily.timer").write_text("[Timer]\n")  # a local copy: masked all the same
    assert mask_units(rootfs) == ["e2scrub_reap.service", "apt-daily.timer"]
    etc = rootfs / "etc/systemd/system"
    for unit in ("e2scrub_reap.service", "apt-daily.timer"):
        assert (etc / unit).readlink() == Path("/dev/null")
    assert not (etc / "e2scrub_all.timer").is_symlink()  # not shipped: nothing to mask
    # the enablement link stays, so `systemctl unmask` restores the unit as shipped
    assert (wants / "e2scrub_reap.service").is_symlink()
    assert mask_units(rootfs) == ["e2scrub_reap.service", "apt-daily.timer"]  # idempotent


def test_generalise_trims_the_boot(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    _ship(rootfs, *(unit for unit, _why in MASKED_UNITS))
    (rootfs / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    generalise(rootfs)
    assert all((rootfs / "etc/systemd/system" / unit).readlink() == Path("/dev/null") for unit, _ in MASKED_UNITS)
    written = rootfs / "etc/cloud/cloud.cfg.d" / CLOUD_MODULES_CFG_NAME
    assert written.read_text() == CLOUD_MODULES_CFG and written.stat().st_mode & 0o777 == 0o644


def test_no_cloud_init_no_module_lists(tmp_path: Path) -> None:
    assert write_cloud_modules(tmp_path) is False
    assert not (tmp_path / "etc").exists()
