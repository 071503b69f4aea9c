"""glance's `nfs` store: glance-api on every node of `openstack.glance.nodes`, each with its file store directory
(/var/lib/glance/images) a kernel NFS mount of the same storage.nfs export over br-storage (nfs_mounts.py), as
OpenStack-Ansible's storage page recommends for the File System store ("a shared storage back end (via a file
system mount) to ensure that all glance-api services have access to all images").

The controller keeps what is shared: glance's database in its MariaDB and the keystone user and catalog entry,
whose image endpoint is the first glance node (where a load balancer's address would be; the others answer on
their own br-mgmt addresses). Each glance node gets the controller's settings with its own `bind_host`, the
package unit with stacklab's drop-in (RequiresMountsFor= the store), its cache directories; the schema sync and
the metadata definitions run once, from the first. `GlanceRole` wraps the declared role: any other store is the
declared walk on the controller, unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    file_problems,
    service_secrets,
    unit_problems,
    version_list_answers,
)
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.openstack.infra import ensure_database
from stacklab.drivers.openstack.keystone import register_in_keystone
from stacklab.drivers.openstack.nfs_mounts import NfsMount, ensure_mount, mount_problems, remove_mount
from stacklab.exec.node_files import (
    remove_node_files,
    require_node,
    systemctl,
)
from stacklab.exec.runner import Runner

STORE_DIR = "/var/lib/glance/images"  # glance.IMAGES_DIR without its trailing '/': the mount point


def on_nfs(layout: ServiceLayout) -> bool:
    return layout.config.get("store") == "nfs" and bool(layout.config.get("nodes"))


def glance_nodes(layout: ServiceLayout) -> dict[str, str]:
    """node -> its br-mgmt address, the catalog's endpoint first (from the spec: model/glance_store.py)."""
    return {str(k): str(v) for k, v in (layout.config.get("nodes") or {}).items()}


def node_layout(layout: ServiceLayout, address: str) -> ServiceLayout:
    """The layout glance-api on one node renders from: the controller's, with its own bind address."""
    return dataclasses.replace(layout, config={**layout.config, "bind_address": address})


def store_mount(layout: ServiceLayout) -> NfsMount:
    return NfsMount(
        lab=layout.lab,
        share=str(layout.config["share"]),
        where=STORE_DIR,
        options=str(layout.config.get("mount_options", "vers=4.2")),
        service="glance-api",
    )


def node_url(svc: ApiService, address: str) -> str:
    return f"http://{address}:{svc.port}"


class GlanceRole:
    """glance's ServiceRole: the declared walk on the controller, or with store nfs the walk over its nodes."""

    def __init__(self, inner: DeclaredRole) -> None:
        self.inner = inner
        self.service = inner.service
        self.name = inner.name

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        if not on_nfs(plan):
            return self.inner.problems(ctx, runner, plan)
        svc = self.service
        secrets = service_secrets(ctx, svc.secrets, create=False)
        if secrets is None:
            return [f"the lab's {svc.name} secrets are missing from {ctx.state_dir / 'secrets'}"]
        found: list[str] = []
        for node, address in glance_nodes(plan).items():
            node_runner = ctx.on_node_if_up(node)
            if node_runner is None:
                found.append(f"glance node {node} is not up")
                continue
            mine = node_layout(plan, address)
            found += mount_problems(node_runner, store_mount(plan), node)
            found += file_problems(node_runner, svc.files(mine, secrets), node)
            found += [f"{p} on {node}" for p in svc.extra_problems(node_runner, mine)]
            url = node_url(svc, address)
            answers = lambda r=node_runner, u=url: version_list_answers(r, u)  # noqa: E731
            found += [f"{p} on {node}" for p in unit_problems(node_runner, svc.api_unit, url=url, answers=answers)]
        return found

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        if not on_nfs(plan):
            return self.inner.ensure(ctx, runner, plan)
        svc, rid = self.service, f"service/{self.name}"
        svc.check(ctx, plan)
        nodes = glance_nodes(plan)
        first, first_address = next(iter(nodes.items()))
        secrets = service_secrets(ctx, svc.secrets, create=True)
        assert secrets is not None  # made when missing
        ctx.progress(f"{rid}: database and keystone user on {plan.controller}, endpoints on {first}")
        ensure_database(runner, svc.name, svc.name, secrets[0])
        register_in_keystone(ctx, runner, plan, user=svc.name, password=secrets[-1], service=svc.catalog,
                             url=node_url(svc, first_address) + svc.endpoint_path)  # fmt: skip
        for node, address in nodes.items():  # the first syncs the schema: in turn, not at once
            self._ensure_node(ctx, node, node_layout(plan, address), secrets, first=node == first)
        urls = {node: node_url(svc, address) for node, address in nodes.items()}
        # `node`/`address`/`url`: where the catalog sends clients (the suites read the store there)
        return {**svc.outputs(plan), "node": first, "address": first_address, "url": urls[first], "nodes": urls,
                "share": plan.config["share"], "mount": STORE_DIR}  # fmt: skip

    def _ensure_node(
        self, ctx: DriverContext, node: str, layout: ServiceLayout, secrets: tuple[str, ...], *, first: bool
    ) -> None:
        svc, rid = self.service, f"service/{self.name}"
        runner = ctx.on_node(node)
        require_node(runner, node, rid, files=dict(svc.binaries), unit=svc.api_unit)
        ctx.progress(f"{rid}: {node} mounts {layout.config['share']} at {STORE_DIR}")
        changed = ensure_mount(runner, store_mount(layout), node, rid, owner="glance:glance")
        # the first node syncs with glance's own command (a VM glance node has no root socket of the controller's
        # MariaDB for a seed) and loads the metadata definitions (after_start); the others only start on the schema
        url = node_url(svc, str(layout.config["bind_address"]))
        self.inner.converge_node(ctx, runner, layout, secrets, url=url, sync="plain" if first else "none",
                                 sync_note=f"{rid}: db sync on {node}", changed=changed, after_start=first)  # fmt: skip

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        if on_nfs(plan):
            for node in glance_nodes(plan):
                node_runner = ctx.node_for_delete(f"service/{self.name}", node, "its glance-api goes")
                if node_runner is None:
                    continue
                for unit in reversed(self.service.units):
                    systemctl(node_runner, "disable", "--now", unit, check=False)
                remove_node_files(node_runner, self.service.conf, *self.service.dropins.values())
                remove_mount(node_runner, store_mount(plan))
        self.inner.remove(ctx, runner, plan)
