"""`down`: a storage resource whose node (and Ceph) goes in the same run is left to it when nothing of it is the host
kernel's (tgt with file or RBD LUNs, ganesha, Ceph from packages); LIO, LV LUNs and knfsd are still removed from
inside, and so is everything on a node that stays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stacklab.drivers.base import Driver, DriverContext
from stacklab.drivers.storage.ceph.driver import CephDriver
from stacklab.drivers.storage.iscsi.driver import IscsiDriver
from stacklab.drivers.storage.nfs.driver import NfsDriver
from stacklab.exec.fake import FakeRunner
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import USERSPACE_CHOICES, expand

LAB = """
name: gone
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.250.1.0/24}
  storage: {bridge: br-storage, cidr: 10.250.2.0/24}
images:
  storage: {recipe: storage}
nodes:
  storage1: {image: storage, nics: [mgmt, storage], roles: [storage]}
  client1: {image: storage, nics: [mgmt, storage], roles: [client]}
storage:
  iscsi:
    node: storage1
    initiators: [client1]
    targets:
      - {name: lun1, backing: file, size: 256MiB}
      - {name: lun2, backing: rbd, size: 256MiB}
  nfs:
    node: storage1
    exports:
      - {name: images, path: /srv/nfs/images, size: 1GiB}
  ceph:
    mons: [storage1]
    osds:
      - {node: storage1, count: 3, size: 2GiB}
    pools: [volumes]
    clients: [cinder]
"""


class Untouchable(Exception):
    pass


def specs(tmp_path: Path) -> tuple[DriverContext, dict[str, dict[str, object]]]:
    lab = load_lab_text(LAB, "gone.yml")
    resources = {r.id: dict(r.spec) for r in expand(lab, USERSPACE_CHOICES)}

    def no_runner(node: str) -> FakeRunner:
        raise Untouchable(node)

    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path, node_runner=no_runner), resources


@pytest.mark.parametrize(
    ("driver", "rid"), [(IscsiDriver(), "iscsi/storage1"), (NfsDriver(), "nfs/storage1"), (CephDriver(), "ceph/gone")]
)
def test_user_space_storage_goes_with_its_nodes(tmp_path: Path, driver: Driver, rid: str) -> None:
    ctx, resources = specs(tmp_path)
    going = dataclasses.replace(ctx, vanishing_nodes=frozenset({"storage1", "client1"}))
    driver.delete(rid, {"spec": resources[rid]}, going)  # asks no node runner
    with pytest.raises(Untouchable):  # a node that stays: cleaned from inside as before
        driver.delete(rid, {"spec": resources[rid]}, dataclasses.replace(ctx, vanishing_nodes=frozenset({"client1"})))


def test_kernel_backed_storage_is_still_removed_from_inside(tmp_path: Path) -> None:
    ctx, resources = specs(tmp_path)
    going = dataclasses.replace(ctx, vanishing_nodes=frozenset({"storage1", "client1"}))
    for rid, implementation in (("iscsi/storage1", "lio"), ("nfs/storage1", "knfsd")):
        driver = IscsiDriver() if rid.startswith("iscsi") else NfsDriver()
        with pytest.raises(Untouchable):
            driver.delete(rid, {"spec": {**resources[rid], "implementation": implementation}}, going)
    # an RBD LUN whose Ceph stays (its mon on a node that is not going) is removed from that Ceph
    with pytest.raises(Untouchable):
        IscsiDriver().delete(
            "iscsi/storage1", {"spec": resources["iscsi/storage1"]}, dataclasses.replace(going, lab=other_ceph(ctx))
        )


def other_ceph(ctx: DriverContext) -> Lab:
    ceph = ctx.lab.storage.ceph
    assert ceph is not None
    return ctx.lab.model_copy(
        update={"storage": ctx.lab.storage.model_copy(update={"ceph": ceph.model_copy(update={"mons": ["elsewhere"]})})}
    )
