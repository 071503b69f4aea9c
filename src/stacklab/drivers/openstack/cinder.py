"""Cinder (block storage, Zed from Debian's packages) on the controller: API, scheduler and volume service, with
the lab's Ceph cluster as its RBD backend.

Configuration: the package's cinder.conf stays as shipped; stacklab's settings are
`/etc/cinder/cinder.conf.d/50-stacklab.conf`, given after it on the command line of every cinder process by
drop-ins of the package's units (the init scripts pass only cinder.conf, and then oslo.config reads no config
dir). The API runs under uwsgi from the package's `cinder-api.service`, bound to the controller's br-mgmt address
with one process instead of the package's 8x32 threads. Then `cinder-manage db sync`, the `cinder` keystone user
and the `volumev3` endpoints, and the three units. `up` waits until the scheduler reports the RBD pool
(`<controller>@rbd#rbd`): only then has cinder-volume really connected to Ceph.

Backend `rbd`: pool `volumes`, cephx user `client.cinder` (its keyring is put on the controller by the Ceph step,
as on every node of the storage network; stacklab lets the `cinder` group read it), and a libvirt secret UUID
derived from the lab, which nova's hypervisors will use for the same key. Backends `lvm` (target helpers lioadm,
tgtadm) and `nfs` run in a cinder-volume on VM nodes (cinder_kernel.py: device-mapper, LIO and the kernel NFS
client need the node's own kernel); without `rbd` the controller runs the API and the scheduler only.
`openstack.cinder.volume_nodes` runs more cinder-volume services for the RBD backend, one per node, each owning the
volumes it created (cinder_volumes.py); `up` waits for every node's pool.
"""

from __future__ import annotations

import json
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.cinder_kernel import KernelBackendsRole, default_volume_type
from stacklab.drivers.openstack.cinder_volumes import CinderRole
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
    uwsgi_exec_start,
)
from stacklab.drivers.openstack.declared import ApiService
from stacklab.drivers.openstack.infra import (
    AMQP_PORT,
    RABBIT_SECRET,
    RABBIT_USER,
)
from stacklab.drivers.openstack.keystone import (
    admin_get,
    authtoken_section,
    credentials_section,
    service_user_section,
)
from stacklab.drivers.storage.ceph.clients import (
    CEPH_USER,
    keyring_problems,
    rbd_secret_uuid,
    require_keyring,
    share_keyring,
    unshare_keyring,
)
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.node_files import (
    unit_active,
)
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner

PACKAGE_CONF = "/etc/cinder/cinder.conf"
CONF = "/etc/cinder/cinder.conf.d/50-stacklab.conf"
UNITS = ("cinder-api", "cinder-scheduler", "cinder-volume")
DROPINS = {unit: f"/etc/systemd/system/{unit}.service.d/stacklab.conf" for unit in UNITS}
CONFIG_ARGS = f"--config-file {PACKAGE_CONF} --config-file {CONF}"
PORT = 8776
DB_SECRET = "cinder-db"
USER_SECRET = "cinder-keystone"
SECRETS = (DB_SECRET, RABBIT_SECRET, USER_SECRET)
CEPH_POOL = "volumes"
BACKEND = "rbd"
MANAGE_TIMEOUT = 600.0
ENDPOINT_PATH = "/v3/%(project_id)s"  # the catalog entry names the project, as cinder's own docs do
POOL_BUDGET = 180.0
SERVICE = {"name": "cinderv3", "type": "volumev3", "description": "OpenStack Block Storage"}
KERNEL_RPC_TIMEOUT = 600  # seconds; oslo.messaging's default is 60
WIRED_BACKENDS = ("rbd", "lvm", "nfs")  # lvm and nfs: cinder-volume on VM nodes (cinder_kernel.py)


def pool_name(plan: ServiceLayout, node: str | None = None) -> str:
    """The scheduler's name of the pool the cinder-volume on `node` (default: the controller) reports."""
    return f"{node or plan.controller}@{BACKEND}#{BACKEND}"


def check_backends(plan: ServiceLayout, ctx: DriverContext) -> None:
    backends = [str(b) for b in plan.config.get("backends", [BACKEND])]
    rid = f"service/{plan.name}"
    unwired = [b for b in backends if b not in WIRED_BACKENDS]
    if unwired or not backends:
        raise PlanError(
            f"cinder backend {', '.join(unwired) or '(none)'} is not wired yet",
            resource=rid,
            hint="use `openstack: {cinder: {backends: [rbd]}}` (Ceph RBD) for now",
        )
    served = {str(b["name"]).split("-")[0] for b in plan.config.get("kernel_backends") or ()}
    lost = [b for b in backends if b in ("lvm", "nfs") and b not in served]
    if lost:  # a spec built without the loader, which resolves their VM volume node (model/cinder_backends.py)
        raise PlanError(f"cinder backend {', '.join(lost)} has no volume node in the spec", resource=rid,
                        hint="the lab file's openstack.cinder (validate resolves the lvm/nfs volume node)")  # fmt: skip
    if BACKEND not in backends:  # lvm/nfs only: the controller runs no cinder-volume and needs no Ceph
        return
    volume_node = plan.config.get("volume_node")
    if volume_node not in (None, plan.controller):
        raise PlanError(
            f"cinder-volume runs on the controller ({plan.controller}) in this stacklab, not on {volume_node}",
            resource=rid,
            hint="the RBD backend needs no local disk: drop `volume_node` from openstack.cinder",
        )
    ceph = ctx.outputs.get(f"ceph/{ctx.lab.name}") or {}
    missing = [f"pool {CEPH_POOL}"] if CEPH_POOL not in ceph.get("pools", []) else []
    missing += [f"client {CEPH_USER}"] if CEPH_USER not in ceph.get("clients", {}) else []
    if missing:
        raise PlanError(
            f"the RBD backend needs the lab's Ceph cluster with {' and '.join(missing)}",
            resource=rid,
            hint=f"add {CEPH_POOL} to storage.ceph.pools and {CEPH_USER} to storage.ceph.clients",
        )


def render_conf(plan: ServiceLayout, db_password: str, rabbit_password: str, user_password: str) -> str:
    # lvm/nfs backends run in a cinder-volume on their own VM nodes (cinder_kernel.py); the controller's is rbd's
    has_rbd = BACKEND in [str(b) for b in plan.config.get("backends", [BACKEND])]
    enabled = f"enabled_backends = {BACKEND}\n" if has_rbd else ""
    if plan.config.get("kernel_nodes"):  # the API's synchronous calls to cinder-volume on a TCG VM (rootwrap: slow)
        enabled += f"rpc_response_timeout = {KERNEL_RPC_TIMEOUT}\n"
        enabled += f"default_volume_type = {default_volume_type(plan)}\n"  # untyped volumes: the first backend's
    rbd_section = (
        f"[{BACKEND}]\n"
        "volume_driver = cinder.volume.drivers.rbd.RBDDriver\n"
        f"volume_backend_name = {BACKEND}\n"
        f"rbd_pool = {CEPH_POOL}\n"
        "rbd_ceph_conf = /etc/ceph/ceph.conf\n"
        f"rbd_user = {CEPH_USER}\n"
        f"rbd_secret_uuid = {rbd_secret_uuid(plan.lab)}\n"
        "rbd_flatten_volume_from_snapshot = false\n"
        "rados_connect_timeout = 10\n"
        "report_discard_supported = true\n"
    )
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        f"my_ip = {plan.address}\n"
        f"transport_url = rabbit://{RABBIT_USER}:{rabbit_password}@{plan.address}:{AMQP_PORT}/\n"
        "auth_strategy = keystone\n"
        # Debian's cinder.conf sets glance_api_servers to 127.0.0.1:9292, where nothing listens (glance-api binds to
        # its node's lab address), and a later file cannot unset it to fall back to the catalog: glance's endpoint
        f"glance_api_servers = http://{plan.config.get('glance_address') or plan.address}:9292\n"
        f"{enabled}"
        "[database]\n"
        f"connection = mysql+pymysql://cinder:{db_password}@{plan.address}/cinder\n"
        f"{authtoken_section(plan, 'cinder', user_password)}"
        # cinder calls nova (volume events: extend, attach state) as its own user, with its service token beside
        f"{credentials_section(plan, 'nova', 'cinder', user_password)}"
        "interface = public\n"
        f"{service_user_section(plan, 'cinder', user_password)}"
        f"{rbd_section if has_rbd else ''}"
    )


def render_dropin(plan: ServiceLayout, unit: str) -> str:
    """The unit's ExecStart with stacklab's config file after the package's."""
    if unit == "cinder-api":
        log = "/var/log/cinder/cinder-api.log"
        exec_start = uwsgi_exec_start(plan.address, PORT, "/usr/bin/cinder-wsgi", log, pyargv=CONFIG_ARGS)
        return dropin_text(plan.lab, "cinder API on the management network, one process", exec_start, quick_stop=True)
    exec_start = " ".join([f"/usr/bin/{unit}", CONFIG_ARGS, f"--log-file /var/log/cinder/{unit}.log"])
    return dropin_text(plan.lab, f"{unit} with stacklab's settings", exec_start)


def reported_pools(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
    """The pools cinder's scheduler knows (each volume backend reports its pool once its driver is up)."""
    body = admin_get(ctx, runner, plan, service_type=SERVICE["type"], path="/scheduler-stats/get_pools")
    return [str(p.get("name")) for p in json.loads(body or "{}").get("pools", [])]


def wait_for_pool(
    ctx: DriverContext, runner: Runner, plan: ServiceLayout, budget: float = POOL_BUDGET, node: str | None = None
) -> None:
    """Until the scheduler reports the pool of the cinder-volume on `node` (default: the controller)."""
    node = node or plan.controller
    node_runner = runner if node == plan.controller else ctx.on_node(node)
    wanted = pool_name(plan, node)
    pools: list[str] = []

    def failure() -> StackLabError:
        log = node_runner.run(["tail", "-n", "25", "/var/log/cinder/cinder-volume.log"], timeout=15, check=False)
        return StackLabError(
            f"cinder-volume did not report its pool {wanted} within {budget:g}s (reported: {pools or 'none'})",
            resource=f"service/{plan.name}",
            hint=f"end of /var/log/cinder/cinder-volume.log on {node}:\n{log.stdout[-2000:]}",
        )

    def reported() -> bool:
        pools[:] = reported_pools(ctx, runner, plan)
        if wanted in pools:
            return True
        if not unit_active(node_runner, "cinder-volume"):  # no use waiting
            raise failure()
        return False

    try:
        wait_until(reported, budget=budget, interval=3.0, what=f"cinder-volume to report its pool {wanted}")
    except ReadinessTimeout:
        raise failure() from None


def _wait_for_node_pool(ctx: DriverContext, runner: Runner, layout: ServiceLayout, node: str) -> None:
    """Another volume node's pool (`openstack.cinder.volume_nodes`), within the same budget."""
    ctx.progress(f"service/{layout.name}: waiting for {pool_name(layout, node)} (budget {POOL_BUDGET:g}s)")
    wait_for_pool(ctx, runner, layout, node=node)


def _require_keyring(_ctx: DriverContext, runner: Runner, layout: ServiceLayout) -> None:
    require_keyring(runner, layout.controller, f"service/{layout.name}", "controller")


def _share_keyring(_ctx: DriverContext, runner: Runner, _layout: ServiceLayout) -> None:
    share_keyring(runner, "cinder")  # cinder-volume runs as cinder


def _wait_for_pool(ctx: DriverContext, runner: Runner, layout: ServiceLayout) -> None:
    ctx.progress(
        f"service/{layout.name}: waiting for cinder-volume to report {pool_name(layout)} (budget {POOL_BUDGET:g}s)"
    )
    wait_for_pool(ctx, runner, layout)


def outputs(layout: ServiceLayout) -> dict[str, Any]:
    return {"backends": [BACKEND], "pool": pool_name(layout), "ceph_pool": CEPH_POOL, "ceph_user": CEPH_USER,
            "rbd_secret_uuid": rbd_secret_uuid(layout.lab)}  # fmt: skip


SERVICE_RECORD = ApiService(
    name="cinder",
    units=UNITS,
    port=PORT,
    conf=CONF,
    dropins=DROPINS,
    log_file="/var/log/cinder/cinder-api.log",
    catalog=SERVICE,
    sync=("cinder-manage", *CONFIG_ARGS.split(), "db", "sync"),
    binaries={"/usr/bin/cinder-volume": "cinder-volume", "/usr/bin/cinder-wsgi": "cinder-api"},
    render_conf=render_conf,
    render_dropin=render_dropin,
    secrets=SECRETS,
    endpoint_path=ENDPOINT_PATH,
    package_unit="cinder-volume",
    check=lambda ctx, layout: check_backends(layout, ctx),
    prepare=_require_keyring,
    before_sync=_share_keyring,
    after_start=_wait_for_pool,
    after_remove=lambda _ctx, runner, _layout: unshare_keyring(runner),
    extra_problems=lambda runner, _layout: keyring_problems(runner),
    outputs=outputs,
)
ROLE = KernelBackendsRole(  # + cinder-volume of the lvm/nfs backends on VM nodes; the API alone without rbd
    CinderRole(SERVICE_RECORD, pool_of=pool_name, wait_for_pool=_wait_for_node_pool),
    SERVICE_RECORD,
)
