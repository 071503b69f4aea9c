"""glance's rbd store: the lab file's checks, the rendered store section, and the keyring glance-api reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import glance
from stacklab.drivers.openstack.common import service_layout
from stacklab.drivers.openstack.services import ServiceDriver
from stacklab.exec.runner import CommandResult
from stacklab.model.errors import LabError
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Resource
from tests.unit.test_services import LAB, FakeController, apply_all, ok

KEYRING = "/etc/ceph/ceph.client.glance.keyring"
RBD_LAB = (
    LAB.replace("roles: [controller]", "roles: [controller, storage]")
    + "  glance: {store: rbd}\n"
    + "storage:\n  ceph:\n    mons: [ctl1]\n    osds: [{node: ctl1, count: 3, size: 1GiB}]\n"
    + "    pools: [images]\n    clients: [glance]\n"
)


class CephController(FakeController):
    """The fake controller after the Ceph step: client.glance's keyring, root-only until glance shares it."""

    def __init__(self) -> None:
        super().__init__()
        self.files[KEYRING] = "[client.glance]\n\tkey = QUFBQQ==\n"
        self.keyring_mode = ("root", "600")

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        if argv[0] == "chgrp" and argv[-1] == KEYRING:
            self.keyring_mode = (argv[1], self.keyring_mode[1])
            return ok()
        if argv[0] == "chmod" and argv[-1] == KEYRING:
            self.keyring_mode = (self.keyring_mode[0], argv[1].lstrip("0"))
            return ok()
        if argv[:3] == ("stat", "-c", "%G %a") and argv[-1] == KEYRING:
            return ok(" ".join(self.keyring_mode) + "\n")
        return super().respond(argv, stdin)


@pytest.fixture
def resources() -> dict[str, Resource]:
    return {r.name: r for r in expand(load_lab_text(RBD_LAB, "oslab.yml")) if r.kind == "service"}


def test_the_store_section_names_the_pool_and_user_and_nova_gets_direct_urls(resources: dict[str, Resource]) -> None:
    text = glance.render_conf(service_layout(resources["glance"], "oslab"), "DB", "USER")
    assert "[glance_store]\nstores = rbd,http\ndefault_store = rbd\nrbd_store_pool = images\n" in text
    assert "rbd_store_user = glance\n" in text and "filesystem_store_datadir" not in text
    assert "show_image_direct_url = true\n" in text.split("[database]")[0]


def test_file_store_keeps_its_conf_and_hides_image_locations() -> None:
    file_glance = {r.name: r for r in expand(load_lab_text(LAB, "oslab.yml"))}["glance"]
    text = glance.render_conf(service_layout(file_glance, "oslab"), "DB", "USER")
    assert "default_store = file\nfilesystem_store_datadir = /var/lib/glance/images/\n" in text
    assert "show_image_direct_url" not in text


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("pools: [images]", "pools: [vms]"), "glance's rbd store needs pool images in storage.ceph"),
        (("clients: [glance]", "clients: [cinder]"), "glance's rbd store needs client glance in storage.ceph"),
        (("glance: {store: rbd}", "glance: {store: nfs}"), "glance's nfs store needs storage.nfs with an export"),
    ],
)
def test_the_lab_file_says_what_the_rbd_store_lacks(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(LabError) as raised:
        load_lab_text(RBD_LAB.replace(*edit), "oslab.yml")
    assert f"oslab.yml:17:12: openstack.glance.store: {message}" in str(raised.value)


def test_up_shares_the_keyring_with_glance_observe_sees_it_down_takes_it_back(
    tmp_path: Path, resources: dict[str, Resource]
) -> None:
    node = CephController()
    lab = load_lab_text(RBD_LAB, "oslab.yml")
    ctx = DriverContext(lab=lab, runner=node, state_dir=tmp_path / "state", node_runner=lambda _n: node)
    driver = ServiceDriver()
    outputs = apply_all(driver, ctx, resources)["glance"]
    assert (outputs["store"], outputs["rbd_pool"], outputs["ceph_user"]) == ("rbd", "images", "glance")
    assert node.keyring_mode == ("glance", "640")
    recorded = {"spec": dict(resources["glance"].spec), "hash": resources["glance"].hash, "outputs": outputs}
    observed = driver.observe(resources["glance"], ctx)
    assert observed is not None and driver.diff(resources["glance"], observed, recorded).action is Action.NOOP
    node.keyring_mode = ("root", "600")
    observed = driver.observe(resources["glance"], ctx)
    assert observed is not None and observed.drift == (f"{KEYRING} is not readable by glance (root 600)",)
    driver.delete("service/glance", recorded, ctx)
    assert node.keyring_mode == ("root", "600")


def test_glance_without_the_keyring_is_refused_before_anything_is_written(
    tmp_path: Path, resources: dict[str, Resource]
) -> None:
    node = CephController()
    del node.files[KEYRING]
    lab = load_lab_text(RBD_LAB, "oslab.yml")
    ctx = DriverContext(lab=lab, runner=node, state_dir=tmp_path / "state", node_runner=lambda _n: node)
    with pytest.raises(Exception, match=r"ctl1 has no /etc/ceph/ceph\.client\.glance\.keyring"):
        apply_all(ServiceDriver(), ctx, resources)
    assert glance.CONF not in node.files
