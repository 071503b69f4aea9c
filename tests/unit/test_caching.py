"""Image caching: the lab-file knob (per-compute images_type and zone, nova's [image_cache]) from the model through
the spec to nova.conf and glance's config, and suite `caching`'s conclusions from logs and stat lines, each with
the message a broken cache gives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import glance as svc_glance
from stacklab.drivers.openstack import nova as svc_nova
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.exec.fake import FakeRunner
from stacklab.model import LabError, load_lab_text
from stacklab.model.lab import Lab
from stacklab.plan.expand import expand
from stacklab.plan.resource import spec_hash
from stacklab.suites import caching_checks as cc

LAB = """name: cachelab
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.90.1.0/24}
  storage: {bridge: br-storage, cidr: 10.90.2.0/24}
images:
  os: {recipe: openstack-zed}
nodes:
  ctl1: {kind: container, image: os, nics: [mgmt, storage], roles: [controller]}
  cmp1: {kind: container, image: os, nics: [mgmt, storage], roles: [compute]}
  cmp2: {kind: container, image: os, nics: [mgmt, storage], roles: [compute]}
  cmp3: {kind: container, image: os, nics: [mgmt], roles: [compute]}
storage:
  ceph:
    mons: [cmp1]
    osds: [{node: cmp1, count: 3}]
    pools: [volumes, vms]
    clients: [cinder]
openstack:
  services: [mariadb, rabbitmq, memcached, keystone, glance, placement, neutron, nova]
  nova:
    images_type: rbd
    overrides:
      cmp3: {images_type: qcow2, availability_zone: local-disk}
    image_cache: {manager_interval: 20, remove_unused_original_minimum_age_seconds: 60}
verify:
  suites: [caching, evacuation]
"""
SECRETS = {"db_password": "DB", "rabbit_password": "RABBIT", "user_password": "USER"}


def nova_layout(text: str = LAB) -> ServiceLayout:
    resource = next(r for r in expand(load_lab_text(text, "lab.yml")) if r.id == "service/nova")
    return service_layout(resource, "cachelab")


def problems(text: str) -> list[str]:
    with pytest.raises(LabError) as raised:
        load_lab_text(text, "lab.yml")
    return [f"{i.line}: {i.field}: {i.message}" for i in raised.value.issues]


# -- the knob in the model and the spec ----------------------------------------------------------------------------


def test_the_lab_is_valid_and_says_which_compute_has_local_disks() -> None:
    lab: Lab = load_lab_text(LAB, "lab.yml")
    assert lab.openstack is not None
    nova = lab.openstack.nova
    assert [nova.images_type_of(c) for c in ("cmp1", "cmp2", "cmp3")] == ["rbd", "rbd", "qcow2"]
    assert [nova.zone_of(c) for c in ("cmp1", "cmp2", "cmp3")] == ["nova", "nova", "local-disk"]


def test_the_spec_carries_the_overrides_so_a_change_is_seen() -> None:
    layout = nova_layout()
    assert layout.config["overrides"] == {"cmp3": {"images_type": "qcow2", "availability_zone": "local-disk"}}
    resources = {r.id: r for r in expand(load_lab_text(LAB, "lab.yml"))}
    changed = {r.id: r for r in expand(load_lab_text(LAB.replace("local-disk", "local-ssd"), "lab.yml"))}
    assert spec_hash(resources["service/nova"].spec) != spec_hash(changed["service/nova"].spec)


def test_a_lab_without_the_knob_keeps_the_spec_it_had() -> None:
    # running labs recorded nova's config without these keys: a lab that does not set them plans no change
    plain = LAB.replace(
        "    overrides:\n      cmp3: {images_type: qcow2, availability_zone: local-disk}\n"
        "    image_cache: {manager_interval: 20, remove_unused_original_minimum_age_seconds: 60}\n",
        "",
    ).replace("[caching, evacuation]", "[evacuation]")
    config = nova_layout(plain).config
    assert "overrides" not in config and "image_cache" not in config
    assert set(config) == {"computes", "images_type", "instances_on"}


def test_a_qcow2_compute_without_a_zone_of_its_own_is_refused() -> None:
    text = LAB.replace("{images_type: qcow2, availability_zone: local-disk}", "{images_type: qcow2}")
    assert problems(text) == [
        "23: openstack.nova.overrides.cmp3.images_type: cmp3 keeps its instance disks as qcow2, the lab's computes "
        "as rbd: a boot that names no zone could land on it"
    ]


def test_an_override_names_a_compute() -> None:
    text = LAB.replace("      cmp3: {images_type", "      ctl1: {images_type")
    found = problems(text)
    assert found[0] == "23: openstack.nova.overrides.ctl1: ctl1 is not a nova compute node"
    # and cmp3, no longer qcow2, leaves the caching suite without a compute with local disks
    assert "suite caching needs a compute with local instance disks" in found[1]


def test_evacuation_needs_two_computes_in_the_default_zone() -> None:
    text = LAB.replace("  cmp2: {kind", "  cmp9: {kind").replace("cmp1: {kind", "cmp1: {kind", 1)
    text = text.replace(
        "cmp3: {images_type: qcow2, availability_zone: local-disk}",
        "cmp3: {images_type: qcow2, availability_zone: local-disk}\n      cmp9: {availability_zone: other}",
    )
    with pytest.raises(LabError) as raised:
        load_lab_text(text, "lab.yml")
    (found,) = [i for i in raised.value.issues if "evacuation" in i.message]
    assert (found.message, found.hint) == (
        "evacuation needs two compute nodes",
        "cmp3, cmp9: in a zone of its own; evacuation stays in nova",
    )


def test_the_caching_suite_needs_a_bounded_cache_manager() -> None:
    text = LAB.replace(
        "    image_cache: {manager_interval: 20, remove_unused_original_minimum_age_seconds: 60}\n", ""
    )  # nova's defaults: 2400 s passes, 86400 s minimum age
    (found,) = problems(text)
    assert "suite caching watches nova's cache manager remove an unused base image" in found
    assert "nova's defaults" in found
    off = LAB.replace("manager_interval: 20,", "manager_interval: 20, remove_unused_base_images: false,")
    assert "remove_unused_base_images is off" in problems(off)[0]


# -- what nova and glance are told -------------------------------------------------------------------------------


def test_nova_conf_of_the_local_disk_compute_and_the_scheduler() -> None:
    layout = nova_layout()
    local = svc_nova.render_conf(layout, "cmp3", "10.90.1.13", **SECRETS)
    shared = svc_nova.render_conf(layout, "cmp1", "10.90.1.11", **SECRETS)
    controller = svc_nova.render_conf(layout, "ctl1", "10.90.1.10", **SECRETS)
    assert "images_type = qcow2\n" in local and "images_rbd_pool" not in local and "rbd_secret_uuid" not in local
    assert "images_type = rbd\nimages_rbd_pool = vms\n" in shared
    cache = "[image_cache]\nmanager_interval = 20\nremove_unused_base_images = true\n"
    cache += "remove_unused_original_minimum_age_seconds = 60\n"
    assert local.endswith(cache) and shared.endswith(cache) and "[image_cache]" not in controller
    # a boot that names no zone goes to nova's default zone, and the scheduler enforces zones
    assert "default_schedule_zone = nova\n" in controller
    assert (
        "enabled_filters = ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinity"
        "Filter,ServerGroupAffinityFilter,AvailabilityZoneFilter\n" in controller
    )
    assert svc_nova.zones(layout) == {"local-disk": ["cmp3"]}
    assert svc_nova.compute_outputs(layout)["images_types"] == {"cmp1": "rbd", "cmp2": "rbd", "cmp3": "qcow2"}


def test_the_libvirt_secret_goes_only_to_rbd_computes() -> None:
    layout = nova_layout()
    ctx = DriverContext(lab=load_lab_text(LAB, "lab.yml"), runner=FakeRunner(), state_dir=Path("/x"))
    files = {n: svc_nova.Nova()._files(ctx, layout, n, ("DB", "RABBIT", "USER")) for n in ("cmp1", "cmp3")}
    assert svc_nova.SECRET_XML in files["cmp1"] and svc_nova.SECRET_XML not in files["cmp3"]


def test_the_zone_is_made_once_and_completed_later() -> None:
    created = {"name": "local-disk", "availability_zone": "local-disk", "hosts": []}
    runner = FakeRunner()
    runner.expect(svc_nova.openstack_argv("aggregate", "show"), rc=1, stderr="No aggregate with a name or ID")
    runner.expect(svc_nova.openstack_argv("aggregate", "create"), stdout=json.dumps(created))
    runner.expect(svc_nova.openstack_argv("aggregate", "add", "host", "local-disk", "cmp3"))
    svc_nova.ensure_zone(runner, "local-disk", ["cmp3"])
    assert [c[4:7] for c in runner.calls] == [
        ("aggregate", "show", "local-disk"),
        ("aggregate", "create", "--zone"),
        ("aggregate", "add", "host"),
    ]
    # the next up finds it complete and changes nothing
    again = FakeRunner().expect(
        svc_nova.openstack_argv("aggregate", "show"), stdout=json.dumps({**created, "hosts": ["cmp3"]})
    )
    svc_nova.ensure_zone(again, "local-disk", ["cmp3"])
    assert len(again.calls) == 1
    # the admin password stays in the openrc: never on the argv
    assert all("OS_PASSWORD" not in " ".join(c) for c in runner.calls)


def test_observe_sees_a_zone_aggregate_missing_moved_or_short_of_a_member() -> None:
    def problems(answer: Mapping[str, object] | None) -> list[str]:
        runner = FakeRunner()
        if answer is None:
            runner.expect(svc_nova.openstack_argv("aggregate", "show"), rc=1, stderr="No aggregate")
        else:
            runner.expect(svc_nova.openstack_argv("aggregate", "show"), stdout=json.dumps(answer))
        return svc_nova.zone_problems(runner, "local-disk", ["cmp3"])

    whole = {"name": "local-disk", "availability_zone": "local-disk", "hosts": ["cmp3"]}
    assert problems(whole) == []
    assert problems(None) == ["host aggregate local-disk (availability zone local-disk) is missing"]
    assert problems({**whole, "hosts": []}) == ["cmp3 is not in zone local-disk's host aggregate"]
    assert problems({**whole, "availability_zone": "nova"}) == [
        "host aggregate local-disk has zone 'nova', not 'local-disk'"
    ]


def test_glance_logs_its_cache_hits_and_tees() -> None:
    resource = next(r for r in expand(load_lab_text(LAB, "lab.yml")) if r.id == "service/glance")
    conf = svc_glance.render_conf(service_layout(resource, "cachelab"), "DB", "USER")
    (line,) = [x for x in conf.splitlines() if x.startswith("default_log_levels = ")]
    assert line.endswith(",glance.api.middleware.cache=DEBUG,glance.image_cache=DEBUG")
    assert "amqp=WARN" in line and "keystonemiddleware=WARN" in line  # oslo's defaults are kept
    without = load_lab_text(
        LAB.replace("  nova:\n", "  glance: {cache: false}\n  nova:\n", 1).replace(
            "[caching, evacuation]", "[evacuation]"
        ),
        "lab.yml",
    )
    resource = next(r for r in expand(without) if r.id == "service/glance")
    assert "default_log_levels" not in svc_glance.render_conf(service_layout(resource, "cachelab"), "DB", "USER")


# -- the suite's conclusions, and what a broken cache makes it say -------------------------------------------------

IMAGE = "0b6f3c3e-2f0e-4d55-9a43-5a0c2f1b7e11"
KERNEL = "5d1c8a8b-8f3b-4e0d-9d7e-1f2a3b4c5d6e"
# glance-api's access log as eventlet writes it through oslo.log (the format of Zed's glance-api.log)
ACCESS = (
    "2026-12-06 17:01:02.345 412 INFO eventlet.wsgi.server [None req-1 admin admin - - default default] "
    '10.90.1.13,10.90.1.13 - - [06/Dec/2026 17:01:02] "GET /v2/images/{id}/file HTTP/1.1" 200 {n} 0.412345\n'
)


def access(image_id: str, client: str = "10.90.1.13", length: int = 1048576, status: int = 200) -> str:
    return (
        ACCESS.replace("10.90.1.13,10.90.1.13", f"{client},{client}")
        .format(id=image_id, n=length)
        .replace(" 200 ", f" {status} ", 1)
    )


def test_glance_access_log_lines_are_read() -> None:
    text = (
        access(IMAGE) + '2026-12-06 INFO eventlet.wsgi.server 10.90.1.13 - - [x] "GET /v2/images HTTP/1.1" 200 9 0.1\n'
    )
    assert cc.image_gets(text) == [cc.ImageGet("10.90.1.13", IMAGE, 200, 1048576, 0.412345)]
    cache = f"... DEBUG glance.image_cache [-] Tee'ing image '{IMAGE}' into cache\n"
    assert cc.cache_events(cache + f"DEBUG Cache hit for image '{IMAGE}'\n", IMAGE) == {"tee": 1, "hit": 1}


def test_a_fetch_by_the_compute_over_mgmt_passes() -> None:
    # eventlet logs the bytes it wrote: the status line, headers and chunk framing too (measured on a lab: 8390021
    # for an 8388608-byte image, 14192746 for 14190528, 1048986 for 1048576)
    gets = cc.image_gets(access(IMAGE, length=1048986) + access(KERNEL, length=4096 + 410))
    assert cc.fetch_problems(gets, {IMAGE: 1048576, KERNEL: 4096}, "10.90.1.13") == []
    assert cc.whole(8390021, 8388608) and cc.whole(14192746, 14190528) and not cc.whole(8388607, 8388608)


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ("", f"glance logged no download of image {IMAGE}"),
        (
            access(IMAGE, client="10.90.2.13"),
            "expected one download of 1048576 bytes by 10.90.1.13, glance logged 10.90.2.13 HTTP 200 1048576 bytes",
        ),  # fetched over another network than br-mgmt
        (access(IMAGE) + access(IMAGE), "glance logged 10.90.1.13 HTTP 200 1048576 bytes, 10.90.1.13 HTTP 200"),
        (access(IMAGE, length=65536), "glance logged 10.90.1.13 HTTP 200 65536 bytes"),  # a cut download
    ],
)
def test_a_broken_fetch_fails_with_what_glance_saw(log: str, message: str) -> None:
    (found,) = cc.fetch_problems(cc.image_gets(log), {IMAGE: 1048576}, "10.90.1.13")
    assert message in found


def test_a_second_download_is_a_failure_of_the_base_cache() -> None:
    # e.g. nova's base-image cache on a tmpfs wiped between the boots, or images_type flat without a cache
    (found,) = cc.refetch_problems(cc.image_gets(access(IMAGE)), [IMAGE], "the image is in the compute's base cache")
    assert found == (
        f"the image is in the compute's base cache, yet glance logged a download of image {IMAGE} by "
        "10.90.1.13 (HTTP 200, 1048576 bytes)"
    )
    assert cc.refetch_problems(cc.image_gets(access(KERNEL)), [IMAGE], "x") == []


def test_the_base_file_identity() -> None:
    path = f"/var/lib/nova/instances/_base/{cc.base_name(IMAGE)}"
    before = cc.parse_stat(f"1234 1765040000 1048576 {path}\n")
    touched = cc.parse_stat(f"1234 1765040020 1048576 {path}")  # the cache manager touches base files in use
    written = cc.parse_stat(f"5678 1765040020 1048576 {path}")
    assert cc.same_base_problems(before, touched, "second boot") == []
    (found,) = cc.same_base_problems(before, written, "second boot")
    assert "inode 1234 -> 5678" in found and "nova fetched and wrote the image again" in found
    assert cc.base_name(IMAGE) == hashlib.sha1(IMAGE.encode()).hexdigest()  # nova's get_cache_fname


def test_console_boots() -> None:
    console = (
        "stacklab-guest: booted aaa\nstacklab-guest: disk written stacklab-disk:aaa\n"
        "noise\nstacklab-guest: booted bbb\nstacklab-guest: disk kept stacklab-disk:aaa\n"
    )
    assert cc.console_boots(console) == [("aaa", "written", "stacklab-disk:aaa"), ("bbb", "kept", "stacklab-disk:aaa")]


CACHE = {"manager_interval": 20, "remove_unused_base_images": True, "remove_unused_original_minimum_age_seconds": 60}
REMOVED = "2026-12-06 17:05:00.1 9 INFO nova.virt.libvirt.imagecache [-] Removing base, swap or ephemeral file: /b\n"


def test_ageing_within_the_bound_passes() -> None:
    assert cc.ageing_bound(CACHE, 60) == 160
    assert cc.ageing_problems(75.0, last_use_age=10, image_cache=CACHE, bound=160, log=REMOVED, path="/b") == []


@pytest.mark.parametrize(
    ("removed_after", "log", "message"),
    [
        (None, "", "/b was still there 160 s after its last use"),  # remove_unused_base_images off on the node
        (12.0, REMOVED, "/b was removed 12 s after its last use, before its minimum age of 60 s"),
        (75.0, "", "/b is gone but nova-compute's cache manager did not log removing it"),  # someone else removed it
    ],
)
def test_broken_ageing_fails_with_a_clear_message(removed_after: float | None, log: str, message: str) -> None:
    (found,) = cc.ageing_problems(removed_after, last_use_age=10, image_cache=CACHE, bound=160, log=log, path="/b")
    assert message in found


def test_a_named_guest_cpu_model_reaches_every_compute_only() -> None:
    # nova's host-model under TCG on a VM compute is an EPYC with la57/pks/pku that a nested guest does not survive
    # a live migration with (nova-nfs lab): a lab names a plain model instead
    layout = nova_layout(LAB.replace("    images_type: rbd\n", "    images_type: rbd\n    cpu_model: qemu64\n", 1))
    for compute, address in (("cmp1", "10.90.1.11"), ("cmp3", "10.90.1.13")):
        text = svc_nova.render_conf(layout, compute, address, **SECRETS)
        assert "[libvirt]\nvirt_type = qemu\ncpu_mode = custom\ncpu_models = qemu64\n" in text
    assert "cpu_mode" not in svc_nova.render_conf(layout, "ctl1", "10.90.1.10", **SECRETS)
    assert "cpu_mode" not in svc_nova.render_conf(nova_layout(), "cmp1", "10.90.1.11", **SECRETS)
    assert "cpu_model" not in nova_layout().config  # a lab without it keeps the spec it had


def test_an_unknown_guest_cpu_model_is_refused() -> None:
    found = problems(LAB.replace("    images_type: rbd\n", "    images_type: rbd\n    cpu_model: 'qemu64\\n[x]'\n", 1))
    assert len(found) == 1 and found[0].startswith("22: openstack.nova.cpu_model: Input should be 'qemu64'")
