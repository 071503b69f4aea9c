"""Swift (object storage, Zed from Debian's packages): a keystone-authenticated proxy on the controller and account,
container and object servers with their replicators on the storage nodes, replicating over br-storage.

Layout: every storage node has `openstack.swift.devices` devices `/srv/node/d1..dN` and serves them on its
br-storage address (object 6200, container 6201, account 6202; rsync modules for replication). A device is a
file system of its own, as a disk is in production: a size-capped tmpfs mounted there by a systemd mount unit
(`srv-node-dN.mount`; no loop devices in a container node, and a bind mount of a directory is no mount to Swift's
mount check, which compares st_dev with the parent's). The servers run with Swift's default `mount_check = true`,
so a device that is not mounted answers 507 and is listed by recon as unmounted instead of filling the node's root
file system (the `swift_loss` suite unmounts one, and fills one). A tmpfs device holds Swift's object metadata in
user xattrs (Linux 6.6 or later; `ensure` probes it) and is empty after the node restarts, like a replaced disk:
the replicators fill it again from the other nodes. On a host whose tmpfs takes no user xattrs (`stacklab doctor`:
role `swift_devices`) the devices are plain directories and the servers run with `mount_check = false`
(swift_devices.py). The rings are built on the proxy node with `swift-ring-builder`
(partition power 8, the lab's replica count, one zone per node, every device of the node in its zone) and
copied to every node; they are rebuilt only when the set of nodes, their devices or the replica count changes
(`/etc/swift/stacklab-rings.json` records what they were built from). With more devices than replicas the ring
has handoff devices: writes for a lost node go to one of them, and its replicator hands them back.
`/etc/swift/swift.conf` carries the lab's own hash path prefix and suffix (the package's `changeme` is kept aside
and restored by `remove`).

The package's units run with stacklab's config files (`/etc/swift/stacklab/*.conf`) through drop-ins, so the
package's own files stay as shipped. The proxy listens on the controller's br-mgmt address (port 8080), checks
tokens with keystone (`swift` service user, `object-store` endpoints) and caches in the lab's memcached. Its
pipeline has the middlewares of Swift's sample proxy (PROXY_PIPELINE), so /info announces them and tempest tests them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import ServiceLayout, file_problems, wait_for_api
from stacklab.drivers.openstack.infra import MEMCACHED_PORT
from stacklab.drivers.openstack.keystone import PORT as KEYSTONE_PORT
from stacklab.drivers.openstack.keystone import REGION, RESELLER_ADMIN_ROLE, register_in_keystone
from stacklab.drivers.openstack.swift_devices import (
    DEVICES,
    TMPFS,
    device_kind,
    device_names,
    fstype,
    mount_check,
    mount_unit,
    probe_xattrs,
    render_mount_unit,
    swift_owner,
)
from stacklab.errors import PlanError
from stacklab.exec.node_files import (
    node_path_exists,
    read_node_file,
    remove_node_files,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
)
from stacklab.exec.parallel import each_at_once
from stacklab.exec.readiness import NotReady, wait_until
from stacklab.exec.runner import Runner
from stacklab.secrets import get_or_create_secret, read_secret

SWIFT_CONF = "/etc/swift/swift.conf"
SWIFT_CONF_ORIG = "/etc/swift/swift.conf.stacklab-orig"
CONF_DIR = "/etc/swift/stacklab"
RINGS_RECORD = "/etc/swift/stacklab-rings.json"
# written with a changed config, removed once the daemons restarted with it: an `up` that failed in between (e.g. at
# the device probe) leaves it, and the next `up` restarts them although the files are already as wanted
RESTART_PENDING = {"storage": f"{CONF_DIR}/restart-pending-storage", "proxy": f"{CONF_DIR}/restart-pending-proxy"}
RSYNCD_CONF = "/etc/rsyncd.conf"
DEVICE = "d1"  # the first device (the only one of a lab that declares `devices: 1`)
PART_POWER = 8
PROXY_PORT = 8080
PORTS = {"object": 6200, "container": 6201, "account": 6202}
HASH_SECRET = "swift-hash"
USER_SECRET = "swift-keystone"
RING_TIMEOUT = 120.0
SERVER_BUDGET = 300.0  # a storage node's three servers answering after their (re)start
SERVICE = {"name": "swift", "type": "object-store", "description": "OpenStack Object Storage"}
# unit -> (binary, config) for the storage node daemons stacklab runs
STORAGE_UNITS = {
    f"swift-{server}{suffix}": (f"/usr/bin/swift-{server}{suffix or '-server'}", f"{CONF_DIR}/{server}-server.conf")
    for server in ("account", "container", "object")
    for suffix in ("", "-replicator", "-auditor", *(("-updater",) if server != "account" else ()))
}
PROXY_UNIT = "swift-proxy"
PROXY_CONF = f"{CONF_DIR}/proxy-server.conf"  # holds the swift user's keystone password: 0640 root:swift
SERVER_SECTIONS = {
    "account": ("account-replicator", "account-auditor"),
    "container": ("container-replicator", "container-updater", "container-auditor"),
    "object": ("object-replicator", "object-updater", "object-auditor"),
}


def proxy_address(plan: ServiceLayout) -> str:
    return str(plan.config.get("proxy_address") or plan.address)


def proxy_url(plan: ServiceLayout) -> str:
    return f"http://{proxy_address(plan)}:{PROXY_PORT}"


def swift_layout(plan: ServiceLayout) -> tuple[str, dict[str, str], int]:
    """(proxy node, {storage node: br-storage address}, replicas) from the service spec."""
    nodes = {str(n): str(a) for n, a in dict(plan.config.get("storage_addresses") or {}).items()}
    if not nodes:
        raise PlanError("swift has no storage nodes", resource="service/swift", hint="give nodes the swift role")
    replicas = min(int(plan.config.get("replicas", 3)), len(nodes))
    return str(plan.config.get("proxy_node") or plan.controller), nodes, replicas


def render_swift_conf(plan: ServiceLayout, secret: str) -> str:
    prefix, suffix = secret[: len(secret) // 2], secret[len(secret) // 2 :]
    return (
        f"# written by stacklab for lab {plan.lab}: placement hashes of this lab's cluster (never change them)\n"
        "[swift-hash]\n"
        f"swift_hash_path_prefix = {prefix}\n"
        f"swift_hash_path_suffix = {suffix}\n"
        "[storage-policy:0]\n"
        "name = Policy-0\n"
        "default = yes\n"
    )


def render_server_conf(plan: ServiceLayout, server: str, address: str) -> str:
    lines = [
        f"# written by stacklab for lab {plan.lab}: {server} server on the storage network",
        "[DEFAULT]",
        f"bind_ip = {address}",
        f"bind_port = {PORTS[server]}",
        f"devices = {DEVICES}",
        # Swift's default: an unmounted device answers 507; off for plain directory devices (swift_devices.py)
        f"mount_check = {'true' if mount_check(plan) else 'false'}",
        "user = swift",
        "swift_dir = /etc/swift",
        "workers = 0",  # one process serves (no fork per worker): ~80 MB less per server on a lab node
        "[pipeline:main]",
        f"pipeline = healthcheck recon {server}-server",
        f"[app:{server}-server]",
        f"use = egg:swift#{server}",
        "[filter:healthcheck]",
        "use = egg:swift#healthcheck",
        "[filter:recon]",
        "use = egg:swift#recon",
        "recon_cache_path = /var/cache/swift",
    ]
    for section in SERVER_SECTIONS[server]:
        lines.append(f"[{section}]")
        if section.endswith("replicator"):
            lines.append(f"rsync_module = {{replication_ip}}::{server}")
    return "\n".join(lines) + "\n"


def render_rsyncd(plan: ServiceLayout, address: str) -> str:
    lines = [
        f"# written by stacklab for lab {plan.lab}: swift replication over the storage network",
        "uid = swift",
        "gid = swift",
        "log file = /var/log/rsyncd.log",
        "pid file = /var/run/rsyncd.pid",
        f"address = {address}",
    ]
    for server in ("account", "container", "object"):
        lines += [f"[{server}]", "max connections = 8", f"path = {DEVICES}/", "read only = false",
                  f"lock file = /var/lock/{server}.lock"]  # fmt: skip
    return "\n".join(lines) + "\n"


# The proxy's pipeline, in the order of Swift 2.30's proxy-server.conf-sample (tempauth's place taken by
# keystone's authtoken and keystoneauth, formpost and staticweb just after auth as Swift's middleware docs place
# them): the middlewares a user expects of a Swift proxy (temporary URLs, form posts, bulk operations, static
# websites, quotas, large objects, versioned writes, symlinks). proxy-logging twice, so requests the middlewares
# make are logged too.
PROXY_PIPELINE = (
    "catch_errors", "gatekeeper", "healthcheck", "proxy-logging", "cache", "listing_formats", "bulk", "tempurl",
    "authtoken", "keystoneauth", "formpost", "staticweb", "copy", "container-quotas", "account-quotas", "slo",
    "dlo", "versioned_writes", "symlink", "proxy-logging", "proxy-server",
)  # fmt: skip
# filter section -> its egg entry point (for the filters that take no setting)
PLAIN_FILTERS = {
    "catch_errors": "catch_errors",
    "gatekeeper": "gatekeeper",
    "healthcheck": "healthcheck",
    "proxy-logging": "proxy_logging",
    "listing_formats": "listing_formats",
    "bulk": "bulk",
    "tempurl": "tempurl",
    "formpost": "formpost",
    "staticweb": "staticweb",
    "copy": "copy",
    "container-quotas": "container_quotas",
    "account-quotas": "account_quotas",
    "slo": "slo",
    "dlo": "dlo",
    "symlink": "symlink",
}


def render_proxy_conf(plan: ServiceLayout, password: str) -> str:
    keystone = f"http://{plan.address}:{KEYSTONE_PORT}"
    lines = [
        f"# written by stacklab for lab {plan.lab}: the proxy on the management network, keystone auth",
        "[DEFAULT]",
        f"bind_ip = {proxy_address(plan)}",
        f"bind_port = {PROXY_PORT}",
        "workers = 1",
        "user = swift",
        "swift_dir = /etc/swift",
        "[pipeline:main]",
        f"pipeline = {' '.join(PROXY_PIPELINE)}",
        "[app:proxy-server]",
        "use = egg:swift#proxy",
        "account_autocreate = true",
        "[filter:cache]",
        "use = egg:swift#memcache",
        f"memcache_servers = {plan.address}:{MEMCACHED_PORT}",
        "[filter:authtoken]",
        "paste.filter_factory = keystonemiddleware.auth_token:filter_factory",
        f"www_authenticate_uri = {keystone}",
        f"auth_url = {keystone}",
        f"memcached_servers = {plan.address}:{MEMCACHED_PORT}",
        "auth_type = password",
        "project_domain_name = Default",
        "user_domain_name = Default",
        "project_name = service",
        "username = swift",
        f"password = {password}",
        f"region_name = {REGION}",
        "delay_auth_decision = true",
        "[filter:keystoneauth]",
        "use = egg:swift#keystoneauth",
        "operator_roles = admin, member",
        # the role keystone.py makes: its holders set account quotas (account_quotas answers 403 to anyone else)
        f"reseller_admin_role = {RESELLER_ADMIN_ROLE}",
        "[filter:versioned_writes]",
        "use = egg:swift#versioned_writes",
        "allow_versioned_writes = true",  # X-Versions-Location / X-History-Location (off unless asked)
    ]
    for name, egg in PLAIN_FILTERS.items():
        lines += [f"[filter:{name}]", f"use = egg:swift#{egg}"]
    return "\n".join(lines) + "\n"


def render_dropin(plan: ServiceLayout, binary: str, config: str) -> str:
    return (
        f"# written by stacklab for lab {plan.lab}: the package's unit with stacklab's config\n"
        f"[Service]\nExecStart=\nExecStart={binary} {config}\n"
    )


def dropin_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.service.d/stacklab.conf"


def ring_record(nodes: Mapping[str, str], replicas: int, devices: Sequence[str] = (DEVICE,)) -> str:
    record: dict[str, Any] = {"nodes": dict(sorted(nodes.items())), "replicas": replicas, "part_power": PART_POWER}
    if list(devices) != [DEVICE]:  # one device: the record rings built before devices were declared carry
        record["devices"] = list(devices)
    return json.dumps(record, sort_keys=True) + "\n"


def ring_commands(nodes: Mapping[str, str], replicas: int, devices: Sequence[str] = (DEVICE,)) -> list[list[str]]:
    """swift-ring-builder argv lists (run in /etc/swift) for the three rings, one zone per node with every device
    of the node in it."""
    out = []
    for server, port in sorted(PORTS.items()):
        builder = f"{server}.builder"
        out.append(["swift-ring-builder", builder, "create", str(PART_POWER), str(replicas), "0"])
        for zone, (_node, address) in enumerate(sorted(nodes.items()), start=1):
            for device in devices:
                out.append(["swift-ring-builder", builder, "add", f"r1z{zone}-{address}:{port}/{device}", "100"])
        out.append(["swift-ring-builder", builder, "rebalance"])
    return out


RING_FILES = tuple(f"/etc/swift/{server}.ring.gz" for server in sorted(PORTS))


def _sha(runner: Runner, paths: Sequence[str]) -> dict[str, str]:
    result = runner.run(["sha256sum", *paths], timeout=30, check=False)
    return {line.split()[1]: line.split()[0] for line in result.stdout.splitlines() if len(line.split()) == 2}


def _copy_binary(source: Runner, target: Runner, path: str) -> None:
    data = source.run(["base64", "-w0", path], timeout=60).stdout
    script = 'base64 -d > "$1.stacklab-tmp" && chmod 0644 "$1.stacklab-tmp" && mv -f "$1.stacklab-tmp" "$1"'
    target.run(["sh", "-c", script, "copy", path], input=data, timeout=60)


class Swift:
    name = "swift"

    def _secrets(self, ctx: DriverContext, *, create: bool) -> tuple[str, str] | None:
        if create:
            return (get_or_create_secret(ctx.state_dir, HASH_SECRET, length=32),
                    get_or_create_secret(ctx.state_dir, USER_SECRET))  # fmt: skip
        hash_secret, user = read_secret(ctx.state_dir, HASH_SECRET), read_secret(ctx.state_dir, USER_SECRET)
        return (hash_secret, user) if hash_secret and user else None

    def _storage_files(
        self, plan: ServiceLayout, address: str, hash_secret: str, owner: tuple[str, str] = ("0", "0")
    ) -> dict[str, str]:
        files = {SWIFT_CONF: render_swift_conf(plan, hash_secret), RSYNCD_CONF: render_rsyncd(plan, address)}
        for server in PORTS:
            files[f"{CONF_DIR}/{server}-server.conf"] = render_server_conf(plan, server, address)
        for unit, (binary, config) in STORAGE_UNITS.items():
            files[dropin_path(unit)] = render_dropin(plan, binary, config)
        for device in device_names(plan) if device_kind(plan) == TMPFS else ():
            files[f"/etc/systemd/system/{mount_unit(device)}"] = render_mount_unit(plan, device, owner)
        return files

    def _proxy_files(self, plan: ServiceLayout, hash_secret: str, password: str) -> dict[str, str]:
        return {
            SWIFT_CONF: render_swift_conf(plan, hash_secret),
            PROXY_CONF: render_proxy_conf(plan, password),
            dropin_path(PROXY_UNIT): render_dropin(plan, "/usr/bin/swift-proxy-server", PROXY_CONF),
        }

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        secrets = self._secrets(ctx, create=False)
        if secrets is None:
            return [f"the lab's swift secrets are missing from {ctx.state_dir / 'secrets'}"]
        hash_secret, password = secrets
        proxy, nodes, replicas = swift_layout(plan)
        found: list[str] = []
        proxy_runner = ctx.on_node(proxy)
        found += file_problems(proxy_runner, self._proxy_files(plan, hash_secret, password), proxy)
        if read_node_file(proxy_runner, RINGS_RECORD) != ring_record(nodes, replicas, device_names(plan)):
            found.append("the rings were built for other nodes, devices or another replica count")
        rings = _sha(proxy_runner, RING_FILES)
        if not unit_active(proxy_runner, PROXY_UNIT):
            found.append(f"{PROXY_UNIT} is not running on {proxy}")
        for node, address in sorted(nodes.items()):
            node_runner = ctx.on_node_if_up(node)
            if node_runner is None:
                found.append(f"storage node {node} is not up")
                continue
            owner = swift_owner(node_runner)
            found += file_problems(node_runner, self._storage_files(plan, address, hash_secret, owner), node)
            if _sha(node_runner, RING_FILES) != rings:
                found.append(f"{node} has other rings than the proxy")
            for unit in (*STORAGE_UNITS, "rsync"):
                if not unit_active(node_runner, unit):
                    found.append(f"{unit} is not running on {node}")
            for device in device_names(plan) if device_kind(plan) == TMPFS else ():
                if not unit_active(node_runner, mount_unit(device)):
                    found.append(f"device {DEVICES}/{device} is not mounted on {node} ({mount_unit(device)})")
        return found

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        rid = f"service/{self.name}"
        proxy, nodes, replicas = swift_layout(plan)
        hash_secret, password = self._secrets(ctx, create=True) or ("", "")
        proxy_runner = ctx.on_node(proxy)
        require_node(proxy_runner, proxy, rid, files={"/usr/bin/swift-proxy-server": "swift-proxy"}, unit=PROXY_UNIT)
        node_runners = {node: ctx.on_node(node) for node in nodes}
        for node, node_runner in node_runners.items():
            require_node(node_runner, node, rid, files={"/usr/bin/swift-object-server": "swift-object"},
                         unit="swift-object")  # fmt: skip
        ctx.progress(f"{rid}: rings for {len(nodes)} node(s), {replicas} replica(s)")
        _keep_package_conf(proxy_runner)
        devices = device_names(plan)
        self._rings(proxy_runner, nodes, replicas, devices)
        ctx.progress(f"{rid}: storage servers on " + ", ".join(f"{n} ({a})" for n, a in sorted(nodes.items())))
        # each node on its own (own SSH connection; the proxy's runner, thread-safe, hands out the rings): the
        # nodes' ~20-50 s each ran in turn before
        each_at_once(lambda item: self._storage_node(plan, item[0], item[1], node_runner=node_runners[item[0]],
                                                     proxy=proxy, proxy_runner=proxy_runner, hash_secret=hash_secret),
                     sorted(nodes.items()))  # fmt: skip
        ctx.progress(f"{rid}: proxy on {proxy}, keystone user and endpoints")
        register_in_keystone(ctx, proxy_runner, plan, user="swift", password=password, service=SERVICE,
                             url=f"{proxy_url(plan)}/v1/AUTH_%(project_id)s")  # fmt: skip
        changed = _restart_pending(
            proxy_runner, "proxy", _write_all(proxy_runner, self._proxy_files(plan, hash_secret, password))
        )
        _start(proxy_runner, (PROXY_UNIT,), restart=changed)
        remove_node_files(proxy_runner, RESTART_PENDING["proxy"])
        wait_for_api(proxy_runner, rid, url=f"{proxy_url(plan)}/healthcheck", unit=PROXY_UNIT,
                     log_file="/var/log/syslog", answers=lambda: _healthy(proxy_runner, plan))  # fmt: skip
        return {
            "url": proxy_url(plan),
            "proxy_node": proxy,
            "storage_nodes": dict(nodes),
            "replicas": replicas,
            "devices": f"{DEVICES}/{DEVICE}",
            "device_root": DEVICES,
            "device_names": devices,
            "device_kind": device_kind(plan),
            # only tmpfs devices are mount points (directory devices: none, mount_check off)
            "mount_units": {dev: mount_unit(dev) for dev in devices} if device_kind(plan) == TMPFS else {},
            "ports": dict(PORTS),
        }

    def _storage_node(
        self,
        plan: ServiceLayout,
        node: str,
        address: str,
        *,
        node_runner: Runner,
        proxy: str,
        proxy_runner: Runner,
        hash_secret: str,
    ) -> None:
        """One storage node: its devices, its servers' files, the rings from the proxy, its daemons started."""
        devices = device_names(plan)
        _keep_package_conf(node_runner)
        dirs = [f"{DEVICES}/{dev}" for dev in devices]
        node_runner.run(["install", "-d", "-o", "swift", "-g", "swift", *dirs, "/var/cache/swift"], timeout=30)
        owner = swift_owner(node_runner)
        files = self._storage_files(plan, address, hash_secret, owner)
        changed = _restart_pending(node_runner, "storage", _write_all(node_runner, files))
        if device_kind(plan) == TMPFS:
            _mount_tmpfs_devices(node_runner, devices)
        else:
            changed = _restart_pending(node_runner, "storage", _drop_mount_units(node_runner, devices)) or changed
        for dev in devices:
            probe_xattrs(node_runner, node, dev)
        for ring in RING_FILES:
            if node != proxy:
                _copy_binary(proxy_runner, node_runner, ring)
        _start(node_runner, (*STORAGE_UNITS, "rsync"), restart=changed)
        remove_node_files(node_runner, RESTART_PENDING["storage"])
        _wait_for_servers(node_runner, node, address)

    def _rings(self, runner: Runner, nodes: Mapping[str, str], replicas: int, devices: Sequence[str]) -> None:
        record = ring_record(nodes, replicas, devices)
        if read_node_file(runner, RINGS_RECORD) == record and len(_sha(runner, RING_FILES)) == len(RING_FILES):
            return
        builders = [f"/etc/swift/{server}.builder" for server in PORTS]
        remove_node_files(runner, *builders, *RING_FILES)
        for argv in ring_commands(nodes, replicas, devices):
            runner.run(argv, timeout=RING_TIMEOUT, cwd="/etc/swift")
        runner.run(["chown", "swift:swift", *RING_FILES], timeout=30)
        write_node_file(runner, RINGS_RECORD, record)

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        proxy, nodes, _replicas = swift_layout(plan)
        password = read_secret(ctx.state_dir, USER_SECRET) or ""
        proxy_runner = ctx.on_node_if_up(proxy)
        if proxy_runner is not None:
            systemctl(proxy_runner, "disable", "--now", PROXY_UNIT, check=False)
            if unit_active(proxy_runner, "keystone"):
                register_in_keystone(ctx, proxy_runner, plan, user="swift", password=password, service=SERVICE,
                                     url=f"{proxy_url(plan)}/v1/AUTH_%(project_id)s", remove=True)  # fmt: skip
            remove_node_files(proxy_runner, PROXY_CONF, dropin_path(PROXY_UNIT), RINGS_RECORD, *RING_FILES,
                              *RESTART_PENDING.values(), *(f"/etc/swift/{s}.builder" for s in PORTS))  # fmt: skip
            _restore_package_conf(proxy_runner)
        for node in nodes:
            node_runner = ctx.on_node_if_up(node)
            if node_runner is None:
                continue
            systemctl(node_runner, "disable", "--now", *STORAGE_UNITS, "rsync", check=False)
            systemctl(node_runner, "disable", "--now", *(mount_unit(d) for d in device_names(plan)), check=False)
            files = [p for p in self._storage_files(plan, "-", "-") if p != SWIFT_CONF]
            units = [f"/etc/systemd/system/{mount_unit(d)}" for d in device_names(plan)]  # of either kind
            remove_node_files(node_runner, *files, *units, *RING_FILES, *RESTART_PENDING.values())
            if device_kind(plan) != TMPFS:  # the objects of directory devices live on the node's root fs
                dirs = [f"{DEVICES}/{d}" for d in device_names(plan)]
                node_runner.run(["rm", "-rf", "--one-file-system", *dirs], timeout=120)
            _restore_package_conf(node_runner)
            systemctl(node_runner, "daemon-reload", check=False)


def _mount_tmpfs_devices(runner: Runner, devices: Sequence[str]) -> None:
    """Mount every device's tmpfs before the servers, which check the mounts; a device mounted otherwise (an older
    unit) is remounted. What a directory device left in the mount point goes first: hidden under the tmpfs it
    would be Swift's no more, and it would show as written to a bare mount point once the device is unmounted."""
    mounts = [mount_unit(dev) for dev in devices]
    systemctl(runner, "enable", *mounts)
    stale = [dev for dev in devices if fstype(runner, f"{DEVICES}/{dev}") != "tmpfs"]
    if stale:
        systemctl(runner, "stop", *(mount_unit(dev) for dev in stale), check=False)
        for dev in stale:
            path = f"{DEVICES}/{dev}"
            if not runner.run(["mountpoint", "-q", path], timeout=30, check=False).ok:  # never below a mount
                runner.run(["find", path, "-xdev", "-mindepth", "1", "-delete"], timeout=300)
    systemctl(runner, "start", *mounts)


def _drop_mount_units(runner: Runner, devices: Sequence[str]) -> bool:
    """Directory devices: unmount tmpfs devices an earlier `up` made and remove their units (what they held goes,
    on every node in the same `up`: like replacing every disk). True when there were any."""
    units = [f"/etc/systemd/system/{mount_unit(dev)}" for dev in devices]
    present = runner.run(["ls", "-1", *units], timeout=30, check=False).stdout.split()
    if not present:
        return False
    systemctl(runner, "disable", "--now", *(mount_unit(dev) for dev in devices), check=False)
    remove_node_files(runner, *present)
    systemctl(runner, "daemon-reload")
    return True


def _write_all(runner: Runner, files: Mapping[str, str]) -> bool:
    changed = False
    for path, text in files.items():
        secret = path == PROXY_CONF
        changed = write_node_file(runner, path, text, mode="0640" if secret else "0644") or changed
        if secret:
            runner.run(["chown", "root:swift", path], timeout=30)
    if changed:
        systemctl(runner, "daemon-reload")
    return changed


def _restart_pending(runner: Runner, role: str, changed: bool) -> bool:
    """True when the daemons must restart: their config changed now, or an earlier `up` changed it and failed
    before the restart (its marker is still there)."""
    if changed:
        write_node_file(runner, RESTART_PENDING[role], "swift config changed: its daemons restart with it\n")
        return True
    return node_path_exists(runner, RESTART_PENDING[role])


def _start(runner: Runner, units: Sequence[str], *, restart: bool) -> None:
    systemctl(runner, "enable", *units)
    stopped = [u for u in units if restart or not unit_active(runner, u)]
    if stopped:
        systemctl(runner, "restart", *stopped)


def _keep_package_conf(runner: Runner) -> None:
    """Keep the package's swift.conf aside once (restored by remove)."""
    runner.run(["sh", "-c", 'test -e "$2" || test ! -e "$1" || cp -p "$1" "$2"', "keep", SWIFT_CONF, SWIFT_CONF_ORIG],
               timeout=30)  # fmt: skip


def _restore_package_conf(runner: Runner) -> None:
    runner.run(["sh", "-c", 'test ! -e "$2" || mv -f "$2" "$1"', "restore", SWIFT_CONF, SWIFT_CONF_ORIG], timeout=30)


def _wait_for_servers(runner: Runner, node: str, address: str) -> None:
    """Until the node's account, container and object servers answer their healthcheck on its storage address:
    a unit is active before its server listens (10-60 s of Python start-up under load), and a suite that writes
    right after `up` met 503s and broken pipes from a proxy whose object servers were not listening yet."""

    def answering() -> bool:
        for server, port in PORTS.items():
            url = f"http://{address}:{port}/healthcheck"
            if not _answers_healthcheck(runner, url):
                raise NotReady(f"{server} server on {node} ({url}) does not answer yet")
        return True

    wait_until(answering, budget=SERVER_BUDGET, interval=2.0, what=f"Swift's servers on {node}",
               resource="service/swift", hint=f"journalctl -u swift-object -u swift-container on {node}")  # fmt: skip


def _answers_healthcheck(runner: Runner, url: str) -> bool:
    """Swift's healthcheck middleware at `url` answers 200 (asked from `runner`'s node)."""
    return runner.run(["curl", "-sf", "-m", "5", url], timeout=15, check=False).ok


def _healthy(runner: Runner, plan: ServiceLayout) -> bool:
    return _answers_healthcheck(runner, f"{proxy_url(plan)}/healthcheck")


ROLE = Swift()
