"""What both Ceph implementations share (packages.py builds the cluster by hand from the Debian daemons and runs
everywhere, including LXC system containers on the CI host; cephadm.py is the production path for hosts with a full
kernel, systemd and a container engine): the lab's fsid and cephx keys (kept in the lab's secrets dir), the `ceph`
admin commands run on the first mon node, the waits with explicit budgets, observation and the pure drift.

Every command runs through a Runner from `ctx.on_node(node)` (SSH into the node) as an argv list with a timeout.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.storage.ceph.conf import (
    CONF_PATH,
    CephSpec,
    check_key,
    client_caps,
    client_keyring_path,
    mon_host,
    render_ceph_conf,
    render_keyring,
)
from stacklab.errors import StackLabError
from stacklab.exec.node_files import write_node_file
from stacklab.exec.readiness import ReadinessTimeout, announce_wait, wait_until
from stacklab.exec.runner import CommandResult, Runner
from stacklab.plan.resource import Observed
from stacklab.secrets import read_secret, store_secret

LOG = logging.getLogger(__name__)

# Budgets for the waits (seconds). Measured on the CI host type: quorum of 3 in 12 s, 3 OSDs up in ~23 s,
# HEALTH_OK ~30 s after the first command; the budgets leave room for TCG VMs and a loaded host.
QUORUM_BUDGET = 120.0
OSDS_BUDGET = 240.0
HEALTH_BUDGET = 300.0
POLL_INTERVAL = 2.0

CEPH_TIMEOUT = 60.0  # one `ceph` CLI call (it gives up connecting after CONNECT_TIMEOUT)
CONNECT_TIMEOUT = 20
FILE_TIMEOUT = 30.0

FSID_SECRET = "ceph-fsid"


def key_secret_name(entity: str) -> str:
    """Secret name of a cephx entity's key in the lab's secrets dir, e.g. `ceph-client.cinder.key`."""
    return f"ceph-{entity.rstrip('.')}.key"


def client_secret_name(client: str) -> str:
    return key_secret_name(f"client.{client}")


def cluster_fsid(ctx: DriverContext, *, create: bool = True) -> str | None:
    """The lab's fsid: generated once, kept in the lab's secrets so every `up` (and a replace) reuses it."""
    fsid = read_secret(ctx.state_dir, FSID_SECRET)
    if fsid is None and create:
        fsid = str(uuid.uuid4())
        store_secret(ctx.state_dir, FSID_SECRET, fsid)
    return fsid


def ensure_key(ctx: DriverContext, runner: Runner, entity: str) -> str:
    """The entity's cephx key: the stored secret, or a new one made by ceph-authtool on the node and stored."""
    name = key_secret_name(entity)
    stored = read_secret(ctx.state_dir, name)
    if stored is not None:
        return check_key(stored)
    result = runner.run(["ceph-authtool", "--gen-print-key"], timeout=FILE_TIMEOUT)
    key = check_key(result.stdout)
    store_secret(ctx.state_dir, name, key)
    return key


def write_file(
    runner: Runner, path: str, content: str, *, mode: str = "0644", owner: str = "root", group: str = "root"
) -> bool:
    """exec.node_files.write_node_file with Ceph's explicit ownership (root:root unless the daemon's user)."""
    return write_node_file(runner, path, content, mode=mode, owner=owner, group=group)


@dataclass
class Waiter:
    """Polls a probe until it says done or the budget runs out; the error says what it waited for."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    interval: float = POLL_INTERVAL

    def until(
        self, what: str, budget: float, probe: Callable[[], tuple[bool, str]], *, resource: str, hint: str
    ) -> str:
        """Poll `probe` (done, what it sees now) through the one `wait_until`; return what it saw when done."""
        deadline = self.clock() + budget
        last = {"seen": "", "announced": None}

        def check() -> bool:
            done, seen = probe()
            last["seen"] = seen
            if done:
                return True
            now = self.clock()
            if now < deadline and seen != last["announced"]:  # who watches sees what it waits on, and what is left
                announce_wait(f"{what} (now: {seen[:120]})", deadline - now)
                last["announced"] = seen
            return False

        try:
            wait_until(check, budget=budget, interval=self.interval, what=what, clock=self.clock, sleep=self.sleep)
        except ReadinessTimeout:
            raise StackLabError(
                f"waited {budget:g}s for {what}; last seen: {last['seen']}", resource=resource, hint=hint
            ) from None
        LOG.info("%s: %s (%s)", resource, what, last["seen"])
        return str(last["seen"])


class CephAdmin:
    """`ceph` and `rbd` commands as client.admin on one node (the first mon)."""

    def __init__(self, runner: Runner, resource_id: str) -> None:
        self.runner = runner
        self.resource_id = resource_id

    def ceph(
        self, *args: str, timeout: float = CEPH_TIMEOUT, check: bool = True, input: str | None = None
    ) -> CommandResult:
        argv = ["ceph", "--connect-timeout", str(CONNECT_TIMEOUT), *args]
        return self.runner.run(argv, timeout=timeout, check=check, input=input)

    def json(self, *args: str, timeout: float = CEPH_TIMEOUT) -> Any:
        result = self.ceph(*args, "--format", "json", timeout=timeout)
        try:
            return json.loads(result.stdout or "null")
        except json.JSONDecodeError as exc:
            raise StackLabError(f"`{result.command}` printed no JSON: {exc}", resource=self.resource_id) from None

    def try_json(self, *args: str) -> tuple[Any, str]:
        """(parsed output, "") or (None, why) when the cluster does not answer."""
        result = self.ceph(*args, "--format", "json", check=False)
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit {result.returncode}"]
            return None, tail[0]
        try:
            return json.loads(result.stdout or "null"), ""
        except json.JSONDecodeError as exc:
            return None, f"no JSON from ceph: {exc}"

    def json_batch(self, *commands: tuple[str, ...]) -> list[Any] | None:
        """Several read commands in one `ceph` process (its interactive mode reads them from stdin): one Python
        start-up and one connection instead of one each. None unless every command printed its JSON document (the
        interactive mode prints nothing and exits 0 for a command that fails): the caller then asks one by one."""
        result = self.ceph("--format", "json", input="".join(" ".join(c) + "\n" for c in commands), check=False)
        if not result.ok:
            return None
        decoder, text, at, docs = json.JSONDecoder(), result.stdout, 0, []
        try:
            while True:
                while at < len(text) and text[at].isspace():
                    at += 1
                if at == len(text):
                    break
                doc, at = decoder.raw_decode(text, at)
                docs.append(doc)
        except json.JSONDecodeError:
            return None
        return docs if len(docs) == len(commands) else None

    # --- reads ---

    def mon_names(self, dump: Any = None) -> list[str]:
        dump = self.json("mon", "dump") if dump is None else dump
        return sorted(str(m["name"]) for m in dump.get("mons", []))

    def osds_by_host(self, tree: Any = None) -> dict[str, list[int]]:
        """OSD ids under each host bucket of the crush tree (hosts = lab nodes, the location is pinned)."""
        tree = self.json("osd", "tree") if tree is None else tree
        nodes = {n["id"]: n for n in tree.get("nodes", [])}
        out: dict[str, list[int]] = {}
        for n in nodes.values():
            if n.get("type") == "host":
                out[str(n["name"])] = sorted(int(c) for c in n.get("children", []) if int(c) >= 0)
        return out

    def osd_ids(self) -> list[int]:
        return sorted(int(i) for i in self.json("osd", "ls"))

    def pools(self, listed: Any = None) -> list[str]:
        return [str(p) for p in (self.json("osd", "pool", "ls") if listed is None else listed)]

    def auth_entities(self, data: Any = None) -> list[str]:
        # Only the names leave this function; the keys in the output are never logged.
        return sorted(self.auth_dump(data))

    # --- waits ---

    def wait_quorum(self, waiter: Waiter, mons: Sequence[str], budget: float = QUORUM_BUDGET) -> None:
        """Wait until every mon in `mons` is in the quorum."""
        want = sorted(mons)

        def probe() -> tuple[bool, str]:
            data, why = self.try_json("quorum_status")
            if data is None:
                return False, f"no answer from the mons ({why})"
            quorum = sorted(str(n) for n in data.get("quorum_names", []))
            return set(want) <= set(quorum), f"quorum {quorum}, want {want}"

        waiter.until(
            f"monitor quorum {want}",
            budget,
            probe,
            resource=self.resource_id,
            hint="check `journalctl -u ceph-mon@<node>` on the mon nodes and that br-storage connects them",
        )

    def wait_osds(self, waiter: Waiter, count: int, budget: float = OSDS_BUDGET) -> None:
        def probe() -> tuple[bool, str]:
            data, why = self.try_json("osd", "stat")
            if data is None:
                return False, f"no answer ({why})"
            stat = data.get("osdmap", data)  # the JSON is nested in some releases
            num, up, inn = (int(stat.get(k, 0)) for k in ("num_osds", "num_up_osds", "num_in_osds"))
            return (num >= count and up == num and inn == num), f"{num} OSDs, {up} up, {inn} in (want {count})"

        waiter.until(
            f"{count} OSDs up and in",
            budget,
            probe,
            resource=self.resource_id,
            hint="see `journalctl -u ceph-osd@<id>` on the OSD node and `ceph osd tree`",
        )

    def wait_health(self, waiter: Waiter, accepted: Mapping[str, str], budget: float = HEALTH_BUDGET) -> str:
        """HEALTH_OK, or HEALTH_WARN made only of the checks in `accepted` (each logged with its reason)."""
        result: dict[str, str] = {}

        def probe() -> tuple[bool, str]:
            data, why = self.try_json("health", "detail")
            if data is None:
                return False, f"no answer ({why})"
            status = str(data.get("status", "unknown"))
            checks: Mapping[str, Any] = data.get("checks", {})
            result["status"] = status
            if status == "HEALTH_OK":
                return True, status
            other = {
                code: str(c.get("summary", {}).get("message", ""))
                for code, c in checks.items()
                if code not in accepted or c.get("severity") != "HEALTH_WARN"
            }
            if status == "HEALTH_WARN" and not other:
                return True, f"{status} with accepted checks {sorted(checks)}"
            return False, f"{status}: " + "; ".join(f"{k}: {v}" for k, v in sorted(other.items()))

        waiter.until(
            "HEALTH_OK" + (f" (accepting only {sorted(accepted)})" if accepted else ""),
            budget,
            probe,
            resource=self.resource_id,
            hint="`ceph health detail` on the first mon node says which check fails",
        )
        for code, reason in accepted.items():
            LOG.info("%s: health check %s accepted: %s", self.resource_id, code, reason)
        return result.get("status", "unknown")

    # --- writes ---

    def auth_dump(self, data: Any = None) -> dict[str, tuple[str, dict[str, str]]]:
        """{entity: (key, caps)}; kept in memory only, never logged."""
        data = self.json("auth", "ls") if data is None else data
        return {
            str(e["entity"]): (str(e.get("key", "")), {str(k): str(v) for k, v in e.get("caps", {}).items()})
            for e in data.get("auth_dump", [])
        }

    def ensure_entity(
        self,
        entity: str,
        key: str,
        caps: Mapping[str, str],
        have: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
    ) -> bool:
        """`ceph auth import` unless the entity already has exactly this key and these caps; True if imported."""
        if have is not None and have.get(entity) == (key, dict(caps)):
            return False
        self.ceph("auth", "import", "-i", "-", input=render_keyring(entity, key, caps))
        return True

    def ensure_pools(self, spec: CephSpec) -> list[str]:
        """Create the spec's missing pools as initialised RBD pools; never touch pools that exist."""
        have = set(self.pools())
        created = []
        for pool in spec.pools:
            if pool in have:
                continue
            pg = str(spec.pg_num)
            self.ceph("osd", "pool", "create", pool, pg, pg, "replicated", timeout=120.0)
            self.runner.run(["rbd", "pool", "init", pool], timeout=180.0)
            created.append(pool)
        return created

    def ensure_clients(self, ctx: DriverContext, spec: CephSpec) -> dict[str, str]:
        """Import every spec client's keyring (caps included); returns {client: keyring text}."""
        keyrings: dict[str, str] = {}
        have = self.auth_dump()
        for client in spec.clients:
            entity = f"client.{client}"
            key = ensure_key(ctx, self.runner, entity)
            self.ensure_entity(entity, key, client_caps(client), have)
            keyrings[client] = render_keyring(entity, key, client_caps(client))
        return keyrings


def observe_cluster(spec: CephSpec, ctx: DriverContext, resource_id: str) -> Observed | None:
    """Read-only: what the first mon node says about the cluster. None when there is no ceph.conf there."""
    runner = ctx.on_node_if_up(spec.first_mon)
    if runner is None:
        return None
    conf = runner.run(["cat", CONF_PATH], timeout=FILE_TIMEOUT, check=False)
    if not conf.ok:
        mon_dir = runner.run(
            ["test", "-d", f"/var/lib/ceph/mon/ceph-{spec.first_mon}"], timeout=FILE_TIMEOUT, check=False
        )
        if not mon_dir.ok:
            return None
        return Observed(True, {"reachable": False}, (f"{CONF_PATH} missing on {spec.first_mon}",))
    conf_fsid = _conf_value(conf.stdout, "fsid")
    ours = cluster_fsid(ctx, create=False)
    owned = spec.marker in conf.stdout or (ours is not None and conf_fsid == ours)
    facts: dict[str, Any] = {"fsid": conf_fsid, "conf_path": CONF_PATH}
    if not owned:
        return Observed(False, facts)
    admin = CephAdmin(runner, resource_id)
    # One `ceph` for the five reads (a no-op `up` waited 3-8 s on them one by one); one by one when it fails.
    batch = admin.json_batch(("status",), ("mon", "dump"), ("osd", "tree"), ("osd", "pool", "ls"), ("auth", "ls"))
    status, dump, tree, listed, auth = batch if batch is not None else (None,) * 5
    if status is None:
        status, why = admin.try_json("status")
        if status is None:
            facts["reachable"] = False
            return Observed(True, facts, (f"the cluster does not answer on {spec.first_mon}: {why}",))
    facts.update(
        reachable=True,
        health=str(status.get("health", {}).get("status", "unknown")),
        quorum=sorted(str(n) for n in status.get("quorum_names", [])),
        mons=admin.mon_names(dump),
        osds_by_host=admin.osds_by_host(tree),
        pools=admin.pools(listed),
        clients=sorted(e.removeprefix("client.") for e in admin.auth_entities(auth) if e.startswith("client.")),
    )
    osdmap = status.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)
    facts["osds"] = {k: int(osdmap.get(k, 0)) for k in ("num_osds", "num_up_osds", "num_in_osds")}
    return Observed(True, facts, drift_of(spec, facts))


def drift_of(spec: CephSpec, facts: Mapping[str, Any]) -> tuple[str, ...]:
    """Pure: what differs between a reachable cluster's facts and the spec (each fixable by apply)."""
    drift: list[str] = []
    if sorted(facts.get("quorum", [])) != sorted(spec.mon_names):
        drift.append(f"mons in quorum {facts.get('quorum')}, want {sorted(spec.mon_names)}")
    by_host: Mapping[str, Sequence[int]] = facts.get("osds_by_host", {})
    for node in spec.osd_hosts:
        want, have = len(spec.osd_sizes(node)), len(by_host.get(node, ()))
        if have < want:
            drift.append(f"{node} has {have} of {want} OSDs")
    osds: Mapping[str, int] = facts.get("osds", {})
    if osds and not (osds.get("num_up_osds") == osds.get("num_in_osds") == osds.get("num_osds")):
        drift.append(f"{osds.get('num_osds')} OSDs, {osds.get('num_up_osds')} up, {osds.get('num_in_osds')} in")
    drift.extend(f"pool {p} missing" for p in spec.pools if p not in facts.get("pools", []))
    drift.extend(f"client.{c} missing" for c in spec.clients if c not in facts.get("clients", []))
    return tuple(drift)


def storage_addresses(spec: CephSpec) -> dict[str, str]:
    """Each Ceph node's br-storage address: the mons' and the others' as the spec carries them."""
    out = dict(spec.mons)
    for node, address in spec.storage_addresses:
        if node in spec.nodes and node not in out:
            out[node] = address
    return out


def _conf_value(text: str, key: str) -> str | None:
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().replace(" ", "_") == key:
            return value.strip()
    return None


def cluster_outputs(
    spec: CephSpec, fsid: str, health: str, *, implementation: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "implementation": implementation,
        "fsid": fsid,
        "mon_host": mon_host(spec),
        "mons": list(spec.mon_names),
        "conf_path": CONF_PATH,
        "pools": list(spec.pools),
        "clients": {c: client_secret_name(c) for c in spec.clients},
        "keyrings": {c: client_keyring_path(c) for c in spec.clients},
        "health": health,
        **(extra or {}),
    }


def distribute_clients(
    spec: CephSpec, ctx: DriverContext, fsid: str, keyrings: Mapping[str, str], resource_id: str
) -> None:
    """ceph.conf and the client keyrings (never the admin key) on every client node of the spec."""
    if spec.client_nodes:
        ctx.progress(f"{resource_id}: client configuration on {', '.join(spec.client_nodes)}")
    for node in spec.client_nodes:
        runner = ctx.on_node(node)
        write_file(runner, CONF_PATH, render_ceph_conf(spec, fsid))
        for client, keyring in keyrings.items():
            write_file(runner, client_keyring_path(client), keyring, mode="0600")


def cleanup_runner(spec: CephSpec, ctx: DriverContext, node: str, fsid: str | None, resource_id: str) -> Runner | None:
    """The node's runner for removing Ceph files, or None when the node is down or unreachable (its files go with
    it) or its ceph.conf belongs to another cluster (left alone)."""
    runner = ctx.on_node_if_up(node)
    if runner is None:
        LOG.warning("%s: %s is not up, skipping its Ceph cleanup (files go with it)", resource_id, node)
        return None
    try:
        conf = runner.run(["cat", CONF_PATH], timeout=FILE_TIMEOUT, check=False)
    except StackLabError as exc:
        LOG.warning("%s: %s unreachable, skipping its Ceph cleanup: %s", resource_id, node, exc)
        return None
    if conf.ok and spec.marker not in conf.stdout and (fsid is None or fsid not in conf.stdout):
        LOG.warning("%s: %s on %s is not this lab's; leaving that node alone", resource_id, CONF_PATH, node)
        return None
    return runner


def remove_clients(spec: CephSpec, ctx: DriverContext, resource_id: str) -> None:
    """Remove what distribute_clients wrote, on nodes that are up and whose ceph.conf is this lab's."""
    fsid = cluster_fsid(ctx, create=False)
    for node in spec.client_nodes:
        runner = cleanup_runner(spec, ctx, node, fsid, resource_id)
        if runner is not None:
            files = [CONF_PATH, *(client_keyring_path(c) for c in spec.clients)]
            runner.run(["rm", "-f", *files], timeout=FILE_TIMEOUT)
