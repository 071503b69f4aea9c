"""Ceph renderers: golden ceph.conf, keyrings, cephadm specs and argv, plus the policy they encode.

Regenerate the golden files after an intended change with `STACKLAB_REGEN_GOLDEN=1 pytest <this file>` and
review the diff.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from stacklab.drivers.storage.ceph.conf import (
    ADMIN_CAPS,
    BOOTSTRAP_OSD_CAPS,
    MGR_CAPS,
    MON_CAPS,
    CephSpec,
    CephSpecError,
    accepted_health_checks,
    cephadm_bootstrap_argv,
    check_key,
    client_caps,
    mon_host,
    osd_weight,
    render_ceph_conf,
    render_cephadm_bootstrap_conf,
    render_cephadm_spec,
    render_keyring,
)
from tests import golden_util

FSID = "2f1e5b7c-3a4d-4e8f-9b0a-1c2d3e4f5a6b"
ENTITIES = (
    "mon.",
    "client.admin",
    "client.bootstrap-osd",
    "client.cinder",
    "client.glance",
    "client.nova",
    "mgr.storage1",
)
# Well-formed cephx keys (base64 of 28 bytes), readable in the golden files.
KEYS = {e: base64.b64encode(e.encode().ljust(28, b"-")).decode() for e in ENTITIES}


def three_node_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "implementation": "packages",
        "mons": {"storage1": "172.29.244.21", "storage2": "172.29.244.22", "storage3": "172.29.244.23"},
        "mgrs": ["storage1"],
        "osds": [
            {"node": "storage1", "count": 1, "size_mib": 4096},
            {"node": "storage2", "count": 1, "size_mib": 4096},
            {"node": "storage3", "count": 1, "size_mib": 4096},
        ],
        "pools": ["volumes", "images", "vms"],
        "clients": ["cinder", "glance", "nova"],
        "replicas": 3,
        "public_network": "172.29.244.0/24",
    }
    spec.update(overrides)
    return spec


def single_host_spec() -> dict[str, Any]:
    return three_node_spec(
        mons={"storage1": "172.29.244.21"},
        osds=[{"node": "storage1", "count": 3, "size_mib": 3072}],
        pools=["rbd"],
        clients=["cinder"],
        replicas=1,
    )


def check_golden(name: str, text: str) -> None:
    golden_util.check_golden(f"ceph/{name}", text)


# ---------------------------------------------------------------------------------------------------------
# golden renders


def test_ceph_conf_osd_and_mon_node() -> None:
    spec = CephSpec.from_spec("aio", three_node_spec())
    check_golden("ceph.conf-storage1", render_ceph_conf(spec, FSID, node="storage1", address="172.29.244.21"))


def test_ceph_conf_client() -> None:
    spec = CephSpec.from_spec("aio", three_node_spec())
    check_golden("ceph.conf-client", render_ceph_conf(spec, FSID))


def test_ceph_conf_single_host() -> None:
    spec = CephSpec.from_spec("micro", single_host_spec())
    check_golden("ceph.conf-single-host", render_ceph_conf(spec, FSID, node="storage1", address="172.29.244.21"))


def test_keyrings() -> None:
    parts = [
        render_keyring("mon.", KEYS["mon."], MON_CAPS),
        render_keyring("client.admin", KEYS["client.admin"], ADMIN_CAPS),
        render_keyring("client.bootstrap-osd", KEYS["client.bootstrap-osd"], BOOTSTRAP_OSD_CAPS),
        render_keyring("mgr.storage1", KEYS["mgr.storage1"], MGR_CAPS),
    ]
    check_golden("keyring-bootstrap", "".join(parts))
    for client in ("cinder", "glance", "nova"):
        check_golden(
            f"keyring-client.{client}",
            render_keyring(f"client.{client}", KEYS[f"client.{client}"], client_caps(client)),
        )


def test_cephadm_spec_and_bootstrap() -> None:
    spec = CephSpec.from_spec("aio", three_node_spec(implementation="cephadm"))
    paths = {n: ["/dev/stacklab-ceph-0/osd"] for n in ("storage1", "storage2", "storage3")}
    text = render_cephadm_spec(spec, paths)
    check_golden("cephadm-services.yml", text)
    docs = list(yaml.safe_load_all(text))
    assert [d["service_type"] for d in docs] == ["mon", "mgr", "osd", "osd", "osd"]
    assert docs[0]["placement"]["hosts"][1] == "storage2:172.29.244.22"
    check_golden("cephadm-bootstrap.conf", render_cephadm_bootstrap_conf(spec))
    check_golden("cephadm-bootstrap-argv.json", json.dumps(cephadm_bootstrap_argv(spec, FSID), indent=2) + "\n")


def test_cephadm_single_host_defaults_only_for_one_host() -> None:
    three = CephSpec.from_spec("aio", three_node_spec(implementation="cephadm"))
    one = CephSpec.from_spec("micro", single_host_spec())
    assert "--single-host-defaults" not in cephadm_bootstrap_argv(three, FSID)
    argv = cephadm_bootstrap_argv(one, FSID)
    assert "--single-host-defaults" in argv
    assert argv[argv.index("--mon-ip") + 1] == "172.29.244.21"
    assert "--skip-monitoring-stack" in argv


# ---------------------------------------------------------------------------------------------------------
# policy


def test_conf_contents_that_matter() -> None:
    spec = CephSpec.from_spec("aio", three_node_spec())
    conf = render_ceph_conf(spec, FSID, node="storage2", address="172.29.244.22")
    assert "mon_host = [v2:172.29.244.21:3300,v1:172.29.244.21:6789],[v2:172.29.244.22:3300" in conf
    assert "crush_location = root=default host=storage2" in conf
    assert "osd_crush_update_on_start = false" in conf
    assert "public_addr = 172.29.244.22" in conf
    assert "auth_cluster_required = cephx" in conf
    assert "mon_allow_pool_delete = false" in conf
    assert spec.marker in conf


@pytest.mark.parametrize(("replicas", "min_size"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_min_size_is_a_majority(replicas: int, min_size: int) -> None:
    osds = [{"node": "storage1", "count": 5, "size_mib": 2048}]
    assert CephSpec.from_spec("x", three_node_spec(replicas=replicas, osds=osds)).min_size == min_size


def test_chooseleaf_and_pg_num() -> None:
    three = CephSpec.from_spec("aio", three_node_spec())
    assert three.chooseleaf_type == 1
    assert three.pg_num == 32
    one = CephSpec.from_spec("micro", single_host_spec())
    assert one.chooseleaf_type == 1
    assert one.pg_num == 128
    three_on_one = CephSpec.from_spec(
        "micro", three_node_spec(osds=[{"node": "storage1", "count": 3, "size_mib": 2048}])
    )
    assert three_on_one.chooseleaf_type == 0  # replicas spread over the OSDs of one host


def test_spec_errors() -> None:
    with pytest.raises(CephSpecError, match="cannot hold 3 replicas"):
        CephSpec.from_spec("x", three_node_spec(osds=[{"node": "storage1", "count": 2, "size_mib": 4096}]))
    with pytest.raises(CephSpecError, match="public_network"):
        CephSpec.from_spec("x", three_node_spec(public_network=None))
    with pytest.raises(CephSpecError, match="below the 1 GiB"):
        CephSpec.from_spec("x", three_node_spec(replicas=1, osds=[{"node": "s", "count": 1, "size_mib": 512}]))


def test_nodes_and_mgr_default() -> None:
    raw = three_node_spec()
    del raw["mgrs"]
    raw["osds"].append({"node": "osdonly", "count": 2, "size_mib": 2048})
    spec = CephSpec.from_spec("aio", raw)
    assert spec.mgrs == ("storage1",)
    assert spec.nodes == ("storage1", "storage2", "storage3", "osdonly")
    assert spec.osd_sizes("osdonly") == [2048, 2048]
    assert mon_host(spec).count("v2:") == 3


def test_client_caps_follow_openstack() -> None:
    assert client_caps("cinder")["osd"] == (
        "profile rbd pool=volumes, profile rbd pool=vms, profile rbd-read-only pool=images"
    )
    assert client_caps("glance") == {
        "mgr": "profile rbd pool=images",
        "mon": "profile rbd",
        "osd": "profile rbd pool=images",
    }
    assert client_caps("other")["osd"] == "profile rbd"


def test_keys_and_entities_are_checked() -> None:
    assert check_key(KEYS["mon."] + "\n") == KEYS["mon."]
    with pytest.raises(ValueError, match="not a cephx key"):
        check_key("secret")
    with pytest.raises(ValueError, match="entity"):
        render_keyring("client admin", KEYS["client.admin"])
    with pytest.raises(ValueError, match="caps"):
        render_keyring("client.x", KEYS["client.admin"], {"mon": 'allow *"'})


def test_weights_and_accepted_health() -> None:
    assert osd_weight(4096) == "0.0039"
    assert osd_weight(1) == "0.0001"
    assert accepted_health_checks(CephSpec.from_spec("aio", three_node_spec())) == {}
    assert set(accepted_health_checks(CephSpec.from_spec("m", single_host_spec()))) == {"POOL_NO_REDUNDANCY"}
