"""cinder's kernel backends: `lvm` (LVMVolumeDriver over iSCSI, target helper lioadm and/or tgtadm) and `nfs`
(NfsDriver), each served by a cinder-volume on a VM node (`kernel_nodes` in cinder's spec config, resolved by
model/cinder_backends.py). OpenStack-Ansible's storage page: cinder-volume for iSCSI backends runs "directly on a
physical host (not into a container)"; the lab's VM nodes are that host (their own kernel: device-mapper, LIO,
the NFS client), while cinder-api and cinder-scheduler stay on the controller.

Per kernel node: the controller's settings file with the node's own `my_ip` and its own `enabled_backends`, one
section per backend (`volume_backend_name` = the section's name = the volume type's name), the package's
cinder-volume unit with stacklab's drop-in, and what the backends need on the node:
- lvm: the lab's volume group (storage.lvm, thick LVs: `lvm_type = default`), the portal on the node's br-storage
  address (`target_ip_address`), CHAP from cinder (`use_chap_auth`); lioadm loads LIO's modules (persisted in
  modules-load.d) and cinder-rtstool drives rtslib-fb; tgtadm gets tgtd bound to `<storage IP>:<port>` by a drop-in
  (3261 beside LIO, which holds 3260 in the kernel) and reads cinder's target files through the package's
  `/etc/tgt/conf.d/cinder_tgt.conf`.
- nfs: `/etc/cinder/nfs_shares` lists the lab's exports as `<NFS server storage IP>:<path>`; cinder-volume mounts
  them under `nfs_mount_point_base` with `nfs_mount_options` (the kernel NFS client over br-storage).
Then one volume type per backend (`cinder_types_tool.py` on the controller, admin password on stdin; rbd's too when
the lab also declares it), `default_volume_type` the first declared backend's type (an untyped volume lands there,
not wherever the scheduler picks for `__DEFAULT__`), and `up` waits until the scheduler reports every backend's pool
(`<node>@<backend>#<pool>`).

The role wraps cinder's own (`KernelBackendsRole(inner, api_only)`): with no backend on the controller (no `rbd`),
the controller runs cinder-api and cinder-scheduler only (`api_only`, the same record without cinder-volume and
its Ceph keyring steps): a cinder-volume there would register a backend-less service that stays down.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import rootwrap_env
from stacklab.drivers.openstack.cinder_nodes import VOLUME_UNIT, node_problems, remove_from_node, with_my_ip
from stacklab.drivers.openstack.common import ServiceLayout, ServiceRole, service_secrets
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.openstack.keystone import REGION, admin_get, run_admin_tool
from stacklab.errors import StackLabError
from stacklab.exec.node_files import (
    enable_and_restart,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner

NFS_SHARES = "/etc/cinder/nfs_shares"
# cinder Zed has no rootwrap daemon mode (utils.get_root_helper is always `sudo cinder-rootwrap`): each driver call
# is a fresh rootwrap python, started fast by rootwrap_env's variables in cinder-volume's unit, kept by sudo
SUDOERS = rootwrap_env.sudoers_path("cinder")
# each stats poll is 2-3 rootwrap calls (vgs/lvs, or stat -f/du per share) competing with the calls a request makes;
# cinder's default polls every 60 s, which kept the TCG VM's CPU busy most of the time
STATS_INTERVAL = 300
TGT_DROPIN = "/etc/systemd/system/tgt.service.d/stacklab-cinder.conf"
MODULES_LOAD = "/etc/modules-load.d/stacklab-cinder.conf"
LIO_MODULES = ("target_core_mod", "target_core_iblock", "iscsi_target_mod")
TYPES_TOOL = "/usr/local/lib/stacklab/cinder_types_tool.py"
# cinder-volume on a TCG VM: every driver call is a fresh cinder-rootwrap python under sudo (10-60 s each on a loaded
# 2-core host), and the scheduler hears of a pool only after the driver's first stats
POOL_BUDGET = 900.0
TOOL_TIMEOUT = 180.0


def kernel_nodes(layout: ServiceLayout) -> dict[str, dict[str, Any]]:
    """node -> {"mgmt", "storage", "backends"} from the spec (empty: no lvm/nfs backend)."""
    return {str(k): dict(v) for k, v in (layout.config.get("kernel_nodes") or {}).items()}


def kernel_backends(layout: ServiceLayout) -> list[dict[str, Any]]:
    return [dict(b) for b in layout.config.get("kernel_backends") or ()]


def has_controller_backend(layout: ServiceLayout) -> bool:
    return "rbd" in [str(b) for b in layout.config.get("backends", ["rbd"])]


def backend_types(layout: ServiceLayout) -> list[str]:
    """Every backend's volume type, in the order the lab declares its backends (type name = volume_backend_name =
    the backend's section): `rbd`, `lvm-<helper>` per target helper, `nfs`."""
    kernel = kernel_backends(layout)
    types: list[str] = []
    for declared in [str(b) for b in layout.config.get("backends", ["rbd"])]:
        types += ["rbd"] if declared == "rbd" else [str(b["name"]) for b in kernel if b["driver"] == declared]
    return types


def default_volume_type(layout: ServiceLayout) -> str | None:
    """cinder's `default_volume_type` with kernel backends: the first declared backend's type. Left to cinder's
    `__DEFAULT__` (no volume_backend_name), an untyped volume would land on whichever backend the scheduler weighs
    best; with one rbd backend alone (None here) there is only one place for it, and those labs stay as they were."""
    return backend_types(layout)[0] if kernel_backends(layout) else None


def backend_section(layout: ServiceLayout, backend: Mapping[str, Any], storage_ip: str) -> str:
    """One backend's section of cinder.conf (pure)."""
    name = str(backend["name"])
    head = f"[{name}]\nvolume_backend_name = {name}\n"
    if backend["driver"] == "lvm":
        chap = "true" if layout.config.get("use_chap_auth", True) else "false"
        return head + (
            "volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver\n"
            f"volume_group = {layout.config['volume_group']}\n"
            "lvm_type = default\n"  # thick LVs named volume-<id> in the lab's VG (auto would make a thin pool)
            "volume_clear = none\n"  # lab LVs hold test patterns only; zeroing each on delete costs TCG minutes
            "target_protocol = iscsi\n"
            f"target_helper = {backend['target_helper']}\n"
            f"target_ip_address = {storage_ip}\n"
            f"target_port = {backend['target_port']}\n"
            f"use_chap_auth = {chap}\n"
        )
    return head + (
        "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
        f"nfs_shares_config = {NFS_SHARES}\n"
        f"nfs_mount_point_base = {layout.config['nfs_mount_point_base']}\n"
        f"nfs_mount_options = {layout.config['nfs_mount_options']}\n"
        "nfs_sparsed_volumes = true\n"
        # the exports are no_root_squash and owned by root: cinder-volume works on them as root (through rootwrap);
        # 'auto' would switch to the cinder user on a fresh share, which cannot write the export's root-owned dir
        "nas_secure_file_operations = false\n"
        "nas_secure_file_permissions = false\n"
    )


def node_conf(base: str, layout: ServiceLayout, node: str, info: Mapping[str, Any]) -> str:
    """The controller's settings (rendered without controller backends) for a kernel node: its own my_ip and
    enabled_backends, then its backend sections (pure)."""
    names = [str(b) for b in info["backends"]]
    after = f"enabled_backends = {','.join(names)}\nbackend_stats_polling_interval = {STATS_INTERVAL}"
    after += f"\ndefault_volume_type = {default_volume_type(layout)}"  # as the API's, which `bare` drops
    text = with_my_ip(base, str(info["mgmt"]), after=after)
    sections = [backend_section(layout, b, str(info["storage"])) for b in kernel_backends(layout) if b["node"] == node]
    return text + "".join(sections)


def tgt_dropin(lab: str, portal: str) -> str:
    return (f"# written by stacklab for lab {lab}: tgtd for cinder's tgtadm targets on br-storage only\n"
            f"[Service]\nExecStart=\nExecStart=/usr/sbin/tgtd -f --iscsi portal={portal}\n")  # fmt: skip


def volume_dropin(svc: ApiService, layout: ServiceLayout) -> str:
    """cinder's cinder-volume drop-in plus rootwrap_env's variables (inherited by every `sudo cinder-rootwrap`)."""
    return svc.render_dropin(layout, VOLUME_UNIT) + rootwrap_env.environment_line()


def node_files(svc: ApiService, layout: ServiceLayout, node: str, secrets: tuple[str, ...]) -> dict[str, str]:
    """Every file stacklab writes on the kernel node: path -> text."""
    info = kernel_nodes(layout)[node]
    # the controller's settings without its backends (and without the API's RPC timeout for these nodes)
    bare = dataclasses.replace(layout, config={**layout.config, "backends": [], "kernel_nodes": {}})
    files = {
        svc.conf: node_conf(svc.render_conf(bare, *secrets), layout, node, info),
        svc.dropins[VOLUME_UNIT]: volume_dropin(svc, layout),
        SUDOERS: rootwrap_env.sudoers_text(layout.lab, "cinder"),
    }
    mine = [b for b in kernel_backends(layout) if b["node"] == node]
    if any(b.get("target_helper") == "lioadm" for b in mine):
        files[MODULES_LOAD] = "".join(f"{m}\n" for m in LIO_MODULES)
    for b in mine:
        if b.get("target_helper") == "tgtadm":
            files[TGT_DROPIN] = tgt_dropin(layout.lab, f"{info['storage']}:{b['target_port']}")
    if any(b["driver"] == "nfs" for b in mine):
        files[NFS_SHARES] = "".join(f"{share}\n" for share in layout.config.get("nfs_shares") or ())
    return files


def backend_outputs(layout: ServiceLayout) -> dict[str, Any]:
    nodes = kernel_nodes(layout)
    out: dict[str, Any] = {}
    for b in kernel_backends(layout):
        node, name = str(b["node"]), str(b["name"])
        entry: dict[str, Any] = {
            "node": node,
            "driver": b["driver"],
            "volume_type": name,
            "pool_prefix": f"{node}@{name}#",
        }
        if b["driver"] == "lvm":
            entry |= {"target_helper": b["target_helper"], "portal": f"{nodes[node]['storage']}:{b['target_port']}",
                      "volume_group": layout.config["volume_group"],
                      "use_chap_auth": bool(layout.config.get("use_chap_auth", True))}  # fmt: skip
        else:
            entry |= {"shares": list(layout.config.get("nfs_shares") or ()),
                      "mount_point_base": layout.config["nfs_mount_point_base"],
                      "mount_options": layout.config["nfs_mount_options"]}  # fmt: skip
        out[name] = entry
    return out


def api_only(record: ApiService) -> ApiService:
    """cinder's record without cinder-volume and its Ceph keyring steps: the controller when it has no backend."""

    def _none(_ctx: DriverContext, _runner: Runner, _layout: ServiceLayout) -> None:
        return None

    units = tuple(u for u in record.units if u != VOLUME_UNIT)
    return dataclasses.replace(
        record, units=units, dropins={u: p for u, p in record.dropins.items() if u in units},
        binaries={p: pkg for p, pkg in record.binaries.items() if pkg != VOLUME_UNIT},
        package_unit="cinder-api", prepare=_none, before_sync=_none, after_start=_none, after_remove=_none,
        extra_problems=lambda _runner, _layout: [], outputs=lambda _layout: {"backends": []},
    )  # fmt: skip


class KernelBackendsRole:
    """cinder's role plus the cinder-volume of its lvm/nfs backends on VM nodes."""

    def __init__(self, inner: ServiceRole, record: ApiService) -> None:
        self.inner = inner
        self.record = record  # cinder's whole record: the kernel nodes get its conf and cinder-volume's drop-in
        self.api = DeclaredRole(api_only(record))  # the controller without cinder-volume
        self.name = inner.name

    def _controller(self, plan: ServiceLayout) -> ServiceRole:
        return self.inner if has_controller_backend(plan) else self.api

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        found = self._controller(plan).problems(ctx, runner, plan)
        if not has_controller_backend(plan) and unit_active(runner, VOLUME_UNIT):
            found.append(f"{VOLUME_UNIT} runs on the controller, which has no backend")
        secrets = service_secrets(ctx, self.api.service.secrets, create=False)
        if secrets is None:
            return found
        for node in kernel_nodes(plan):
            units = [VOLUME_UNIT] + (["tgt"] if node_uses_tgt(plan, node) else [])
            found += node_problems(ctx, node, node_files(self.record, plan, node, secrets), units)
        return found

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        outputs = dict(self._controller(plan).ensure(ctx, runner, plan))
        if not has_controller_backend(plan):
            systemctl(runner, "disable", "--now", VOLUME_UNIT, check=False)  # a backend-less service stays down
        nodes = kernel_nodes(plan)
        if not nodes:
            return outputs
        secrets = service_secrets(ctx, self.api.service.secrets, create=False)
        assert secrets is not None  # the controller's step made them
        for node in nodes:
            self._ensure_node(ctx, plan, node, secrets)
        backends = backend_outputs(plan)
        # rbd's too when the lab declares it: the default type may be rbd's, and a mixed lab can ask for each backend
        ensure_volume_types(ctx, runner, plan, {name: name for name in backend_types(plan)})
        wait_for_pools(ctx, runner, plan, [b["pool_prefix"] for b in backends.values()])
        pools = {p for p in reported_pools(ctx, runner, plan)}
        for entry in backends.values():
            entry["pool"] = next(p for p in sorted(pools) if p.startswith(entry["pool_prefix"]))
        return {**outputs, "backends": [*outputs.get("backends", []), *backends], "kernel_backends": backends,
                "default_volume_type": default_volume_type(plan)}  # fmt: skip

    def _ensure_node(self, ctx: DriverContext, plan: ServiceLayout, node: str, secrets: tuple[str, ...]) -> None:
        svc, rid = self.record, f"service/{self.name}"
        info = kernel_nodes(plan)[node]
        ctx.progress(f"{rid}: cinder-volume for {', '.join(info['backends'])} on {node} ({info['storage']})")
        node_runner = ctx.on_node(node)
        require_node(node_runner, node, rid, files={"/usr/bin/cinder-volume": "cinder-volume",
                     "/usr/bin/cinder-rtstool": "python3-cinder"}, unit=VOLUME_UNIT)  # fmt: skip
        files = node_files(svc, plan, node, secrets)
        if MODULES_LOAD in files:  # LIO's configfs tree must exist before cinder-rtstool's first call
            node_runner.run(["modprobe", "-a", *LIO_MODULES], timeout=60)
        changed = write_node_file(node_runner, svc.conf, files[svc.conf], mode="0640", group="cinder")
        if NFS_SHARES in files:
            changed = (
                write_node_file(node_runner, NFS_SHARES, files[NFS_SHARES], mode="0640", group="cinder") or changed
            )
        # sudo reads its drop-ins on every call; 0440 as visudo wants, written before cinder-volume (re)starts
        changed = write_node_file(node_runner, SUDOERS, files[SUDOERS], mode=rootwrap_env.SUDOERS_MODE) or changed
        plain = {p: t for p, t in files.items() if p not in (svc.conf, NFS_SHARES, MODULES_LOAD, SUDOERS)}
        if MODULES_LOAD in files:
            write_node_file(node_runner, MODULES_LOAD, files[MODULES_LOAD])
        units_changed = write_unit_files(node_runner, plain)
        if node_uses_tgt(plan, node):
            enable_and_restart(node_runner, "tgt", changed=TGT_DROPIN in plain and units_changed)
        enable_and_restart(node_runner, VOLUME_UNIT, changed=changed or units_changed)

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        svc = self.record
        paths = (svc.conf, svc.dropins[VOLUME_UNIT], NFS_SHARES, TGT_DROPIN, MODULES_LOAD, SUDOERS)
        for node in kernel_nodes(plan):
            remove_from_node(ctx, f"service/{self.name}", node, paths)
        self._controller(plan).remove(ctx, runner, plan)


def node_uses_tgt(plan: ServiceLayout, node: str) -> bool:
    return any(b["node"] == node and b.get("target_helper") == "tgtadm" for b in kernel_backends(plan))


def ensure_volume_types(ctx: DriverContext, runner: Runner, plan: ServiceLayout, types: Mapping[str, str]) -> None:
    """One public volume type per backend, `volume_backend_name` set (cinder_types_tool.py on the controller)."""
    request = {"region": REGION, "types": dict(types)}
    result = run_admin_tool(ctx, runner, plan, "cinder_types_tool.py", request, path=TYPES_TOOL, timeout=TOOL_TIMEOUT)
    changed = result.get("changed") or []
    if changed:
        ctx.progress(f"service/{plan.name}: volume types: {'; '.join(changed)}")


def reported_pools(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
    body = admin_get(ctx, runner, plan, service_type="volumev3", path="/scheduler-stats/get_pools")
    return [str(p.get("name")) for p in json.loads(body or "{}").get("pools", [])]


def wait_for_pools(ctx: DriverContext, runner: Runner, plan: ServiceLayout, prefixes: list[str]) -> None:
    """Until the scheduler reports a pool for every `<node>@<backend>#` prefix: the backend's driver is up."""
    ctx.progress(f"service/{plan.name}: waiting for the pools of {', '.join(prefixes)} (budget {POOL_BUDGET:g}s)")
    seen: list[str] = []

    def reported() -> bool:
        seen[:] = reported_pools(ctx, runner, plan)
        return all(any(p.startswith(prefix) for p in seen) for prefix in prefixes)

    try:
        wait_until(reported, budget=POOL_BUDGET, interval=5.0, what="cinder-volume's kernel backend pools")
    except ReadinessTimeout:
        missing = [p for p in prefixes if not any(s.startswith(p) for s in seen)]
        logs = []
        for node in kernel_nodes(plan):
            node_runner = ctx.on_node_if_up(node)
            if node_runner is not None:
                tail = node_runner.run(
                    ["tail", "-n", "20", "/var/log/cinder/cinder-volume.log"], timeout=15, check=False
                )
                logs.append(f"{node}:\n{tail.stdout[-1500:]}")
        raise StackLabError(
            f"cinder-volume did not report {', '.join(missing)} within {POOL_BUDGET:g}s (reported: {seen or 'none'})",
            resource=f"service/{plan.name}",
            hint="end of /var/log/cinder/cinder-volume.log on " + "\n".join(logs),
        ) from None
