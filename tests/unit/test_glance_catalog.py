"""nova finds glance through keystone's catalog, not a fixed address (drivers/openstack/nova.py [glance]): glance-api
may run on other nodes than the controller (openstack.glance.nodes, labs/shared-nfs.yml), and the catalog's image
endpoint is where it runs (glance_nfs.py registers it). cinder cannot: Debian's cinder.conf sets glance_api_servers
to 127.0.0.1:9292 (nothing listens there) and a later file cannot unset it, so stacklab names glance's node."""

from __future__ import annotations

from pathlib import Path

from stacklab.drivers.openstack import cinder, nova
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.model.load import load_lab, load_lab_text
from stacklab.plan.expand import expand

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"db_password": "d", "rabbit_password": "r", "user_password": "u"}


def layouts(lab_file: str) -> dict[str, ServiceLayout]:
    lab = load_lab(ROOT / "labs" / lab_file)
    return {r.name: service_layout(r, lab.name) for r in expand(lab) if r.kind == "service"}


def test_nova_and_cinder_name_no_glance_address_and_take_the_catalogs_image_endpoint() -> None:
    plans = layouts("aio.yml")
    plan = plans["nova"]
    computes = [h for h in plan.hosts if h != plan.controller]
    assert computes, "aio has computes"
    for node in (plan.controller, *computes):
        conf = nova.render_conf(plan, node, plan.addresses.get(node) or plan.address, **SECRETS)
        glance = conf[conf.index("[glance]\n") :]
        glance = glance[: glance.index("\n[") + 1]
        # keystoneauth's adapter options for the image service: the catalog's endpoint in the lab's one region
        assert glance == "[glance]\nregion_name = RegionOne\n", glance
        assert "api_servers" not in conf and ":9292" not in conf
    conf = cinder.render_conf(plans["cinder"], "d", "r", "u")
    # the controller's glance-api: Debian's package file says 127.0.0.1:9292, where nothing listens
    assert f"glance_api_servers = http://{plans['cinder'].address}:9292\n" in conf


def test_cinder_reaches_glance_on_its_own_node() -> None:
    text = (ROOT / "labs" / "shared-nfs.yml").read_text()
    text = text.replace(
        "services: [mariadb, memcached, keystone, glance]",
        "services: [mariadb, rabbitmq, memcached, keystone, glance, cinder]\n  cinder: {backends: [nfs]}",
    )
    text = text.replace("      - {name: glance, path: /srv/nfs/glance, size: 1GiB}",
                        "      - {name: glance, path: /srv/nfs/glance, size: 1GiB}\n"
                        "      - {name: volumes, path: /srv/nfs/volumes, size: 1GiB}")  # fmt: skip
    lab = load_lab_text(text, "shared-nfs.yml")
    plans = {r.name: service_layout(r, lab.name) for r in expand(lab) if r.kind == "service"}
    first = next(iter(plans["glance"].config["nodes"].values()))
    assert plans["cinder"].config.get("glance_address") == first != plans["cinder"].address
    conf = cinder.render_conf(plans["cinder"], "d", "r", "u")
    assert f"glance_api_servers = http://{first}:9292\n" in conf
