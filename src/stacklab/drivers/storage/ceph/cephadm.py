"""Ceph orchestrated by cephadm (implementation `cephadm`): the kernel/production path.

Proven only by unit tests with FakeRunner. It cannot run on the CI host type: systemd is not PID 1 there, and
podman/crun refuse its hybrid cgroups (host-notes/storage.md section 4e). observe() therefore checks every node
first (systemd as PID 1, a usable podman or docker, cgroups not hybrid, the cephadm binary) and raises a
PlanError naming the `packages` implementation when one is missing, before anything is touched.

The sequence, run through the nodes' Runners:
1. `cephadm bootstrap` on the first mon with --mon-ip = its storage address, the lab's fsid, our bootstrap
   config (memory targets, replicas, mon_data_avail_warn), --skip-monitoring-stack, and --single-host-defaults
   when the cluster has one host; skipped when the first mon already answers with our fsid.
2. cephadm's public SSH key appended to root's authorized_keys on every other node.
3. `ceph orch host add <node> <storage ip>` for every node not yet known to the orchestrator.
4. OSD devices: a sparse file per OSD, attached with losetup and turned into an LV (ceph-volume does not take
   files or loop devices directly); their paths go into the per-host OSD service spec.
5. `ceph orch apply -i services.yml` (mon placement with addresses, mgrs, one OSD spec per host).
6. The shared steps: quorum, OSDs up/in, client keys, RBD pools, HEALTH_OK, with the same budgets as `packages`.
Loop devices do not survive a node reboot; on VMs give the nodes real disks and pass them to
render_cephadm_spec instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.storage.ceph.cluster import (
    FILE_TIMEOUT,
    CephAdmin,
    Waiter,
    cluster_fsid,
    cluster_outputs,
    distribute_clients,
    observe_cluster,
    storage_addresses,
    write_file,
)
from stacklab.drivers.storage.ceph.conf import (
    ADMIN_KEYRING_PATH,
    CEPHADM_BOOTSTRAP_CONF_PATH,
    CEPHADM_DIR,
    CEPHADM_PUB_KEY_PATH,
    CEPHADM_SPEC_PATH,
    CONF_PATH,
    CephSpec,
    accepted_health_checks,
    cephadm_bootstrap_argv,
    client_keyring_path,
    render_cephadm_bootstrap_conf,
    render_cephadm_spec,
)
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Observed

LOG = logging.getLogger(__name__)

BOOTSTRAP_TIMEOUT = 1200.0  # pulls the container image on first use
RM_CLUSTER_TIMEOUT = 600.0
OSD_FILE_DIR = "/var/lib/stacklab-ceph"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
PACKAGES_HINT = (
    "set `storage.ceph.implementation: packages` in the lab file: the Ceph daemons from the distribution's "
    "packages run without systemd as PID 1 or containers"
)


def osd_file(index: int) -> str:
    return f"{OSD_FILE_DIR}/osd-{index}.img"


def osd_vg(index: int) -> str:
    return f"stacklab-ceph-{index}"


def osd_lv_path(index: int) -> str:
    return f"/dev/{osd_vg(index)}/osd"


def preflight_problems(runner: Runner) -> list[str]:
    """Why cephadm cannot run on this node (read-only checks); empty when it can."""
    problems: list[str] = []
    pid1 = runner.run(["cat", "/proc/1/comm"], timeout=FILE_TIMEOUT, check=False).stdout.strip()
    if pid1 != "systemd":
        problems.append(f"PID 1 is {pid1 or 'unknown'}, not systemd (cephadm runs every daemon as a systemd unit)")
    podman = runner.run(["podman", "info", "--format", "{{.Host.CgroupsVersion}}"], timeout=60.0, check=False)
    docker = None if podman.ok else runner.run(["docker", "info"], timeout=60.0, check=False)
    if not podman.ok and (docker is None or not docker.ok):
        problems.append("neither podman nor a running docker engine is usable")
    fstype = runner.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], timeout=FILE_TIMEOUT, check=False)
    if fstype.stdout.strip() != "cgroup2fs":
        unified = runner.run(["test", "-d", "/sys/fs/cgroup/unified"], timeout=FILE_TIMEOUT, check=False)
        if unified.ok:
            problems.append("cgroups are hybrid (v1 controllers + v2 at /sys/fs/cgroup/unified); crun refuses them")
    if not runner.run(["which", "cephadm"], timeout=FILE_TIMEOUT, check=False).ok:
        problems.append("the cephadm binary is not installed")
    return problems


class CephadmCeph:
    """cephadm bootstrap + orchestrator service specs; see the module docstring."""

    name = "cephadm"

    def __init__(self, waiter: Waiter) -> None:
        self.waiter = waiter

    def preflight(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> None:
        found = {node: preflight_problems(ctx.on_node(node)) for node in spec.nodes}
        bad = {node: problems for node, problems in found.items() if problems}
        if bad:
            detail = "; ".join(f"{node}: {', '.join(problems)}" for node, problems in bad.items())
            raise PlanError(f"cephadm cannot run here ({detail})", resource=resource_id, hint=PACKAGES_HINT)

    def observe(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> Observed | None:
        self.preflight(spec, ctx, resource_id)
        return observe_cluster(spec, ctx, resource_id)

    def apply(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> Mapping[str, Any]:
        self.preflight(spec, ctx, resource_id)
        runners = {node: ctx.on_node(node) for node in spec.nodes}
        first = runners[spec.first_mon]
        fsid = cluster_fsid(ctx)
        assert fsid is not None
        admin = CephAdmin(first, resource_id)
        addresses = storage_addresses(spec)

        conf = first.run(["cat", CONF_PATH], timeout=FILE_TIMEOUT, check=False)
        if not (conf.ok and fsid in conf.stdout):
            ctx.progress(f"{resource_id}: cephadm bootstrap on {spec.first_mon}")
            write_file(first, CEPHADM_BOOTSTRAP_CONF_PATH, render_cephadm_bootstrap_conf(spec))
            first.run(cephadm_bootstrap_argv(spec, fsid), timeout=BOOTSTRAP_TIMEOUT)

        pub = first.run(["cat", CEPHADM_PUB_KEY_PATH], timeout=FILE_TIMEOUT).stdout.strip()
        for node in spec.nodes:
            if node != spec.first_mon:
                authorize_key(runners[node], pub)

        known = {str(h.get("hostname")) for h in admin.json("orch", "host", "ls")}
        for node in spec.nodes:
            if node not in known:
                address = [addresses[node]] if node in addresses else []
                admin.ceph("orch", "host", "add", node, *address, timeout=120.0)

        ctx.progress(f"{resource_id}: OSD devices and service specs")
        paths = {node: self._osd_devices(runners[node], spec.osd_sizes(node)) for node in spec.osd_hosts}
        write_file(first, CEPHADM_SPEC_PATH, render_cephadm_spec(spec, paths))
        admin.ceph("orch", "apply", "-i", CEPHADM_SPEC_PATH, timeout=120.0)

        admin.wait_quorum(self.waiter, spec.mon_names)
        admin.wait_osds(self.waiter, spec.osd_count)
        keyrings = admin.ensure_clients(ctx, spec)
        minimal = admin.ceph("config", "generate-minimal-conf").stdout
        admin_keyring = first.run(["cat", ADMIN_KEYRING_PATH], timeout=FILE_TIMEOUT).stdout
        for node, runner in runners.items():
            if node != spec.first_mon:
                write_file(runner, CONF_PATH, minimal)
                write_file(runner, ADMIN_KEYRING_PATH, admin_keyring, mode="0600")
            for client, keyring in keyrings.items():
                write_file(runner, client_keyring_path(client), keyring, mode="0600")
        admin.ensure_pools(spec)
        distribute_clients(spec, ctx, fsid, keyrings, resource_id)
        health = admin.wait_health(self.waiter, accepted_health_checks(spec))
        return cluster_outputs(spec, fsid, health, implementation=self.name)

    @staticmethod
    def _osd_devices(runner: Runner, sizes: list[int]) -> list[str]:
        """A loop-backed LV per OSD (made once; an existing LV is kept)."""
        paths = []
        for index, size in enumerate(sizes):
            lv = osd_lv_path(index)
            paths.append(lv)
            if runner.run(["lvs", f"{osd_vg(index)}/osd"], timeout=FILE_TIMEOUT, check=False).ok:
                continue
            runner.run(["install", "-d", "-m", "0700", OSD_FILE_DIR], timeout=FILE_TIMEOUT)
            runner.run(["truncate", "-s", f"{size}M", osd_file(index)], timeout=FILE_TIMEOUT)
            loop = runner.run(["losetup", "--find", "--show", osd_file(index)], timeout=FILE_TIMEOUT).stdout.strip()
            runner.run(["pvcreate", "--yes", loop], timeout=60.0)
            runner.run(["vgcreate", "--yes", osd_vg(index), loop], timeout=60.0)
            runner.run(["lvcreate", "--yes", "-l", "100%FREE", "-n", "osd", osd_vg(index)], timeout=60.0)
        return paths

    def delete(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> None:
        """`cephadm rm-cluster --zap-osds` on every node, then the loop files, conf, keyrings and SSH key."""
        fsid = cluster_fsid(ctx, create=False)
        if fsid is None:
            LOG.info("%s: no fsid recorded, nothing of ours to remove", resource_id)
            return
        first = ctx.on_node(spec.first_mon)
        pub = first.run(["cat", CEPHADM_PUB_KEY_PATH], timeout=FILE_TIMEOUT, check=False)
        CephAdmin(first, resource_id).ceph("mgr", "module", "disable", "cephadm", check=False)
        for node in spec.nodes:
            runner = ctx.on_node(node)
            try:
                runner.run(
                    ["cephadm", "rm-cluster", "--fsid", fsid, "--force", "--zap-osds"],
                    timeout=RM_CLUSTER_TIMEOUT,
                    check=False,
                )
            except StackLabError as exc:
                LOG.warning("%s: %s unreachable, skipping its cleanup: %s", resource_id, node, exc)
                continue
            for index, _ in enumerate(spec.osd_sizes(node)):
                runner.run(["vgremove", "--yes", "--force", osd_vg(index)], timeout=60.0, check=False)
                attached = runner.run(
                    ["losetup", "--noheadings", "-O", "NAME", "-j", osd_file(index)], timeout=FILE_TIMEOUT, check=False
                )
                for loop in attached.stdout.split():
                    runner.run(["losetup", "-d", loop], timeout=FILE_TIMEOUT, check=False)
                runner.run(["rm", "-f", osd_file(index)], timeout=FILE_TIMEOUT)
            files = [
                CONF_PATH,
                ADMIN_KEYRING_PATH,
                CEPHADM_PUB_KEY_PATH,
                *(client_keyring_path(c) for c in spec.clients),
            ]
            runner.run(["rm", "-f", *files], timeout=FILE_TIMEOUT)
            runner.run(["rm", "-rf", "--one-file-system", CEPHADM_DIR], timeout=FILE_TIMEOUT)
            if pub.ok and pub.stdout.strip() and node != spec.first_mon:
                revoke_key(runner, pub.stdout.strip())


def _authorized(runner: Runner) -> list[str]:
    found = runner.run(["cat", AUTHORIZED_KEYS], timeout=FILE_TIMEOUT, check=False)
    return found.stdout.splitlines() if found.ok else []


def authorize_key(runner: Runner, pub: str) -> None:
    lines = _authorized(runner)
    if pub in (line.strip() for line in lines):
        return
    write_file(runner, AUTHORIZED_KEYS, "\n".join([*lines, pub]) + "\n", mode="0600")


def revoke_key(runner: Runner, pub: str) -> None:
    lines = _authorized(runner)
    kept = [line for line in lines if line.strip() != pub]
    if kept != lines:
        write_file(runner, AUTHORIZED_KEYS, "\n".join(kept) + "\n" if kept else "", mode="0600")
