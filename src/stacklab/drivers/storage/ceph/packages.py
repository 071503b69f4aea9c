"""Ceph from the distribution's packages, built by hand on the lab's nodes (implementation `packages`).

What host-notes/storage.md section 4 verified, as systemd units inside the nodes: keys made with ceph-authtool
(kept in the lab's secrets), the first mon made with monmaptool + `ceph-mon --mkfs`, the other mons joining with
the monmap they fetch, one mgr per spec mgr, BlueStore OSDs on sparse files in their data dirs with the crush
location pinned, RBD pools and client keys. Units come from the Debian packages (`ceph-mon@<node>`,
`ceph-mgr@<node>`, `ceph-osd@<id>`) and are enabled, so a node reboot restarts them.

Every step first checks whether it is already done (mon `done` marker, OSDs under the node's crush host, pools,
file contents by sha256), so a second apply changes nothing and a failed apply resumes. An OSD that fails half
way is purged from the cluster and its directory removed before the error is raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.storage.ceph.cluster import (
    FILE_TIMEOUT,
    CephAdmin,
    Waiter,
    cleanup_runner,
    cluster_fsid,
    cluster_outputs,
    distribute_clients,
    ensure_key,
    observe_cluster,
    storage_addresses,
    write_file,
)
from stacklab.drivers.storage.ceph.conf import (
    ADMIN_CAPS,
    ADMIN_KEYRING_PATH,
    BOOTSTRAP_OSD_CAPS,
    BOOTSTRAP_OSD_KEYRING_PATH,
    CONF_PATH,
    MGR_CAPS,
    MON_CAPS,
    CephSpec,
    accepted_health_checks,
    check_key,
    client_caps,
    client_keyring_path,
    mon_addrvec,
    osd_weight,
    render_ceph_conf,
    render_keyring,
)
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Observed

LOG = logging.getLogger(__name__)

CEPH_LIB = "/var/lib/ceph"
TMP_DIR = f"{CEPH_LIB}/tmp"
MKFS_TIMEOUT = 300.0
SYSTEMCTL_TIMEOUT = 120.0
DAEMON_TYPES = ("osd", "mgr", "mon")  # the order daemons are stopped in
TARGETS = ("ceph.target", "ceph-mon.target", "ceph-mgr.target", "ceph-osd.target")


def daemon_dir(daemon: str, daemon_id: str | int) -> str:
    return f"{CEPH_LIB}/{daemon}/ceph-{daemon_id}"


class PackagesCeph:
    """mon/mgr/osd daemons from ceph-mon, ceph-mgr and ceph-osd, driven over each node's Runner."""

    name = "packages"

    def __init__(self, waiter: Waiter, new_uuid: Callable[[], str]) -> None:
        self.waiter = waiter
        self.new_uuid = new_uuid

    # --- observe ---

    def observe(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> Observed | None:
        return observe_cluster(spec, ctx, resource_id)

    # --- apply ---

    def apply(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> Mapping[str, Any]:
        runners = {node: ctx.on_node(node) for node in spec.nodes}
        first = runners[spec.first_mon]
        fsid = cluster_fsid(ctx)
        assert fsid is not None
        entities = ["mon.", "client.admin", "client.bootstrap-osd", *(f"mgr.{m}" for m in spec.mgrs)]
        keys = {entity: ensure_key(ctx, first, entity) for entity in entities}
        client_keys = {c: ensure_key(ctx, first, f"client.{c}") for c in spec.clients}
        clients = {c: render_keyring(f"client.{c}", k, client_caps(c)) for c, k in client_keys.items()}
        addresses = storage_addresses(spec)

        ctx.progress(f"{resource_id}: ceph.conf and keyrings on {', '.join(spec.nodes)}")
        for node, runner in runners.items():
            self._distribute(
                spec=spec,
                fsid=fsid,
                node=node,
                address=addresses.get(node),
                runner=runner,
                keys=keys,
                clients=clients,
            )

        ctx.progress(f"{resource_id}: monitors")
        admin = self._monitors(spec, runners, fsid, keys, resource_id)
        ctx.progress(f"{resource_id}: managers and client keys")
        self._managers(spec, runners, admin, keys, client_keys)
        ctx.progress(f"{resource_id}: {spec.osd_count} OSDs")
        self._osds(spec, runners, admin)
        ctx.progress(f"{resource_id}: pools {', '.join(spec.pools)}")
        created = admin.ensure_pools(spec)
        if created:
            LOG.info("%s: created pools %s", resource_id, ", ".join(created))
        distribute_clients(spec, ctx, fsid, clients, resource_id)
        health = admin.wait_health(self.waiter, accepted_health_checks(spec))
        return cluster_outputs(spec, fsid, health, implementation=self.name)

    def _monitors(
        self,
        spec: CephSpec,
        runners: Mapping[str, Runner],
        fsid: str,
        keys: Mapping[str, str],
        resource_id: str,
    ) -> CephAdmin:
        """The first monitor from a fresh monmap, the others from the cluster's; each waits for quorum."""
        first = runners[spec.first_mon]
        admin = CephAdmin(first, resource_id)
        mon_keyring = render_keyring("mon.", keys["mon."], MON_CAPS)
        bootstrap = (
            mon_keyring
            + render_keyring("client.admin", keys["client.admin"], ADMIN_CAPS)
            + render_keyring("client.bootstrap-osd", keys["client.bootstrap-osd"], BOOTSTRAP_OSD_CAPS)
        )
        first_ip = spec.mons[0][1]
        if not self._mon_done(first, spec.first_mon):
            monmap = f"{TMP_DIR}/{spec.first_mon}.monmap"
            self._prepare_tmp(first)
            first.run(
                [
                    "monmaptool",
                    "--create",
                    "--clobber",
                    "--fsid",
                    fsid,
                    "--addv",
                    spec.first_mon,
                    mon_addrvec(first_ip),
                    monmap,
                ],
                timeout=FILE_TIMEOUT,
            )
            self._mkfs_mon(first, spec.first_mon, monmap, bootstrap)
        self._start(first, f"ceph-mon@{spec.first_mon}")
        admin.wait_quorum(self.waiter, [spec.first_mon])
        for node in spec.mon_names[1:]:
            runner = runners[node]
            if not self._mon_done(runner, node):
                monmap = f"{TMP_DIR}/{node}.monmap"
                self._prepare_tmp(runner)
                CephAdmin(runner, resource_id).ceph("mon", "getmap", "-o", monmap)
                self._mkfs_mon(runner, node, monmap, mon_keyring)
            self._start(runner, f"ceph-mon@{node}")
        admin.wait_quorum(self.waiter, spec.mon_names)
        return admin

    def _managers(
        self,
        spec: CephSpec,
        runners: Mapping[str, Runner],
        admin: CephAdmin,
        keys: Mapping[str, str],
        client_keys: Mapping[str, str],
    ) -> None:
        """The managers' and clients' cephx entities, then each manager's keyring and unit."""
        auth = admin.auth_dump()
        for mgr in spec.mgrs:
            admin.ensure_entity(f"mgr.{mgr}", keys[f"mgr.{mgr}"], MGR_CAPS, auth)
        for client in spec.clients:
            admin.ensure_entity(f"client.{client}", client_keys[client], client_caps(client), auth)
        for mgr in spec.mgrs:
            runner = runners[mgr]
            path = daemon_dir("mgr", mgr)
            runner.run(["install", "-d", "-o", "ceph", "-g", "ceph", "-m", "0750", path], timeout=FILE_TIMEOUT)
            write_file(
                runner,
                f"{path}/keyring",
                render_keyring(f"mgr.{mgr}", keys[f"mgr.{mgr}"]),
                mode="0600",
                owner="ceph",
                group="ceph",
            )
            self._start(runner, f"ceph-mgr@{mgr}")

    def _osds(self, spec: CephSpec, runners: Mapping[str, Runner], admin: CephAdmin) -> None:
        """The OSDs each host lacks (existing ones keep their ids), all started, then the wait until all are up."""
        by_host = admin.osds_by_host()
        for node in spec.osd_hosts:
            runner = runners[node]
            have = list(by_host.get(node, []))
            for size in spec.osd_sizes(node)[len(have) :]:
                have.append(self._create_osd(spec, node, runner, admin, size))
            for osd_id in have:
                self._start(runner, f"ceph-osd@{osd_id}")
        admin.wait_osds(self.waiter, spec.osd_count)

    def _distribute(
        self,
        *,
        spec: CephSpec,
        fsid: str,
        node: str,
        address: str | None,
        runner: Runner,
        keys: Mapping[str, str],
        clients: Mapping[str, str],
    ) -> None:
        write_file(runner, CONF_PATH, render_ceph_conf(spec, fsid, node=node, address=address))
        write_file(
            runner, ADMIN_KEYRING_PATH, render_keyring("client.admin", keys["client.admin"], ADMIN_CAPS), mode="0600"
        )
        for client, keyring in clients.items():
            write_file(runner, client_keyring_path(client), keyring, mode="0600")
        if node in spec.osd_hosts:
            keyring = render_keyring("client.bootstrap-osd", keys["client.bootstrap-osd"])
            write_file(runner, BOOTSTRAP_OSD_KEYRING_PATH, keyring, mode="0600", owner="ceph", group="ceph")
        runner.run(["systemctl", "enable", *TARGETS], timeout=SYSTEMCTL_TIMEOUT)

    @staticmethod
    def _prepare_tmp(runner: Runner) -> None:
        runner.run(["install", "-d", "-o", "ceph", "-g", "ceph", "-m", "0750", TMP_DIR], timeout=FILE_TIMEOUT)

    @staticmethod
    def _mon_done(runner: Runner, mon: str) -> bool:
        return runner.run(["test", "-e", f"{daemon_dir('mon', mon)}/done"], timeout=FILE_TIMEOUT, check=False).ok

    @staticmethod
    def _mkfs_mon(runner: Runner, mon: str, monmap: str, keyring: str) -> None:
        """`ceph-mon --mkfs` into a fresh data dir (a half-made one from a failed run is removed first)."""
        path = daemon_dir("mon", mon)
        tmp_keyring = f"{TMP_DIR}/{mon}.mon.keyring"
        write_file(runner, tmp_keyring, keyring, mode="0600", owner="ceph", group="ceph")
        runner.run(["chown", "ceph:ceph", monmap], timeout=FILE_TIMEOUT)
        runner.run(["rm", "-rf", "--one-file-system", path], timeout=FILE_TIMEOUT)
        runner.run(["install", "-d", "-o", "ceph", "-g", "ceph", "-m", "0750", path], timeout=FILE_TIMEOUT)
        try:
            runner.run(
                [
                    "ceph-mon",
                    "--cluster",
                    "ceph",
                    "--mkfs",
                    "-i",
                    mon,
                    "--monmap",
                    monmap,
                    "--keyring",
                    tmp_keyring,
                    "--setuser",
                    "ceph",
                    "--setgroup",
                    "ceph",
                ],
                timeout=MKFS_TIMEOUT,
            )
            runner.run(
                ["install", "-o", "ceph", "-g", "ceph", "-m", "0644", "/dev/null", f"{path}/done"], timeout=FILE_TIMEOUT
            )
        finally:
            runner.run(["rm", "-f", tmp_keyring, monmap], timeout=FILE_TIMEOUT, check=False)

    @staticmethod
    def _start(runner: Runner, unit: str) -> None:
        """Enable (restart at boot) and start; a no-op for a unit that is enabled and running."""
        runner.run(["systemctl", "enable", "--now", unit], timeout=SYSTEMCTL_TIMEOUT)

    def _create_osd(self, spec: CephSpec, node: str, runner: Runner, admin: CephAdmin, size_mib: int) -> int:
        """One BlueStore OSD on a sparse file; purged and removed again if any step fails."""
        osd_uuid = self.new_uuid()
        key = check_key(runner.run(["ceph-authtool", "--gen-print-key"], timeout=FILE_TIMEOUT).stdout)
        created = runner.run(
            [
                "ceph",
                "--connect-timeout",
                "20",
                "--name",
                "client.bootstrap-osd",
                "--keyring",
                BOOTSTRAP_OSD_KEYRING_PATH,
                "osd",
                "new",
                osd_uuid,
                "-i",
                "-",
            ],
            timeout=60.0,
            input=json.dumps({"cephx_secret": key}),
        )
        try:
            osd_id = int(created.stdout.strip())
        except ValueError:
            raise StackLabError(
                f"`ceph osd new` printed no OSD id: {created.stdout!r}", resource=f"ceph/{spec.lab}"
            ) from None
        path = daemon_dir("osd", osd_id)
        try:
            runner.run(["install", "-d", "-o", "ceph", "-g", "ceph", "-m", "0750", path], timeout=FILE_TIMEOUT)
            runner.run(["truncate", "-s", f"{size_mib}M", f"{path}/block"], timeout=FILE_TIMEOUT)
            runner.run(["chown", "ceph:ceph", f"{path}/block"], timeout=FILE_TIMEOUT)
            write_file(
                runner, f"{path}/keyring", render_keyring(f"osd.{osd_id}", key), mode="0600", owner="ceph", group="ceph"
            )
            self._mkfs_osd(runner, osd_id, osd_uuid, path)
            admin.ceph("osd", "crush", "add", f"osd.{osd_id}", osd_weight(size_mib), "root=default", f"host={node}")
        except StackLabError:
            LOG.warning("ceph/%s: OSD %s on %s failed; purging it", spec.lab, osd_id, node)
            admin.ceph("osd", "purge", str(osd_id), "--yes-i-really-mean-it", check=False)
            runner.run(["rm", "-rf", "--one-file-system", path], timeout=FILE_TIMEOUT, check=False)
            raise
        LOG.info("ceph/%s: osd.%s (%s MiB) on %s", spec.lab, osd_id, size_mib, node)
        return osd_id

    @staticmethod
    def _mkfs_osd(runner: Runner, osd_id: int, osd_uuid: str, path: str) -> None:
        """`ceph-osd --mkfs`: a BlueStore OSD in `path` (its block file and keyring are there already)."""
        argv = ["ceph-osd", "--cluster", "ceph", "-i", str(osd_id), "--mkfs", "--osd-objectstore", "bluestore"]
        argv += ["--osd-uuid", osd_uuid, "--osd-data", path, "--keyring", f"{path}/keyring"]
        runner.run([*argv, "--setuser", "ceph", "--setgroup", "ceph"], timeout=MKFS_TIMEOUT)

    # --- delete ---

    def delete(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> None:
        """Stop and disable every Ceph unit on every node, then remove data dirs, block files, conf and keyrings.

        A node whose ceph.conf belongs to someone else is left alone; an unreachable node is skipped (its files
        go with the node). Succeeds when everything is already gone.
        """
        fsid = cluster_fsid(ctx, create=False)
        runners: dict[str, Runner] = {}
        for node in spec.nodes:
            runner = cleanup_runner(spec, ctx, node, fsid, resource_id)
            if runner is not None:
                runners[node] = runner
        dirs: dict[str, list[str]] = {}
        for daemon in DAEMON_TYPES:
            for node in reversed(spec.nodes):
                if node not in runners:
                    continue
                ids = self._daemon_ids(runners[node], daemon)
                dirs.setdefault(node, []).extend(daemon_dir(daemon, i) for i in ids)
                if ids:
                    units = [f"ceph-{daemon}@{i}" for i in ids]
                    runners[node].run(["systemctl", "disable", "--now", *units], timeout=SYSTEMCTL_TIMEOUT, check=False)
        for node, runner in runners.items():
            files = [
                CONF_PATH,
                ADMIN_KEYRING_PATH,
                BOOTSTRAP_OSD_KEYRING_PATH,
                *(client_keyring_path(c) for c in spec.clients),
            ]
            if dirs.get(node):
                runner.run(["rm", "-rf", "--one-file-system", *dirs[node]], timeout=120.0)
            runner.run(["rm", "-f", *files], timeout=FILE_TIMEOUT)
            LOG.info("%s: Ceph removed from %s", resource_id, node)

    @staticmethod
    def _daemon_ids(runner: Runner, daemon: str) -> list[str]:
        found = runner.run(
            ["find", f"{CEPH_LIB}/{daemon}", "-mindepth", "1", "-maxdepth", "1", "-name", "ceph-*", "-printf", "%f\n"],
            timeout=FILE_TIMEOUT,
            check=False,
        )
        if not found.ok:
            return []
        return sorted(line.removeprefix("ceph-") for line in found.stdout.split() if line.startswith("ceph-"))
