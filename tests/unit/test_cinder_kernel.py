"""cinder's kernel backends (lvm with lioadm/tgtadm, nfs): what labs/reference.yml expands to, the files a VM
volume node gets, the controller without a backend of its own, validation, and the suite's parsers of tgtadm and
findmnt output (recorded from Debian 12's tgt 1.0.85 and util-linux 2.38)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stacklab.drivers.openstack import cinder
from stacklab.drivers.openstack.cinder_kernel import (
    MODULES_LOAD,
    NFS_SHARES,
    SUDOERS,
    TGT_DROPIN,
    api_only,
    backend_outputs,
    backend_types,
    default_volume_type,
    node_files,
)
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.model.errors import LabError
from stacklab.model.load import load_lab, load_lab_text
from stacklab.plan.resource import Resource
from stacklab.suites.cinder_kernel_paths import mount_option, parse_findmnt, parse_session_state, parse_tgt_targets
from tests.golden_util import check_golden
from tests.unit.lab_util import os_lab, service_resource

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("db-pw", "rabbit-pw", "keystone-pw")


def reference_layout() -> tuple[Resource, ServiceLayout]:
    lab = load_lab(ROOT / "labs" / "reference.yml")
    resource = service_resource(lab, "cinder")
    return resource, service_layout(resource, lab.name)


def test_reference_lab_puts_cinder_volume_of_lvm_and_nfs_on_the_vm_storage_node() -> None:
    resource, layout = reference_layout()
    config = resource.spec["config"]
    assert resource.spec["hosts"] == ["infra1", "storage1"] and "node/storage1" in resource.deps
    assert config["kernel_nodes"] == {
        "storage1": {"mgmt": "10.238.10.11", "storage": "10.238.20.11", "backends": ["lvm-lioadm", "lvm-tgtadm", "nfs"]}
    }
    ports = {b["name"]: b["target_port"] for b in config["kernel_backends"]}
    assert ports == {"lvm-lioadm": 3260, "lvm-tgtadm": 3261, "nfs": 0}  # LIO holds 3260 in the kernel
    assert config["nfs_shares"] == ["10.238.20.11:/srv/nfs/volumes"] and config["volume_group"] == "cinder-volumes"
    out = backend_outputs(layout)
    assert out["lvm-tgtadm"]["portal"] == "10.238.20.11:3261" and out["nfs"]["pool_prefix"] == "storage1@nfs#"


def test_volume_node_files_name_each_backend_with_its_helper_portal_and_chap() -> None:
    _, layout = reference_layout()
    files = node_files(cinder.SERVICE_RECORD, layout, "storage1", SECRETS)
    conf = files[cinder.CONF]
    assert "my_ip = 10.238.10.11\nenabled_backends = lvm-lioadm,lvm-tgtadm,nfs\n" in conf
    assert "[rbd]" not in conf and conf.count("enabled_backends") == 1
    lio = conf[conf.index("[lvm-lioadm]") : conf.index("[lvm-tgtadm]")]
    for line in ("volume_backend_name = lvm-lioadm", "volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver",
                 "volume_group = cinder-volumes", "target_helper = lioadm", "target_ip_address = 10.238.20.11",
                 "target_port = 3260", "use_chap_auth = true", "lvm_type = default"):  # fmt: skip
        assert f"{line}\n" in lio, line
    assert "target_helper = tgtadm\n" in conf and "target_port = 3261\n" in conf
    nfs = conf[conf.index("[nfs]") :]
    assert "nfs_mount_options = vers=4.2\n" in nfs and "nfs_mount_point_base = /var/lib/cinder/mnt\n" in nfs
    assert files[NFS_SHARES] == "10.238.20.11:/srv/nfs/volumes\n"
    assert "ExecStart=/usr/sbin/tgtd -f --iscsi portal=10.238.20.11:3261\n" in files[TGT_DROPIN]
    assert files[MODULES_LOAD].split() == ["target_core_mod", "target_core_iblock", "iscsi_target_mod"]
    # the database, queue and keystone settings are the controller's (one cinder)
    assert "@10.238.10.10/cinder" in conf and "rabbit://openstack:rabbit-pw@10.238.10.10:5672/" in conf


def test_cinder_rootwrap_on_the_volume_node_skips_eventlets_slow_imports_through_sudo() -> None:
    """cinder-volume's unit sets the two variables and sudo keeps them for the cinder user only: every
    `sudo cinder-rootwrap` then skips pkg_resources and dnspython (66 s -> 8.6 s per call in the TCG VM)."""
    _, layout = reference_layout()
    files = node_files(cinder.SERVICE_RECORD, layout, "storage1", SECRETS)
    dropin = files[cinder.SERVICE_RECORD.dropins["cinder-volume"]]
    assert 'Environment="SETUPTOOLS_USE_DISTUTILS=stdlib" "EVENTLET_NO_GREENDNS=yes"\n' in dropin
    assert dropin.index("[Service]") < dropin.index("Environment=")
    assert (
        files[SUDOERS].splitlines()[1] == 'Defaults:cinder env_keep += "SETUPTOOLS_USE_DISTUTILS EVENTLET_NO_GREENDNS"'
    )
    assert "backend_stats_polling_interval = 300\n" in files[cinder.CONF]


def test_controller_without_rbd_runs_no_cinder_volume_and_needs_no_ceph() -> None:
    _, layout = reference_layout()
    conf = cinder.render_conf(layout, *SECRETS)
    assert "enabled_backends" not in conf and "[rbd]" not in conf
    api = api_only(cinder.SERVICE_RECORD)
    assert api.units == ("cinder-api", "cinder-scheduler") and "cinder-volume" not in api.dropins
    assert "/usr/bin/cinder-volume" not in api.binaries
    cinder.check_backends(layout, ctx=None)  # type: ignore[arg-type]  # no Ceph asked for: nothing to look up


def test_rbd_lab_config_is_unchanged_by_the_kernel_backends() -> None:
    lab = load_lab(ROOT / "labs" / "control-plane.yml")
    config = service_resource(lab, "cinder").spec["config"]
    assert not {"lvm", "nfs", "kernel_nodes", "kernel_backends"} & set(config)


def test_untyped_volumes_get_the_first_declared_backends_type_not_cinders_default() -> None:
    """With several backends, cinder's `__DEFAULT__` type (no volume_backend_name) lets the scheduler put an untyped
    volume on any of them: the API's and the volume node's settings name the first declared backend's type."""
    _, layout = reference_layout()  # backends: [lvm, nfs], lvm with lioadm then tgtadm
    assert backend_types(layout) == ["lvm-lioadm", "lvm-tgtadm", "nfs"]
    assert default_volume_type(layout) == "lvm-lioadm"
    api = cinder.render_conf(layout, *SECRETS)
    node = node_files(cinder.SERVICE_RECORD, layout, "storage1", SECRETS)[cinder.CONF]
    for conf in (api, node):
        head = conf[: conf.index("[database]")]  # [DEFAULT]
        assert conf.count("default_volume_type") == 1 and "default_volume_type = lvm-lioadm\n" in head, conf

    def declared(*backends: str) -> ServiceLayout:
        return dataclasses.replace(layout, config={**layout.config, "backends": list(backends)})

    nfs_first = declared("nfs", "lvm")
    assert backend_types(nfs_first) == ["nfs", "lvm-lioadm", "lvm-tgtadm"] and default_volume_type(nfs_first) == "nfs"
    assert "default_volume_type = nfs\n" in cinder.render_conf(nfs_first, *SECRETS)
    # rbd first in a mixed lab: rbd gets a type of its own (volume_backend_name = rbd) and is the default
    mixed = declared("rbd", "nfs")
    assert backend_types(mixed) == ["rbd", "nfs"] and default_volume_type(mixed) == "rbd"
    assert "default_volume_type = rbd\n" in node_files(cinder.SERVICE_RECORD, mixed, "storage1", SECRETS)[cinder.CONF]
    # rbd alone: one backend, cinder's own default, the settings as before
    lab = load_lab(ROOT / "labs" / "control-plane.yml")
    rbd_only = service_layout(service_resource(lab, "cinder"), lab.name)
    assert default_volume_type(rbd_only) is None and backend_types(rbd_only) == ["rbd"]
    assert "default_volume_type" not in cinder.render_conf(rbd_only, *SECRETS)


def test_reference_cinder_files_golden() -> None:
    """The controller's settings and every file of the VM volume node, as the reference lab renders them."""
    _, layout = reference_layout()
    files = {f"infra1:{cinder.CONF}": cinder.render_conf(layout, *SECRETS)}
    files |= {
        f"storage1:{p}": t for p, t in sorted(node_files(cinder.SERVICE_RECORD, layout, "storage1", SECRETS).items())
    }
    check_golden("services/reference-cinder.txt", "".join(f"==> {p} <==\n{t}\n" for p, t in files.items()))


LAB = os_lab(
    "ck",
    """\
nodes:
  ctl: {kind: container, image: os, nics: [mgmt, storage], roles: [controller]}
  stor: {kind: KIND, image: os, nics: [mgmt, storage], roles: [storage]}
storage:
  lvm: {node: stor}
  nfs: {node: stor, exports: [{name: volumes, path: /srv/nfs/volumes}]}
openstack:
  services: [mariadb, rabbitmq, memcached, keystone, cinder]
  cinder: {backends: [lvm, nfs]}
""",
)


def test_lvm_and_nfs_on_a_container_are_refused_with_the_reason() -> None:
    with pytest.raises(LabError) as caught:
        load_lab_text(LAB.replace("KIND", "container"), "ck.yml")
    text = str(caught.value)
    assert (
        "ck.yml:16:23: openstack.cinder.backends[0]" in text
        and "must run directly on a physical host, not in a container" in text
    )
    assert "kernel NFS client" in text
    lab = load_lab_text(LAB.replace("KIND", "vm"), "ck.yml")
    assert lab.openstack is not None and lab.openstack.cinder.backends == ["lvm", "nfs"]


TGT_SHOW = """Target 1: iqn.2010-10.org.openstack:volume-5a1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store type: null
            Backing store path: None
            Backing store flags:
        LUN: 1
            Type: disk
            Size: 1074 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /dev/cinder-volumes/volume-5a1
            Backing store flags:
    Account information:
        8VnPqQ2kXj
    ACL information:
        ALL
Target 2: iqn.2010-10.org.openstack:volume-77b
    System information:
        Driver: iscsi
    LUN information:
        LUN: 1
            Backing store path: /dev/cinder-volumes/volume-77b
    Account information:
    ACL information:
        10.238.20.12
"""


def test_parse_tgt_targets_reads_backing_stores_accounts_and_acls() -> None:
    targets = parse_tgt_targets(TGT_SHOW)
    first = targets["iqn.2010-10.org.openstack:volume-5a1"]
    assert first.backing == ["/dev/cinder-volumes/volume-5a1"]
    assert first.accounts == ["8VnPqQ2kXj"] and first.acls == ["ALL"]
    second = targets["iqn.2010-10.org.openstack:volume-77b"]
    assert second.accounts == [] and second.acls == ["10.238.20.12"]


def test_parse_findmnt_and_mount_options() -> None:
    line = ('SOURCE="10.238.20.11:/srv/nfs/volumes" TARGET="/var/lib/cinder/mnt/4b1f" FSTYPE="nfs4" '
            'OPTIONS="rw,relatime,vers=4.2,rsize=524288,addr=10.238.20.11,clientaddr=10.238.20.11"\n')  # fmt: skip
    found = parse_findmnt(line)
    assert found["SOURCE"] == "10.238.20.11:/srv/nfs/volumes" and found["FSTYPE"] == "nfs4"
    assert mount_option(found["OPTIONS"], "addr") == "10.238.20.11" and mount_option(found["OPTIONS"], "port") is None
    assert parse_findmnt("") == {}


SESSION_P1 = """Target: iqn.2010-10.org.openstack:volume-5a1 (non-flash)
	Current Portal: 10.238.20.11:3261,1
	Persistent Portal: 10.238.20.11:3261,1
		**********
		Interface:
		**********
		Iface Name: stacklab-cinder-ref
		Iface IPaddress: 10.238.20.12
		SID: 3
		iSCSI Connection State: TRANSPORT WAIT
		iSCSI Session State: FAILED
		Internal iscsid Session State: REOPEN
"""


def test_parse_session_state_reads_sid_and_states() -> None:
    state = parse_session_state(SESSION_P1)
    assert state is not None
    assert (state.sid, state.session, state.connection) == ("3", "FAILED", "TRANSPORT WAIT")
    assert parse_session_state("") is None
