"""Suite `caching`: the seed's three image-caching steps, each read from the caches themselves.

1. glance-api reads an image from its store and keeps it in its cache; the second download is served from the
   cache. Proven on the controller: the cache file appears with the image's bytes (sha256) after the first
   download only, glance's cache logs a tee from the store for the first and a hit for the second, its cache API
   counts the hits, and with the store file removed a third download still returns the bytes. The access log's
   wall seconds of the first and the cached download are the figures.
2. nova-compute on a compute with local disks (images_type qcow2) fetches the image from glance-api over br-mgmt
   (glance's access log on its br-mgmt address names the compute's br-mgmt address as the client, once per image
   part) and keeps it in its base-image cache: `_base/<sha1 of the image id>`, the backing file of the instance's
   qcow2 disk.
3. A second instance of the image on the same compute starts from that base file: glance logs no download, the
   base file is the same file (inode, size), and it backs the second disk too. Then the image is deleted from
   glance: nova refuses a rebuild from it (the API checks the image in glance before anything reaches the
   compute), but a hard reboot, which defines and starts the domain again from its disk files, boots the guest
   again (new boot id, its disk mark kept) with the image gone from glance: the cached base serves it. Finally
   both instances go, and nova's cache manager (`remove_unused_base_images`, on the lab's short
   `[image_cache]` timing) removes the now unused base file no sooner than its minimum age after its last use,
   and within two manager passes after it; the removal is measured and nova-compute's log line is kept.

The guest is the suites' tiny initramfs guest (guest_initrd.py: 128 MiB, direct kernel boot, no NIC); it is booted
with its zone and host named (compute API 2.74), so the lab's other computes are untouched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.caching_checks import (
    STAT_FORMAT,
    FileStat,
    ImageGet,
    ageing_bound,
    ageing_problems,
    base_name,
    cache_events,
    console_boots,
    fetch_problems,
    image_gets,
    parse_stat,
    refetch_problems,
    same_base_problems,
    whole,
)
from stacklab.suites.context import LabContext
from stacklab.suites.guest import FLAVOR, GuestImage, guest_image
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import OS_CLIENT, admin_auth, os_client, service

CACHING_CLIENT = f"{OS_CLIENT.rsplit('/', 1)[0]}/caching_client.py"
CONSOLE_BUDGET = 240.0  # the guest's first words on a TCG lab node under load
AGEING_SLACK = 60.0  # a cache manager pass on a loaded lab node, and the poll


def caching_client(runner: Runner, action: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """caching_client.py ACTION on the node (uploaded beside os_client.py, which it imports), request on stdin."""
    for name, path in (("os_client.py", OS_CLIENT), ("caching_client.py", CACHING_CLIENT)):
        write_node_file(runner, path, resources.files("stacklab.suites").joinpath(name).read_text())
    result = runner.run(["python3", CACHING_CLIENT, action], input=json.dumps(request), timeout=900, check=False)
    assert result.ok, f"caching_client {action} failed: {result.stderr[-1500:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class LogTail:
    """A log file on a node read from where it ended when this was made (only what happened since)."""

    def __init__(self, runner: Runner, path: str) -> None:
        self.runner, self.path = runner, path
        size = runner.run(["stat", "-c", "%s", path], timeout=30, check=False).stdout.strip()
        self.offset = int(size or 0)

    def read(self) -> str:
        return self.runner.run(["tail", "-c", f"+{self.offset + 1}", self.path], timeout=60).stdout


class JournalTail:
    """A unit's journal on a node from now on (glance-api logs to its journal: oslo's lines, one per entry)."""

    def __init__(self, runner: Runner, unit: str) -> None:
        self.runner, self.unit = runner, unit
        shown = runner.run(["journalctl", "-u", unit, "-n", "0", "--show-cursor", "-q", "--no-pager"], timeout=60)
        self.cursor = shown.stdout.strip().rpartition("-- cursor: ")[2]

    def read(self) -> str:
        time.sleep(2.0)  # the access line is written once the response is sent; journald takes it a moment later
        argv = ["journalctl", "-u", self.unit, "-o", "cat", "-q", "--no-pager"]
        argv += [f"--after-cursor={self.cursor}"] if self.cursor else []
        return self.runner.run(argv, timeout=60).stdout


def glance_unit(glance: Mapping[str, Any]) -> str:
    """glance-api's unit, whose journal holds its log (labs recorded before the output existed: glance-api)."""
    return str(glance.get("log_unit") or "glance-api")


def stat(runner: Runner, path: str) -> FileStat | None:
    """The file's inode, mtime and size, or None when it does not exist."""
    result = runner.run(["stat", "-c", STAT_FORMAT, path], timeout=30, check=False)
    return parse_stat(result.stdout) if result.ok else None


def other_node(lab: LabContext, controller: str) -> str:
    """A node other than the controller on br-mgmt (clients come from elsewhere), else the controller."""
    others = sorted(n for n, node in lab.nodes.items() if n != controller and "mgmt" in node["addresses"])
    return others[0] if others else controller


def test_glance_serves_the_second_download_from_its_cache(
    lab: LabContext, runners: dict[str, Runner], evidence: Evidence
) -> None:
    """Step 1: the first download reads the store and fills the cache, the second is a cache hit; with the store
    file gone the cache still serves the bytes."""
    glance = service(lab, "glance")
    if not glance.get("cache"):
        pytest.skip("the lab's glance has no image cache")
    controller_name = str(glance["node"])
    controller, client_name = runners[controller_name], other_node(lab, controller_name)
    client, client_ip = runners[client_name], lab.address(client_name, "mgmt")
    auth, size = admin_auth(lab), 8 * 1024 * 1024
    image = os_client(client, "glance", "upload", {**auth, "size": size})
    request = {**auth, "image_id": image["image_id"]}
    image_id = str(image["image_id"])
    stored = f"{str(glance['images_dir']).rstrip('/')}/{image_id}"
    cached = f"{str(glance['cache_dir']).rstrip('/')}/{image_id}"
    try:
        assert image["status"] == "active", image
        assert image["glance"] == str(glance["url"]), f"catalog gives {image['glance']}, glance runs at {glance['url']}"
        assert stat(controller, cached) is None, f"{cached} exists before anyone downloaded the image"
        log = JournalTail(controller, glance_unit(glance))
        first = os_client(client, "glance", "download", request)
        after_first = log.read()
        filled = stat(controller, cached)
        assert filled is not None and filled.size == size, f"the first download left {cached} as {filled}"
        cache_sum = controller.run(["sha256sum", cached], timeout=60).stdout.split()[0]
        assert cache_sum == image["sha256"] == first["sha256"], (cache_sum, image, first)
        log = JournalTail(controller, glance_unit(glance))
        second = os_client(client, "glance", "download", request)
        after_second = log.read()
        assert second["sha256"] == image["sha256"], (image, second)
        events = (cache_events(after_first, image_id), cache_events(after_second, image_id))
        assert events == ({"tee": 1, "hit": 0}, {"tee": 0, "hit": 1}), (
            f"glance's cache log: first download {events[0]}, second {events[1]}; expected the first teed from the "
            "store into the cache and the second a cache hit"
        )
        gets = [_one_get(after_first, image_id, client_ip, size), _one_get(after_second, image_id, client_ip, size)]
        controller.run(["rm", "-f", stored], timeout=30)
        third = os_client(client, "glance", "download", request)
        assert third["sha256"] == image["sha256"], f"with the store file gone, expected the cached bytes, saw {third}"
        listing = os_client(client, "glance", "cache", request)["cache"]
        hits = {c["image_id"]: c["hits"] for c in listing.get("cached_images", [])}
        assert hits.get(image_id, 0) >= 2, f"expected >= 2 cache hits, saw {listing}"
        evidence("store then cache", f"{stored} -> {cached} ({size} bytes, sha256 {cache_sum[:16]}...)")
        evidence("client", f"{client_name} {client_ip} -> glance-api {glance['url']} (br-mgmt)")
        evidence("first download (store, teed into the cache)", f"{gets[0].seconds:.3f} s in glance's access log")
        evidence("second download (cache hit)", f"{gets[1].seconds:.3f} s in glance's access log")
        evidence("cache hits", f"{hits[image_id]} (third download with the store file removed: same sha256)")
    finally:
        os_client(client, "glance", "delete", request)


def _one_get(log_text: str, image_id: str, client_ip: str, size: int) -> ImageGet:
    gets = [g for g in image_gets(log_text) if g.image_id == image_id]
    assert len(gets) == 1 and (gets[0].client, gets[0].status) == (client_ip, 200) and whole(gets[0].length, size), (
        f"glance's access log: expected one download of {size} bytes by {client_ip}, saw {gets}"
    )
    return gets[0]


# -- steps 2 and 3: nova-compute's base-image cache on a compute with local disks ---------------------------------


@dataclass
class Flow:
    """What steps 2 and 3 share: the compute, the guest's images, the instances booted and what was seen."""

    lab: LabContext
    controller: Runner
    compute: str
    compute_runner: Runner
    zone: str
    auth: Mapping[str, str]
    image: GuestImage
    glance_log: str  # glance-api's unit (it logs to its journal)
    instances_path: str
    image_cache: Mapping[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)  # image id -> bytes
    servers: list[str] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> str:
        return f"{self.instances_path}/_base"

    def base(self, image_id: str) -> str:
        return f"{self.base_dir}/{base_name(image_id)}"

    def boot(self, name: str) -> dict[str, Any]:
        booted = caching_client(
            self.controller,
            "boot",
            {
                **self.auth,
                **FLAVOR,
                "name": name,
                "image_id": self.image.image_id,
                "availability_zone": self.zone,
                "host": self.compute,
            },
        )
        self.servers.append(str(booted["id"]))
        assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE on {self.compute}: {booted}"
        assert booted["host"] == self.compute, booted
        return booted

    def console(
        self, server_id: str, until: Callable[[list[tuple[str, str, str]]], bool], what: str
    ) -> list[tuple[str, str, str]]:
        """The guest's boots from its console log on the compute, once `until(boots)` holds."""
        path = f"{self.instances_path}/{server_id}/console.log"
        deadline = time.monotonic() + CONSOLE_BUDGET
        while True:
            text = self.compute_runner.run(["cat", path], timeout=30, check=False).stdout
            boots = console_boots(text)
            if until(boots) or time.monotonic() > deadline:
                assert until(boots), f"{path} never showed {what} in {CONSOLE_BUDGET:g}s; boots seen: {boots}"
                return boots
            time.sleep(3.0)

    def backing_file(self, server_id: str) -> str:
        info = self.compute_runner.run(
            ["qemu-img", "info", "-U", "--output=json", f"{self.instances_path}/{server_id}/disk"], timeout=60
        )
        found = json.loads(info.stdout)
        return str(found.get("full-backing-filename") or found.get("backing-filename") or "")

    def require(self, key: str) -> Any:
        if key not in self.seen:
            pytest.fail(f"needs what an earlier step of this suite records ({key}); that step failed")
        return self.seen[key]


@pytest.fixture(scope="module")
def flow(lab: LabContext, runners: dict[str, Runner]) -> Iterator[Flow]:
    nova, glance = service(lab, "nova"), service(lab, "glance")
    local = sorted(c for c, kind in (nova.get("images_types") or {}).items() if kind == "qcow2")
    if not local:
        pytest.skip(
            "the lab has no compute with local disks (images_type qcow2): nova keeps no base-image cache for rbd disks"
        )
    compute = local[0]
    controller = runners[str(nova["node"])]
    auth = admin_auth(lab)
    with guest_image(controller, auth) as image:
        made = Flow(
            lab,
            controller,
            compute,
            runners[compute],
            str(nova["zones"][compute]),
            auth,
            image,
            glance_unit(glance),
            str(nova["instances_path"]),
            dict(nova.get("image_cache") or {}),
        )
        try:
            yield made
        finally:
            for server_id in made.servers:
                os_client(controller, "nova", "delete", {**auth, "server_id": server_id})


def _image_sizes(flow: Flow) -> dict[str, int]:
    """Each part of the guest (kernel, ramdisk, root disk) and its size in glance: what a whole download is."""
    found = {}
    for image_id in flow.image.parts:
        shown = caching_client(flow.controller, "image", {**flow.auth, "image_id": image_id})
        assert shown["http"] == 200 and shown["status"] == "active", f"glance shows image {image_id} as {shown}"
        found[image_id] = int(shown["size"])
    return found


def test_nova_fetches_the_image_over_mgmt_into_its_base_cache(flow: Flow, evidence: Evidence) -> None:
    """Step 2: the first instance on the local-disk compute makes nova-compute download each part of the image from
    glance-api (the compute's br-mgmt address in glance's log) into `_base`, and the disk is a qcow2 over it."""
    flow.sizes = _image_sizes(flow)
    root = flow.image.image_id
    for image_id in flow.image.parts:
        assert stat(flow.compute_runner, flow.base(image_id)) is None, f"{flow.base(image_id)} exists before the boot"
    compute_ip = flow.lab.address(flow.compute, "mgmt")
    log = JournalTail(flow.controller, flow.glance_log)
    first = flow.boot("stacklab-suite-cache-1")
    gets = image_gets(log.read())
    problems = fetch_problems(gets, flow.sizes, compute_ip)
    assert not problems, "; ".join(problems)
    base = stat(flow.compute_runner, flow.base(root))
    assert base is not None and base.size == flow.sizes[root], (
        f"after the first boot, nova's base-image cache holds {base} for the root image ({flow.sizes[root]} bytes)"
    )
    backing = flow.backing_file(str(first["id"]))
    assert backing == base.path, f"the first instance's disk is backed by {backing!r}, not the cached {base.path}"
    boots = flow.console(str(first["id"]), lambda b: len(b) >= 1, "a boot that marked its disk")
    flow.seen.update(first=first, base=base, mark=boots[-1][2], first_boot=boots[-1][0])
    fetch = {g.image_id: g for g in gets}
    evidence("compute", f"{flow.compute} (images_type qcow2, zone {flow.zone}), br-mgmt {compute_ip}")
    evidence(
        "glance downloads",
        ", ".join(f"{i[:8]} {g.length} B by {g.client} in {g.seconds:.3f} s" for i, g in fetch.items()),
    )
    evidence("base file", f"{base.path} inode {base.inode} size {base.size}, backs {first['id']}/disk")
    evidence("first boot (with the download)", f"{first['seconds']} s from the API call to ACTIVE")


def test_second_instance_starts_from_the_local_base(flow: Flow, evidence: Evidence) -> None:
    """Step 3: a second instance of the same image on the same compute: no download, the same base file."""
    base: FileStat = flow.require("base")
    log = JournalTail(flow.controller, flow.glance_log)
    second = flow.boot("stacklab-suite-cache-2")
    problems = refetch_problems(image_gets(log.read()), flow.image.parts, "the image is in the compute's base cache")
    now = stat(flow.compute_runner, base.path)
    assert now is not None, f"{base.path} is gone after the second boot"
    problems += same_base_problems(base, now, "second boot")
    backing = flow.backing_file(str(second["id"]))
    if backing != base.path:
        problems.append(f"the second instance's disk is backed by {backing!r}, not the cached {base.path}")
    assert not problems, "; ".join(problems)
    boots = flow.console(str(second["id"]), lambda b: len(b) >= 1, "a boot that marked its disk")
    assert boots[-1][1] == "written", f"the second instance's own disk should be new: {boots}"
    flow.seen.update(second=second)
    evidence(
        "second boot (from the base cache)",
        f"{second['seconds']} s from the API call to ACTIVE; first {flow.require('first')['seconds']} s",
    )
    evidence(
        "base file kept",
        f"{now.path} inode {now.inode} (was {base.inode}), mtime {now.mtime} (was "
        f"{base.mtime}: the cache manager touches base files in use), no download in glance's log",
    )


def test_cached_base_serves_the_instance_after_the_image_is_deleted(flow: Flow, evidence: Evidence) -> None:
    """Step 3, the image deleted from glance: a rebuild is refused by nova's API (it checks the image), a hard
    reboot redefines and boots the guest from its disk files over the cached base."""
    first, base, mark = flow.require("first"), flow.require("base"), flow.require("mark")
    for image_id in flow.image.parts:
        os_client(flow.controller, "glance", "delete", {**flow.auth, "image_id": image_id})
        gone = caching_client(flow.controller, "image", {**flow.auth, "image_id": image_id})
        assert gone["http"] == 404, f"image {image_id} is still in glance after its delete: {gone}"
    log = JournalTail(flow.controller, flow.glance_log)
    rebuild = caching_client(
        flow.controller, "rebuild", {**flow.auth, "server_id": first["id"], "image_id": flow.image.image_id}
    )
    assert rebuild["http"] in (202, 400), f"nova's answer to a rebuild from a deleted image: {rebuild}"
    rebooted = caching_client(flow.controller, "reboot", {**flow.auth, "server_id": first["id"]})
    assert (rebooted["status"], rebooted["host"]) == ("ACTIVE", flow.compute), f"after the hard reboot: {rebooted}"
    boots = flow.console(str(first["id"]), lambda b: bool(b) and b[-1][0] != flow.require("first_boot"), "a new boot")
    boot_id, state, kept = boots[-1]
    problems = refetch_problems(image_gets(log.read()), flow.image.parts, "the image was deleted from glance")
    now = stat(flow.compute_runner, base.path)
    problems += [f"{base.path} is gone"] if now is None else same_base_problems(base, now, "hard reboot")
    if (state, kept) != ("kept", mark):
        problems.append(f"the guest's disk after the hard reboot: {state} {kept}, expected kept {mark}")
    assert not problems, "; ".join(problems)
    flow.seen.update(rebooted=True)
    evidence("image deleted", f"{', '.join(flow.image.parts)}: HTTP 404 from glance")
    evidence("rebuild from the deleted image", f"HTTP {rebuild['http']}: {rebuild['answer'][:200]}")
    evidence(
        "hard reboot",
        f"{rebooted['seconds']} s; new boot {boot_id}, disk {state} {kept}, over {base.path} "
        f"(inode {base.inode}), no download",
    )


def test_cache_manager_removes_the_unused_base(flow: Flow, evidence: Evidence) -> None:
    """The cache manager's ageing, observed: with no instance left, the base file goes no sooner than the lab's
    minimum age after its last use, and within two manager passes after that."""
    base: FileStat = flow.require("base")
    cache = dict(flow.image_cache)
    if not cache.get("remove_unused_base_images", True):
        pytest.skip("the lab turns remove_unused_base_images off")
    bound = ageing_bound(cache, AGEING_SLACK)
    if bound > 900:
        pytest.skip(
            f"the lab's image cache would keep an unused base image up to {bound:g} s (nova's defaults); "
            "set openstack.nova.image_cache to watch it go"
        )
    log = LogTail(flow.compute_runner, str(service(flow.lab, "nova")["compute_log"]))
    for server_id in list(flow.servers):
        os_client(flow.controller, "nova", "delete", {**flow.auth, "server_id": server_id})
        flow.servers.remove(server_id)
    last = stat(flow.compute_runner, base.path)
    assert last is not None, f"{base.path} went with the instances, before any ageing"
    last_use_age = time.time() - last.mtime
    removed_after: float | None = None
    deadline = last.mtime + bound
    while time.time() < deadline:
        now = stat(flow.compute_runner, base.path)
        if now is None:
            removed_after = time.time() - last.mtime
            break
        last = now  # a pass that still found it in use touched it again
        time.sleep(3.0)
    text = log.read()
    problems = ageing_problems(
        removed_after, last_use_age=last_use_age, image_cache=cache, bound=bound, log=text, path=base.path
    )
    assert not problems, "; ".join(problems)
    young = text.count(f"Base, swap or ephemeral file too young to remove: {base.path}")
    evidence("image cache", ", ".join(f"{k} {v}" for k, v in sorted(cache.items())))
    evidence(
        "base removed",
        f"{removed_after:.0f} s after its last use (minimum age "
        f"{cache.get('remove_unused_original_minimum_age_seconds')} s, bound {bound:g} s); {young} pass(es) "
        "found it too young first",
    )
    line = next(x for x in text.splitlines() if "Removing base, swap or ephemeral file: " + base.path in x)
    evidence("nova-compute log", line.strip()[:300])
