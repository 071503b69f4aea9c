"""nova and cinder find glance through keystone's catalog, not a fixed address (drivers/openstack/nova.py [glance],
cinder.py [DEFAULT]): glance-api may run on other nodes than the controller (openstack.glance.nodes,
labs/shared-nfs.yml), and the catalog's image endpoint is where it runs (glance_nfs.py registers it)."""

from __future__ import annotations

from pathlib import Path

from stacklab.drivers.openstack import cinder, nova
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.model.load import load_lab
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
    # unset glance_api_servers: cinder reads the request's catalog (glance_catalog_info, image:glance:publicURL)
    assert "glance_api_servers" not in conf and "glance_catalog_info" not in conf and ":9292" not in conf
