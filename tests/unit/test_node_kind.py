"""`kind: auto` per node: a VM node where the node needs a kernel path this host lacks (or cinder's kernel
backends, on every host), else the host's node_kind choice; `plan` and `doctor` say why."""

from __future__ import annotations

from stacklab.host.choose import choose_all
from stacklab.model import load_lab_text
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from stacklab.plan.node_kind import node_kind
from stacklab.render import render_doctor
from tests.unit.test_host_choose import ci_report, full_report, picked

LAB = """\
name: kinds
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.9.1.0/24}
  storage: {bridge: br-storage, cidr: 10.9.2.0/24}
images:
  os: {recipe: openstack-zed}
nodes:
  ctl: {image: os, nics: [mgmt, storage], roles: [controller]}
  vg: {image: os, nics: [mgmt, storage], roles: [storage]}
  nas: {image: os, nics: [mgmt, storage], roles: [storage]}
  pinned: {kind: container, image: os, nics: [mgmt, storage], roles: [storage]}
storage:
  lvm: {node: vg, vg: data, size: 1GiB}
  nfs:
    node: nas
    implementation: knfsd
    exports: [{name: share, path: /srv/nfs/share, size: 1GiB}]
"""


def kinds(text: str, choices: dict[str, str]) -> dict[str, str]:
    lab = load_lab_text(text, "lab.yml")
    return {r.name: r.spec["kind"] for r in expand(lab, choices) if r.kind == "node"}


def test_on_the_ci_host_auto_nodes_needing_a_kernel_path_become_vm_nodes_and_say_why() -> None:
    ci = picked(ci_report())
    assert kinds(LAB, ci) == {"ctl": "container", "vg": "vm", "nas": "vm", "pinned": "container"}
    lab = load_lab_text(LAB, "lab.yml")
    assert node_kind(lab, "vg", ci) == (
        "vm",
        "auto, a kernel of its own: storage.lvm: LVM needs device-mapper, which this host's kernel lacks",
    )
    assert "knfsd needs the kernel's nfsd" in node_kind(lab, "nas", ci)[1]
    assert node_kind(lab, "ctl", ci)[0] == "container" and node_kind(lab, "pinned", ci)[1] == "set by the lab"


def test_a_host_whose_kernel_has_them_keeps_containers_unless_kvm_runs_guests() -> None:
    full = picked(full_report())
    expected = "vm" if full["node_kind"] == "vm" else "container"
    assert kinds(LAB, full) == {"ctl": expected, "vg": expected, "nas": expected, "pinned": "container"}
    assert kinds(LAB, {**full, "node_kind": "container"})["vg"] == "container"


def test_cinder_kernel_backends_put_their_volume_node_in_a_vm_on_every_host() -> None:
    text = LAB.replace("storage:\n  lvm:", "openstack:\n  services: [mariadb, rabbitmq, memcached, keystone, cinder]\n"
                       "  cinder: {backends: [lvm]}\nstorage:\n  lvm:", 1)  # fmt: skip
    full = {**picked(full_report()), "node_kind": "container"}
    assert kinds(text, full)["vg"] == "vm"
    assert "directly on a physical host" in node_kind(load_lab_text(text, "lab.yml"), "vg", full)[1]


def test_golden_choices_keep_the_plans_of_labs_without_kernel_paths() -> None:
    # USERSPACE_CHOICES is the CI host: only nodes holding a kernel path change kind
    assert kinds(LAB, dict(USERSPACE_CHOICES))["ctl"] == "container"


def test_doctor_lists_each_kernel_path_per_node_kind() -> None:
    report = ci_report()
    text = render_doctor(report, choose_all(report))
    assert "Kernel paths per node kind" in text
    assert "LVM (device-mapper)" in text and "container: no (" in text and "vm: yes (tcg)" in text
