"""Nova (Zed, from Debian's packages): the API, conductor and scheduler on the controller, nova-compute with libvirt
(QEMU, TCG) on every compute node.

Configuration: the package's nova.conf stays as shipped; stacklab's settings are
`/etc/nova/nova.conf.d/50-stacklab.conf` on every nova node, given after the package's files on the command line
of each process by drop-ins of the package's units (Debian's init scripts pass only their own files), and to the
API through OS_NOVA_CONFIG_FILES (nova's WSGI app reads that list). The API runs under uwsgi on the controller's
br-mgmt address, two single-threaded processes; the metadata API (nova-api-metadata, one process, port 8775) beside
it answers what neutron's metadata agent proxies for guests, checked with the lab's metadata secret ([neutron]).

Controller: databases nova_api, nova and nova_cell0 (one `nova` database user), `api_db sync`, cell0 mapped,
`cell1` created once, `db sync`, the `nova` keystone user and the `compute` endpoints, then the three units.
Computes: libvirtd and nova-compute, each node's own br-mgmt address as my_ip; virt_type qemu (TCG: these nodes
are containers, or VMs without nested KVM). With `images_type: rbd`, instance disks live in the Ceph pool `vms`
as `client.cinder` (the usual Ceph-for-OpenStack layout: one key for volumes and instance disks), whose key
libvirt holds as a secret under the same per-lab UUID cinder hands out for volume attachments. `up` waits until
every nova-compute reports up, maps the computes into cell1 (`discover_hosts`) and waits until each is a
hypervisor (and so a resource provider in placement). The computes live-migrate to each other over libvirt's
qemu+ssh with a per-lab key, QEMU's stream on br-mgmt (nova_migration.py: the files, and why SSH).

Per compute (`openstack.nova.overrides`): a compute may keep its instance disks as local qcow2 files over nova's
base-image cache (`/var/lib/nova/instances/_base`) beside the lab's RBD computes. Such a compute is put in a zone
of its own (a host aggregate carrying `availability_zone`, made through nova's API once the computes report), and
the API sends a boot that names no zone to nova's default zone (`default_schedule_zone`, enforced by the
scheduler's AvailabilityZoneFilter), so an instance that expects shared disks never lands on local ones.
`openstack.nova.image_cache` sets `[image_cache]` on every compute (how often the cache manager runs, when it
removes an unused base image), short enough in the shipped labs for the `caching` suite to watch it happen.

`openstack.nova.instances_on: nfs`: every compute mounts one storage.nfs export at instances_path before
nova-compute starts (nova_instances_nfs.py), so the instances' qcow2 disks are shared files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import neutron_agents, nova_instances_nfs, nova_migration
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
    file_problems,
    service_secrets,
    unit_problems,
    uwsgi_exec_start,
    version_list_answers,
    wait_for_api,
)
from stacklab.drivers.openstack.db_seed import seeded_sync
from stacklab.drivers.openstack.infra import AMQP_PORT, RABBIT_SECRET, RABBIT_USER, ensure_database
from stacklab.drivers.openstack.keystone import (
    admin_get,
    authtoken_section,
    credentials_section,
    register_in_keystone,
    retire_service,
    service_user_section,
)
from stacklab.drivers.storage.ceph.clients import (
    CEPH_USER,
    keyring_key,
    keyring_path,
    rbd_secret_uuid,
    require_keyring,
    share_keyring,
    unshare_keyring,
)
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.node_files import (
    enable_and_restart,
    read_node_file,
    remove_node_files,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.parallel import each_at_once
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner
from stacklab.model.addressing import node_addresses
from stacklab.model.cinder_backends import kernel_backends
from stacklab.model.nova_instances import INSTANCES_PATH

PACKAGE_CONF = "/etc/nova/nova.conf"
COMPUTE_PACKAGE_CONF = "/etc/nova/nova-compute.conf"
CONF = "/etc/nova/nova.conf.d/50-stacklab.conf"
# nova-api-metadata: the metadata API neutron's metadata agent hands guests' requests to (169.254.169.254)
CONTROLLER_UNITS = ("nova-api", "nova-conductor", "nova-scheduler", "nova-api-metadata")
COMPUTE_UNITS = ("libvirtd", "nova-compute")
DROPIN_DIR = "/etc/systemd/system/{unit}.service.d/stacklab.conf"
SECRET_XML = "/etc/stacklab/nova/ceph-secret.xml"
PORT = 8774
DATABASES = ("nova_api", "nova", "nova_cell0")
DB_SECRET = "nova-db"
USER_SECRET = "nova-keystone"
SECRETS = (DB_SECRET, RABBIT_SECRET, USER_SECRET, neutron_agents.METADATA_SECRET)
RBD_POOL = "vms"
MANAGE_TIMEOUT = 900.0
COMPUTE_BUDGET = 240.0
# A VM compute under TCG: nova-compute took 72 s to READY beside four other VMs on two cores, its first resource
# report another ~2 min (the nova-nfs lab's two computes missed 240 s); a ceiling, not a wait
VM_COMPUTE_BUDGET = 900.0
SERVICE = {"name": "nova", "type": "compute", "description": "OpenStack Compute"}
DEFAULT_ZONE = "nova"  # nova's default_availability_zone: every compute no aggregate places elsewhere
# Zed's default filters, and the zone filter: the placement pre-filter alone does not keep a boot for the default
# zone off the hosts of a zone aggregate (it only narrows a request that names an aggregate's zone)
SCHEDULER_FILTERS = (
    "ComputeFilter",
    "ComputeCapabilitiesFilter",
    "ImagePropertiesFilter",
    "ServerGroupAntiAffinityFilter",
    "ServerGroupAffinityFilter",
    "AvailabilityZoneFilter",
)
IMAGE_CACHE_KEYS = ("manager_interval", "remove_unused_base_images", "remove_unused_original_minimum_age_seconds")


def api_url(plan: ServiceLayout) -> str:
    return f"http://{plan.address}:{PORT}"


def metadata_url(plan: ServiceLayout) -> str:
    return f"http://{plan.address}:{neutron_agents.METADATA_PORT}"


def endpoint_url(plan: ServiceLayout) -> str:
    return f"{api_url(plan)}/v2.1"


def computes(plan: ServiceLayout) -> tuple[str, ...]:
    return plan.hosts[1:]


COMPUTE_START_BUDGET = 600  # seconds systemd waits for nova-compute's READY (see render_dropin)


def compute_budget(ctx: DriverContext, hosts: Sequence[str]) -> float:
    """How long `up` waits for the computes to report and be mapped: longer when one is a VM node."""
    return VM_COMPUTE_BUDGET if any(neutron_agents.is_vm(ctx, h) for h in hosts) else COMPUTE_BUDGET


def dropin_path(unit: str) -> str:
    return DROPIN_DIR.format(unit=unit)


def images_type(plan: ServiceLayout, node: str | None = None) -> str:
    """The lab's instance disk type, or compute `node`'s (its override, else the lab's)."""
    override = _override(plan, node).get("images_type")
    return str(override or plan.config.get("images_type", "qcow2"))


def _override(plan: ServiceLayout, node: str | None) -> Mapping[str, Any]:
    return dict((plan.config.get("overrides") or {}).get(node) or {}) if node else {}


def zone(plan: ServiceLayout, node: str) -> str:
    return str(_override(plan, node).get("availability_zone") or DEFAULT_ZONE)


def zones(plan: ServiceLayout) -> dict[str, list[str]]:
    """{zone: its computes} for the zones other than the default one."""
    found: dict[str, list[str]] = {}
    for node in computes(plan):
        if zone(plan, node) != DEFAULT_ZONE:
            found.setdefault(zone(plan, node), []).append(node)
    return found


def image_cache(plan: ServiceLayout) -> dict[str, Any]:
    """The lab's `[image_cache]` settings ({}: nova's defaults)."""
    return {k: v for k, v in dict(plan.config.get("image_cache") or {}).items() if k in IMAGE_CACHE_KEYS}


def cpu_lines(plan: ServiceLayout) -> str:
    """The guests' CPU when the lab names a model (openstack.nova.cpu_model); else nova's default (host-model)."""
    model = plan.config.get("cpu_model")
    return f"cpu_mode = custom\ncpu_models = {model}\n" if model else ""


def schedule_zone_line(plan: ServiceLayout) -> str:
    """With a zone of its own for some computes, a boot that names none goes to the default zone (nova-api)."""
    return f"default_schedule_zone = {DEFAULT_ZONE}\n" if zones(plan) else ""


def _ini(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_plan(plan: ServiceLayout, ctx: DriverContext) -> None:
    rid = f"service/{plan.name}"
    if plan.config.get("instances_on", "local") not in ("local", "nfs"):
        raise PlanError(
            f"nova instances_on {plan.config['instances_on']!r} is not wired yet",
            resource=rid,
            hint="use `images_type: rbd` for instance disks on Ceph, instances_on: nfs, or the default local disks",
        )
    nova_instances_nfs.check(plan)
    if any(images_type(plan, node) == "rbd" for node in computes(plan)):
        ceph = ctx.outputs.get(f"ceph/{ctx.lab.name}") or {}
        missing = [f"pool {RBD_POOL}"] if RBD_POOL not in ceph.get("pools", []) else []
        missing += [f"client {CEPH_USER}"] if CEPH_USER not in ceph.get("clients", {}) else []
        if missing:
            raise PlanError(
                f"nova's rbd images need the lab's Ceph cluster with {' and '.join(missing)}",
                resource=rid,
                hint=f"add {RBD_POOL} to storage.ceph.pools and {CEPH_USER} to storage.ceph.clients",
            )


def render_conf(
    plan: ServiceLayout, node: str, my_ip: str, *, db_password: str, rabbit_password: str, user_password: str,
    metadata_secret: str = "",
) -> str:  # fmt: skip
    """nova's settings on `node`: the controller gets the databases and the API's token check, a compute its
    hypervisor; both reach placement, neutron, glance and cinder through the catalog as `nova`, and send nova's
    service token with every such call (`[service_user]`): cinder deletes an in-use attachment (detach, rebuild,
    delete of a server with a volume) only for a request that carries it."""
    text = (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        f"my_ip = {my_ip}\n"
        f"transport_url = rabbit://{RABBIT_USER}:{rabbit_password}@{plan.address}:{AMQP_PORT}/\n"
        f"{schedule_zone_line(plan)}"
        "[api]\n"
        "auth_strategy = keystone\n"
        "[glance]\n"  # no api_servers (deprecated): the catalog's image endpoint, wherever glance-api runs
        "region_name = RegionOne\n"
        "[cinder]\n"
        "os_region_name = RegionOne\n"
        "[oslo_concurrency]\n"
        "lock_path = /var/lib/nova/tmp\n"
        "[vnc]\n"
        "enabled = false\n"
        f"{credentials_section(plan, 'placement', 'nova', user_password)}"
        f"{credentials_section(plan, 'neutron', 'nova', user_password)}"
        f"{metadata_lines(plan, node, metadata_secret)}"
        f"{service_user_section(plan, 'nova', user_password)}"
    )
    if node == plan.controller:
        text += (
            "[api_database]\n"
            f"connection = mysql+pymysql://nova:{db_password}@{plan.address}/nova_api\n"
            "[database]\n"
            f"connection = mysql+pymysql://nova:{db_password}@{plan.address}/nova\n"
            f"{authtoken_section(plan, 'nova', user_password)}"
            "[conductor]\n"
            "workers = 1\n"
            "[scheduler]\n"
            "workers = 1\n"
        )
        if zones(plan):
            text += f"[filter_scheduler]\nenabled_filters = {','.join(SCHEDULER_FILTERS)}\n"
    if node in computes(plan):
        text += (
            "[compute]\n"
            "compute_driver = libvirt.LibvirtDriver\n"
            "[libvirt]\n"
            # TCG: the compute nodes are containers (or VMs without nested KVM)
            "virt_type = qemu\n"
            f"{cpu_lines(plan)}"
            f"{nova_migration.nova_conf_lines(my_ip)}"
            f"images_type = {images_type(plan, node)}\n"
        )
        if images_type(plan, node) == "rbd":
            text += (
                f"images_rbd_pool = {RBD_POOL}\n"
                "images_rbd_ceph_conf = /etc/ceph/ceph.conf\n"
                f"rbd_user = {CEPH_USER}\n"
                f"rbd_secret_uuid = {rbd_secret_uuid(plan.lab)}\n"
            )
        if image_cache(plan):
            text += "[image_cache]\n" + "".join(f"{k} = {_ini(v)}\n" for k, v in image_cache(plan).items())
    return text


def metadata_lines(plan: ServiceLayout, node: str, secret: str) -> str:
    """[neutron] on the controller, where the metadata API runs: it answers requests neutron's metadata agent
    proxies for guests, signed with the lab's shared secret."""
    if node != plan.controller:
        return ""
    return f"service_metadata_proxy = true\nmetadata_proxy_shared_secret = {secret}\n"


def render_dropin(plan: ServiceLayout, unit: str) -> str:
    """The unit's ExecStart with the package's files, then stacklab's."""
    if unit == "nova-api-metadata":
        exec_start = uwsgi_exec_start(plan.address, neutron_agents.METADATA_PORT, "/usr/bin/nova-metadata-wsgi",
                                      "/var/log/nova/nova-api-metadata.log", processes=1, threads=1)  # fmt: skip
        env = f"OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf;{CONF.removeprefix('/etc/nova/')}"
        what = "nova's metadata API on the management network, one process"
        return dropin_text(plan.lab, what, exec_start, environment=env, quick_stop=True)
    if unit == "nova-api":
        # nova monkey-patches eventlet: with uwsgi threads the RPC reply listener never runs, and every RPC *call*
        # from the API (volume attach...) times out; one thread per process, two processes
        exec_start = uwsgi_exec_start(plan.address, PORT, "/usr/bin/nova-api-wsgi", "/var/log/nova/nova-api.log",
                                      processes=2, threads=1)  # fmt: skip
        # nova's WSGI app reads this list (relative to /etc/nova; the first is its paste file)
        env = f"OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf;{CONF.removeprefix('/etc/nova/')}"
        what = "nova API on the management network, two processes"
        return dropin_text(plan.lab, what, exec_start, environment=env, quick_stop=True)
    files = [PACKAGE_CONF, *([COMPUTE_PACKAGE_CONF] if unit == "nova-compute" else []), CONF]
    argv = [f"/usr/bin/{unit}", *(f"--config-file {f}" for f in files), f"--log-file /var/log/nova/{unit}.log"]
    text = dropin_text(plan.lab, f"{unit} with stacklab's settings", " ".join(argv))
    if unit != "nova-compute":
        return text
    # The package's unit is Type=notify: nova-compute says READY after init_host and its first resource report.
    # In a TCG VM compute that took 48 s on a quiet host and more than systemd's default 90 s with five VMs on two
    # cores (restart failed "because a timeout was exceeded"); `up` has its own budget for the service to register.
    text += f"TimeoutStartSec={COMPUTE_START_BUDGET}\n"
    # instances_on nfs: nova-compute starts only on its instances_path mount
    return text + nova_instances_nfs.dropin_lines(plan)


def render_secret_xml(plan: ServiceLayout) -> str:
    return (
        "<secret ephemeral='no' private='no'>\n"
        f"  <uuid>{rbd_secret_uuid(plan.lab)}</uuid>\n"
        f"  <usage type='ceph'><name>client.{CEPH_USER} secret of lab {plan.lab}</name></usage>\n"
        "</secret>\n"
    )


def manage_argv(*args: str) -> list[str]:
    return ["runuser", "-u", "nova", "--", "nova-manage", "--config-file", PACKAGE_CONF, "--config-file", CONF, *args]


def api_answers(runner: Runner, plan: ServiceLayout) -> bool:
    return version_list_answers(runner, api_url(plan))


def compute_states(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> dict[str, str]:
    """{host: state} of the nova-compute services the API knows."""
    body = admin_get(ctx, runner, plan, service_type="compute", path="/os-services?binary=nova-compute")
    return {str(s["host"]): str(s["state"]) for s in json.loads(body or "{}").get("services", [])}


def hypervisors(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
    body = admin_get(ctx, runner, plan, service_type="compute", path="/os-hypervisors")
    return sorted(str(h["hypervisor_hostname"]) for h in json.loads(body or "{}").get("hypervisors", []))


def initiator_units(ctx: DriverContext) -> tuple[str, ...]:
    """What os-brick needs running on each compute for the lab's cinder backends: iscsid (open-iscsi's daemon, the
    kernel initiator's login and recovery) for lvm volumes over iSCSI. Those computes are VM nodes (a container
    compute for a kernel backend is refused at validate, model/cinder_backends.py); a kernel NFS mount needs no
    daemon (NFSv4), and rbd volumes go through QEMU's librbd."""
    return ("iscsid",) if any(b.driver == "lvm" for b in kernel_backends(ctx.lab)) else ()


INITIATOR_FILE = "/etc/iscsi/initiatorname.iscsi"


def initiator_files(ctx: DriverContext, plan: ServiceLayout, node: str) -> dict[str, str]:
    """The compute's own iSCSI initiator name, read by iscsid and by os-brick's connector (cinder's LIO ACLs name
    it): the image carries the one open-iscsi generated when the image was built, the same on every node."""
    if not initiator_units(ctx):
        return {}
    iqn = f"iqn.2026-11.dev.stacklab:{plan.lab}:{node}"
    return {INITIATOR_FILE: f"# written by stacklab for lab {plan.lab}: unique per node\nInitiatorName={iqn}\n"}


def block_storage_lines(ctx: DriverContext, node: str) -> str:
    """On a compute of a lab with cinder kernel backends, os-brick's connector gives cinder the compute's br-storage
    address (`my_block_storage_ip`; nova's default is my_ip, on br-mgmt), the network its iSCSI sessions and NFS
    mounts use. A later [DEFAULT] in the same file adds to the first (oslo.config)."""
    if not kernel_backends(ctx.lab):
        return ""
    address = node_addresses(ctx.lab).get(node, {}).get("storage")
    return f"[DEFAULT]\nmy_block_storage_ip = {address}\n" if address else ""


def compute_outputs(plan: ServiceLayout) -> dict[str, Any]:
    """What the suites read about each compute: its disk type and zone, the cache manager's settings, and where
    the instance disks, the base-image cache and the log are."""
    return {"images_types": {c: images_type(plan, c) for c in computes(plan)},
            "zones": {c: zone(plan, c) for c in computes(plan)}, "image_cache": image_cache(plan),
            "instances_path": INSTANCES_PATH, "compute_log": "/var/log/nova/nova-compute.log",
            **nova_instances_nfs.outputs(plan)}  # fmt: skip


def openstack_argv(*args: str) -> list[str]:
    """openstackclient on the controller as keystone's admin (the credentials from the 0600 openrc, not argv)."""
    return ["sh", "-c", '. /root/admin-openrc && exec openstack "$@"', "openstack", *args]


def ensure_zone(runner: Runner, name: str, members: list[str]) -> None:
    """A host aggregate `name` with availability zone `name`, holding exactly `members` among its hosts (made once;
    a later `up` adds what is missing)."""
    shown = runner.run(openstack_argv("aggregate", "show", name, "-f", "json"), timeout=120, check=False)
    if not shown.ok:
        shown = runner.run(openstack_argv("aggregate", "create", "--zone", name, name, "-f", "json"), timeout=120)
    aggregate = json.loads(shown.stdout)
    if aggregate.get("availability_zone") != name:
        raise StackLabError(
            f"host aggregate {name} exists with zone {aggregate.get('availability_zone')!r}, not {name!r}",
            resource="service/nova",
            hint=f"`openstack aggregate set --zone {name} {name}` on the controller, or rename the lab's zone",
        )
    for host in members:
        if host not in (aggregate.get("hosts") or []):
            runner.run(openstack_argv("aggregate", "add", "host", name, host), timeout=120)


def zone_problems(runner: Runner, name: str, members: list[str]) -> list[str]:
    """What `observe` finds wrong with zone `name`'s host aggregate: missing, another zone, or a member outside it
    (a compute in no aggregate silently lands in the default zone, where a boot naming no zone would use it)."""
    shown = runner.run(openstack_argv("aggregate", "show", name, "-f", "json"), timeout=120, check=False)
    if not shown.ok:
        return [f"host aggregate {name} (availability zone {name}) is missing"]
    aggregate = json.loads(shown.stdout)
    found = []
    if aggregate.get("availability_zone") != name:
        found.append(f"host aggregate {name} has zone {aggregate.get('availability_zone')!r}, not {name!r}")
    hosts = aggregate.get("hosts") or []
    found += [f"{host} is not in zone {name}'s host aggregate" for host in members if host not in hosts]
    return found


class Nova:
    name = "nova"

    def _files(self, ctx: DriverContext, plan: ServiceLayout, node: str, secrets: tuple[str, ...]) -> dict[str, str]:
        my_ip = plan.addresses[node]
        db, rabbit, user, *metadata = secrets  # the metadata secret last (callers that only render a compute omit it)
        files = {CONF: render_conf(plan, node, my_ip, db_password=db, rabbit_password=rabbit, user_password=user,
                                   metadata_secret="".join(metadata[:1]))}  # fmt: skip
        units: list[str] = list(CONTROLLER_UNITS) if node == plan.controller else []
        if node in computes(plan):
            units.append("nova-compute")
            files[CONF] += block_storage_lines(ctx, node)
            files |= initiator_files(ctx, plan, node)
        files |= {dropin_path(u): render_dropin(plan, u) for u in units}
        if node in computes(plan) and images_type(plan, node) == "rbd":
            files[SECRET_XML] = render_secret_xml(plan)
        return files

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        secrets = service_secrets(ctx, SECRETS, create=False)
        if secrets is None:
            return [f"the lab's nova secrets are missing from {ctx.state_dir / 'secrets'}"]
        found = file_problems(runner, self._files(ctx, plan, plan.controller, secrets))
        answers = lambda: api_answers(runner, plan)  # noqa: E731
        found += unit_problems(runner, "nova-api", url=api_url(plan), answers=answers)
        for unit in CONTROLLER_UNITS[1:]:
            found += unit_problems(runner, unit)
        for node in computes(plan):
            node_runner = ctx.on_node_if_up(node)
            if node_runner is None:
                found.append(f"{node} is not reachable")
                continue
            found += file_problems(node_runner, self._files(ctx, plan, node, secrets), node)
            found += nova_instances_nfs.instances_problems(node_runner, plan, node)
            try:
                migration = self._migration_files(ctx, plan, node, create=False)
            except StackLabError as exc:  # a peer compute down or without its host key: the files cannot be known
                found.append(f"live-migration files of {node}: {exc}")
                migration = {}
            if migration is None:
                found.append(f"the lab's live-migration key {nova_migration.KEY_SECRET} is missing")
            found += file_problems(node_runner, migration or {}, node)
            units = (*COMPUTE_UNITS, *initiator_units(ctx))
            found += [f"{p} on {node}" for u in units for p in unit_problems(node_runner, u)]
        for name, members in zones(plan).items():
            found += zone_problems(runner, name, members)
        return found

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        rid = f"service/{self.name}"
        check_plan(plan, ctx)
        require_node(runner, plan.controller, rid, files={"/usr/bin/nova-api-wsgi": "nova-api",
                     "/usr/bin/nova-conductor": "nova-conductor", "/usr/bin/nova-scheduler": "nova-scheduler",
                     "/usr/bin/nova-metadata-wsgi": "nova-api"},
                     unit="nova-api")  # fmt: skip
        secrets = service_secrets(ctx, SECRETS, create=True) or ("", "", "", "")
        ctx.progress(f"{rid}: databases, keystone user and endpoints")
        for database in DATABASES:
            ensure_database(runner, database, "nova", secrets[0])
        register_in_keystone(ctx, runner, plan, user="nova", password=secrets[2], service=SERVICE,
                             url=endpoint_url(plan))  # fmt: skip
        changed = self._write(runner, self._files(ctx, plan, plan.controller, secrets))
        ctx.progress(f"{rid}: api_db sync, cells, db sync")
        seeded_sync(ctx, runner, ("nova_api",), manage_argv("api_db", "sync"), timeout=MANAGE_TIMEOUT)
        runner.run(manage_argv("cell_v2", "map_cell0"), timeout=MANAGE_TIMEOUT)
        cells = runner.run(manage_argv("cell_v2", "list_cells"), timeout=MANAGE_TIMEOUT).stdout
        if not any(line.split("|")[1:2] == [" cell1 "] for line in cells.splitlines()):
            runner.run(manage_argv("cell_v2", "create_cell", "--name", "cell1"), timeout=MANAGE_TIMEOUT)
        seeded_sync(ctx, runner, ("nova", "nova_cell0"), manage_argv("db", "sync"), timeout=MANAGE_TIMEOUT)
        for unit in CONTROLLER_UNITS:
            enable_and_restart(runner, unit, changed=changed)
        wait_for_api(runner, rid, url=api_url(plan), unit="nova-api", log_file="/var/log/nova/nova-api.log",
                     answers=lambda: api_answers(runner, plan))  # fmt: skip
        wait_for_api(runner, rid, url=metadata_url(plan), unit="nova-api-metadata",
                     log_file="/var/log/nova/nova-api-metadata.log",
                     answers=lambda: version_list_answers(runner, metadata_url(plan)))  # fmt: skip
        ctx.progress(f"{rid}: nova-compute on {', '.join(computes(plan))}")
        # each compute is its own node (own SSH connection, own libvirtd): configured side by side, ~7 s each
        runners = {node: ctx.on_node(node) for node in computes(plan)}
        each_at_once(lambda node: self._ensure_compute(ctx, runners[node], plan, node, secrets), computes(plan))
        ctx.progress(f"{rid}: waiting for {', '.join(computes(plan))} to report, then discover_hosts")
        self._wait_for_computes(ctx, runner, plan)
        for name, members in zones(plan).items():
            ctx.progress(f"{rid}: zone {name} for {', '.join(members)}")
            ensure_zone(runner, name, members)
        return {**compute_outputs(plan), "url": endpoint_url(plan), "computes": list(computes(plan)),
                "images_type": images_type(plan),
                "virt_type": "qemu", "cells": ["cell0", "cell1"],
                "live_migration": {"scheme": nova_migration.SCHEME, "ports": [nova_migration.PORT_MIN,
                                   nova_migration.PORT_MAX], "inbound": {n: plan.addresses[n] for n in computes(plan)}},
                }  # fmt: skip

    def _migration_files(
        self, ctx: DriverContext, plan: ServiceLayout, node: str, *, create: bool
    ) -> dict[str, str] | None:
        """The live-migration files of compute `node` (nova_migration.py); None when the lab key is missing."""
        pair = nova_migration.lab_key(ctx.state_dir, create=create)
        if pair is None:
            return None
        peers = {}
        for peer in (p for p in computes(plan) if p != node):
            peer_runner = ctx.on_node(peer) if create else ctx.on_node_if_up(peer)
            if peer_runner is None:  # observe: a compute that is down is reported by problems() itself
                raise StackLabError(f"{peer} is not reachable", resource=f"service/{plan.name}")
            peers[plan.addresses[peer]] = nova_migration.host_key(peer_runner, peer)
        return nova_migration.node_files(plan.lab, plan.addresses[node], key=pair[0], public=pair[1], peers=peers)

    def _write(self, runner: Runner, files: Mapping[str, str]) -> bool:
        """Write the node's files (drop-ins through one daemon-reload); True when one changed."""
        dropins = {path: text for path, text in files.items() if path.startswith("/etc/systemd/")}
        changed = [write_node_file(runner, CONF, files[CONF], mode="0640"), write_unit_files(runner, dropins)]
        changed += [write_node_file(runner, p, t) for p, t in files.items() if p != CONF and p not in dropins]
        runner.run(["chown", "root:nova", CONF], timeout=30)
        return any(changed)

    def _ensure_compute(
        self, ctx: DriverContext, runner: Runner, plan: ServiceLayout, node: str, secrets: tuple[str, ...]
    ) -> None:
        rid = f"service/{self.name}"
        require_node(runner, node, rid, files={"/usr/bin/nova-compute": "nova-compute",
                     "/usr/sbin/libvirtd": "libvirt-daemon-system"}, unit="nova-compute")  # fmt: skip
        if images_type(plan, node) == "rbd":
            require_keyring(runner, node, rid, "compute")
        # instances_on nfs: the export mounted at instances_path before nova-compute (re)starts on it
        if nova_instances_nfs.on_nfs(plan):
            ctx.progress(f"{rid}: {node} mounts {plan.config['instances_share']} at {INSTANCES_PATH}")
        mounted = nova_instances_nfs.ensure_instances(runner, plan, node)
        changed = self._write(runner, self._files(ctx, plan, node, secrets)) or mounted
        libvirt_changed = nova_migration.write_files(runner, self._migration_files(ctx, plan, node, create=True) or {})
        enable_and_restart(runner, "libvirtd", changed=libvirt_changed)
        if images_type(plan, node) == "rbd":
            # nova-compute (as nova) opens RBD itself; QEMU gets the key from libvirt's secret
            share_keyring(runner, "nova")
            uuid = rbd_secret_uuid(plan.lab)
            runner.run(["virsh", "secret-define", "--file", SECRET_XML], timeout=60)
            key = keyring_key(read_node_file(runner, keyring_path()) or "")
            key_file = f"/etc/stacklab/nova/{uuid}.key"
            write_node_file(runner, key_file, key + "\n", mode="0600")
            try:
                runner.run(["virsh", "secret-set-value", "--secret", uuid, "--file", key_file], timeout=60)
            finally:
                remove_node_files(runner, key_file)
        for unit in initiator_units(ctx):  # before nova-compute, which may attach volumes as soon as it starts
            enable_and_restart(runner, unit, changed=changed)  # iscsid reads its initiator name at start
        enable_and_restart(runner, "nova-compute", changed=changed)

    def _wait_for_computes(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        wanted = sorted(computes(plan))
        seen: dict[str, list[str]] = {"up": [], "found": []}
        budget = compute_budget(ctx, wanted)

        def mapped() -> bool:
            states = compute_states(ctx, runner, plan)
            seen["up"] = sorted(h for h, state in states.items() if state == "up")
            seen["found"] = []
            if not set(wanted) <= set(seen["up"]):
                return False
            # On every poll until every compute is found: a compute's service reports up before its resource
            # tracker writes the compute node record, and discover_hosts maps only the records that exist when it
            # runs (a TCG VM compute can be a minute behind; the nova-nfs lab's second compute was never mapped).
            runner.run(manage_argv("cell_v2", "discover_hosts"), timeout=MANAGE_TIMEOUT)
            seen["found"] = list(hypervisors(ctx, runner, plan))
            return set(wanted) <= set(seen["found"])

        try:
            wait_until(mapped, budget=budget, interval=5.0, what=f"nova-compute on {', '.join(wanted)}")
        except ReadinessTimeout:
            raise StackLabError(
                f"nova-compute on {', '.join(wanted)} did not come up within {budget:g}s "
                f"(services up: {seen['up'] or 'none'}; hypervisors: {seen['found'] or 'none'})",
                resource=f"service/{plan.name}",
                hint="see /var/log/nova/nova-compute.log and `journalctl -u libvirtd` on the compute nodes",
            ) from None

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        for node in computes(plan):
            node_runner = ctx.on_node_if_up(node)
            if node_runner is None:
                continue
            systemctl(node_runner, "disable", "--now", "nova-compute", check=False)
            nova_instances_nfs.remove_instances(node_runner, plan)  # the disks stay on the export
            if unit_active(node_runner, "libvirtd"):
                node_runner.run(["virsh", "secret-undefine", rbd_secret_uuid(plan.lab)], timeout=60, check=False)
            systemctl(node_runner, "disable", "--now", "libvirtd", check=False)
            nova_migration.remove(node_runner)
            unshare_keyring(node_runner)
            remove_node_files(node_runner, CONF, SECRET_XML, dropin_path("nova-compute"))
            systemctl(node_runner, "daemon-reload", check=False)
        retire_service(ctx, runner, plan, units=CONTROLLER_UNITS, user="nova", user_secret=USER_SECRET,
                       service=SERVICE, url=endpoint_url(plan), databases=DATABASES,
                       files=(*(dropin_path(u) for u in CONTROLLER_UNITS), CONF))  # fmt: skip


ROLE = Nova()
