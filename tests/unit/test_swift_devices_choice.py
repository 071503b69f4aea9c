"""Swift's devices follow the host: the tmpfs user-xattr probe -> the `swift_devices` choice -> the swift spec ->
the rendered server configs and mount units, for both kinds (tmpfs on 6.6+, plain directories before)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.drivers.openstack.swift import ROLE, render_server_conf
from stacklab.drivers.openstack.swift_devices import device_kind, mount_check
from stacklab.errors import PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import LocalRunner
from stacklab.host import Capability, choose
from stacklab.host.xattrs import PROBE_SCRIPT, by_kernel_version, kernel_version, probe_tmpfs_user_xattrs
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import USERSPACE_CHOICES
from stacklab.session import lab_pins
from tests.unit.lab_util import os_lab, service_resource
from tests.unit.test_host_choose import ci_report

UNSHARE = ("unshare", "--mount", "--propagation", "private", "--")

LAB = os_lab(
    "sw",
    """\
nodes:
  ctl1: {image: os, nics: {mgmt: {address: 10.250.0.10}, storage: {address: 10.251.0.10}}, roles: [controller]}
  s1: {image: os, nics: {mgmt: {address: 10.250.0.21}, storage: {address: 10.251.0.21}}, roles: [swift]}
  s2: {image: os, nics: {mgmt: {address: 10.250.0.22}, storage: {address: 10.251.0.22}}, roles: [swift]}
openstack:
  services: [mariadb, memcached, keystone, swift]
  swift: {replicas: 2, devices: 2%s}
""",
)


def swift_layout_for(choices: dict[str, str], pin: str = "") -> ServiceLayout:
    lab = load_lab_text(LAB % pin, "sw.yml")
    return service_layout(service_resource(lab, "swift", choices), "sw")


# -- the probe ------------------------------------------------------------------------------------------------


def test_a_tmpfs_that_takes_the_xattr_is_available() -> None:
    runner = FakeRunner().expect(UNSHARE, rc=0)
    cap = probe_tmpfs_user_xattrs(runner, "6.18.4", python="/usr/bin/python3")
    assert cap.available and "took and returned Swift-sized user xattrs" in cap.detail
    [argv] = runner.calls
    assert argv == (*UNSHARE, "/usr/bin/python3", "-c", PROBE_SCRIPT)


def test_a_tmpfs_that_refuses_the_xattr_is_not_available_and_says_why() -> None:
    runner = FakeRunner().expect(UNSHARE, rc=3, stderr="Operation not supported\n")
    cap = probe_tmpfs_user_xattrs(runner, "6.1.0-28-amd64")
    assert not cap.available
    assert cap.detail == (
        "a fresh tmpfs refused a user xattr: Operation not supported (Linux 6.1.0-28-amd64; tmpfs holds them from 6.6)"
    )


@pytest.mark.parametrize(("release", "available"), [("6.1.0-28-amd64", False), ("6.6.0", True), ("6.18.44", True)])
def test_a_probe_that_cannot_run_falls_back_to_the_kernel_version(release: str, available: bool) -> None:
    runner = FakeRunner().expect(UNSHARE, rc=1, stderr="unshare: unshare failed: Operation not permitted\n")
    cap = probe_tmpfs_user_xattrs(runner, release)
    assert cap.available is available
    assert "by version: the probe failed: unshare: unshare failed: Operation not permitted" in cap.detail
    assert kernel_version("weird") is None and not by_kernel_version("weird", "x").available


@pytest.mark.skipif(os.geteuid() != 0, reason="the real probe mounts a tmpfs in a private namespace (root)")
def test_the_real_probe_leaves_no_mount_behind() -> None:
    before = Path("/proc/self/mountinfo").read_text()
    cap = probe_tmpfs_user_xattrs(LocalRunner(), os.uname().release)
    assert Path("/proc/self/mountinfo").read_text() == before
    assert "stacklab-xattr-probe" not in Path("/proc/mounts").read_text()
    version = kernel_version(os.uname().release)
    assert version is not None
    assert cap.available is (version >= (6, 6)), cap.detail


# -- probe -> choice ------------------------------------------------------------------------------------------


def test_the_choice_follows_the_probe() -> None:
    refused = Capability(False, "a fresh tmpfs refused a user xattr: Operation not supported")
    old = dataclasses.replace(ci_report(), tmpfs_user_xattrs=refused)
    choice = choose(old, "swift_devices")
    assert choice.implementation == "directory"
    assert "mount_check off" in choice.reason and "refused a user xattr" in choice.reason
    assert choice.unavailable == (("tmpfs", f"Swift keeps object metadata in user xattrs: {refused.detail}"),)
    with pytest.raises(PlanError, match=r"swift_devices: tmpfs cannot run on this host: .*refused a user xattr"):
        choose(old, "swift_devices", pinned="tmpfs")

    new = dataclasses.replace(ci_report(), tmpfs_user_xattrs=Capability(True, "took it"))
    choice = choose(new, "swift_devices")
    assert (choice.implementation, choice.alternatives) == ("tmpfs", ("directory",))
    assert choose(new, "swift_devices", pinned="directory").implementation == "directory"


def test_the_lab_pins_the_kind_only_for_a_lab_with_swift() -> None:
    assert lab_pins(load_lab_text(LAB % "", "sw.yml")) == {}
    assert lab_pins(load_lab_text(LAB % ", device_kind: directory", "sw.yml")) == {"swift_devices": "directory"}
    no_swift = (LAB % ", device_kind: tmpfs").replace("keystone, swift]", "keystone]")
    assert lab_pins(load_lab_text(no_swift, "sw.yml")) == {}


# -- choice -> spec -> rendered config ------------------------------------------------------------------------


def test_tmpfs_devices_keep_the_spec_they_had_and_are_checked_mount_points() -> None:
    swift = swift_layout_for(dict(USERSPACE_CHOICES))
    assert "device_kind" not in swift.config  # labs up before the choice plan no change
    assert device_kind(swift) == "tmpfs" and mount_check(swift)
    assert "mount_check = true\n" in render_server_conf(swift, "object", "10.251.0.21")
    files = ROLE._storage_files(swift, "10.251.0.21", "h" * 32, ("64062", "64063"))
    units = sorted(p for p in files if p.endswith(".mount"))
    assert units == ["/etc/systemd/system/srv-node-d1.mount", "/etc/systemd/system/srv-node-d2.mount"]
    assert "Type=tmpfs\n" in files[units[0]]


def test_directory_devices_are_recorded_unchecked_and_have_no_mount_units() -> None:
    for swift in (
        swift_layout_for({**USERSPACE_CHOICES, "swift_devices": "directory"}),  # chosen by the host
        swift_layout_for(dict(USERSPACE_CHOICES), ", device_kind: directory"),  # pinned by the lab
    ):
        assert swift.config["device_kind"] == "directory"
        assert device_kind(swift) == "directory" and not mount_check(swift)
        for server in ("account", "container", "object"):
            conf = render_server_conf(swift, server, "10.251.0.21")
            assert "mount_check = false\n" in conf and "devices = /srv/node\n" in conf
        files = ROLE._storage_files(swift, "10.251.0.21", "h" * 32, ("64062", "64063"))
        assert not [p for p in files if p.endswith(".mount")]
