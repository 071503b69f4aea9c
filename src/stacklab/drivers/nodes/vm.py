"""VM nodes: libvirt domains booting the lab image's kernel on a qcow2 overlay, with a NoCloud seed disk.

Per lab, one libvirt dir pool `stacklab-<lab>` at `<state_dir>/vm/pool` holds every node's volumes, named
`<node>.root.qcow2` (overlay on the cached base disk, see vm_disk), `<node>.disk-<name>.qcow2` (data disks) and
`<node>.seed.iso` (the cidata seed, attached as a virtio disk: the Debian cloud kernel has no AHCI). The domain
boots the kernel directly (`root=/dev/vda rw console=ttyS0`), has one virtio NIC per spec NIC on the NIC's bridge
with the spec's MAC and tap name, logs its serial console to `<state_dir>/vm/<node>/console.log`, and carries the
stacklab mark `<stacklab:owner lab= node= spec-hash=>` so that observe and delete can prove it is ours.

Domain type is `qemu` (TCG) unless the spec asks for KVM and the host probe did not find KVM unusable: libvirt
lists kvm on hosts where it cannot run a guest.

After a failed apply nothing the apply made is left (domain, volumes, an emptied pool), except the console log,
which the error message points to.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libvirt

from stacklab.drivers.base import BaseDriver, DriverContext
from stacklab.drivers.nodes import libvirtd
from stacklab.drivers.nodes.image import current_entry
from stacklab.drivers.nodes.libvirt_config import DomainConfig, DomainType, owner_of
from stacklab.drivers.nodes.seed import find_templates_dir, lab_hosts, public_key_text
from stacklab.drivers.nodes.vm_disk import BaseDisk, ensure_base_disk
from stacklab.drivers.nodes.vm_domain import (
    SSH_PORT,
    SSH_USER,
    VmLayout,
    build_domain,
    choose_virt_type,
    domain_name,
    image_hash_of_kernel,
    mgmt_address,
    pool_name,
    vm_outputs,
)
from stacklab.drivers.nodes.vm_libvirt import (
    check_reachable_by_qemu,
    grant_qemu_traversal,
    lookup_domain,
    quiet_libvirt_errors,
    undefine,
)
from stacklab.drivers.nodes.vm_ready import ReadyTarget, ReadyWaiter, wait_ready
from stacklab.drivers.nodes.vm_volumes import POOL_LOCK, create_volumes, ensure_pool, remove_volumes, volumes_present
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.runner import CommandError, CommandTimeout, Runner
from stacklab.plan.resource import Action, Change, Observed, Resource

LOG = logging.getLogger(__name__)

# ctx.shared keys: tests point the driver at libvirt's test:///default; the connection is shared by all nodes.
SHARED_URI = "libvirt.uri"
SHARED_CONN = "libvirt.conn"

# Boot to SSH + cloud-init done. TCG Debian guests: ~55 s quiet host, ~2 min with two booting at once; on a host
# loaded by other labs (load 40+ on 2 cores) they took 500-1100 s, so the budget can be raised for a run.
READY_BUDGET: Mapping[str, float] = {"qemu": 480.0, "kvm": 180.0}
READY_BUDGET_ENV = "STACKLAB_VM_READY_SECONDS"


def ready_budgets(environ: Mapping[str, str]) -> dict[str, float]:
    """READY_BUDGET, or every kind at $STACKLAB_VM_READY_SECONDS (a number of seconds, 30 to 86400) when set."""
    raw = environ.get(READY_BUDGET_ENV, "").strip()
    if not raw:
        return dict(READY_BUDGET)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 30.0 <= seconds <= 86400.0:
        raise StackLabError(
            f"{READY_BUDGET_ENV}={raw!r} is not a number of seconds from 30 to 86400",
            hint=f"unset it for the defaults ({', '.join(f'{k} {v:g}s' for k, v in READY_BUDGET.items())})",
        )
    return dict.fromkeys(READY_BUDGET, seconds)


LIBVIRT_QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")

_connect_lock = threading.Lock()
# VM applies in flight in this process: a failed one releases the daemon only when it is the last.
_applying = [0]
_applying_lock = threading.Lock()


# Names, paths and the domain config (pure) are in vm_domain.py; waiting for SSH and cloud-init in vm_ready.py.


# ----------------------------------------------------------------------------------------------------
# Collaborators (injectable so unit tests run apply against test:///default without a guest)


class SeedWriter(Protocol):
    def __call__(
        self,
        *,
        lab_name: str,
        node_name: str,
        node_spec: Mapping[str, Any],
        public_key: str,
        hosts: Mapping[str, str],
        dest: Path,
        runner: Runner,
        templates_dir: Path | None = None,
    ) -> Mapping[str, str]: ...


class BaseDiskProvider(Protocol):
    def __call__(
        self, rootfs: Path, image_hash: str, runner: Runner, *, progress: Callable[[str], None]
    ) -> BaseDisk: ...


def write_seed(
    *,
    lab_name: str,
    node_name: str,
    node_spec: Mapping[str, Any],
    public_key: str,
    hosts: Mapping[str, str],
    dest: Path,
    runner: Runner,
    templates_dir: Path | None = None,
) -> Mapping[str, str]:
    """The NoCloud seed image from the shared renderer (same user-data/network-config as containers); returns the
    documents it holds."""
    from stacklab.drivers.nodes.seed import make_seed_iso, render_nocloud

    files = render_nocloud(
        lab_name=lab_name,
        node_name=node_name,
        node_spec=node_spec,
        public_key=public_key,
        hosts=hosts,
        templates_dir=templates_dir,
    )
    make_seed_iso(files, dest, runner)
    return files


# libvirt lookups, undefine and QEMU's access to the files are in vm_libvirt.py.


# ----------------------------------------------------------------------------------------------------
# The driver


def _fresh_node_dir(layout: VmLayout) -> None:
    """The node's directory, traversable by QEMU, without an earlier boot's console log (this boot's only)."""
    layout.node_dir.mkdir(parents=True, exist_ok=True)
    for directory in (layout.vm_dir, layout.node_dir):
        directory.chmod(0o755)
    layout.console_log.unlink(missing_ok=True)


@dataclass
class VmDriver(BaseDriver):
    """The `node` resource for spec kind "vm" (routed here by drivers/nodes/node.py)."""

    seed_writer: SeedWriter = write_seed
    base_disk: BaseDiskProvider = ensure_base_disk
    ready_waiter: ReadyWaiter = wait_ready
    ready_budget: Mapping[str, float] = field(default_factory=lambda: ready_budgets(os.environ))
    # Stop the libvirtd stacklab started once no lab has a VM or pool left on it.
    release_daemon: bool = True

    kind = "node"

    # -- connection -----------------------------------------------------------------------------------

    def _uri(self, ctx: DriverContext) -> str:
        return str(ctx.shared.get(SHARED_URI, libvirtd.URI))

    def _connect(self, ctx: DriverContext, *, start: bool, hide_kvm: bool = True) -> Any | None:
        """The shared libvirt connection; with start=False (observe) None when no libvirtd answers."""
        with _connect_lock:
            conn = ctx.shared.get(SHARED_CONN)
            if conn is not None and conn.isAlive():
                return conn
            uri = self._uri(ctx)
            if uri == libvirtd.URI:
                if start:
                    libvirtd.ensure_libvirtd(ctx.runner, hide_kvm=hide_kvm)
                elif not libvirtd.libvirtd_answers(ctx.runner, uri):
                    return None
            quiet_libvirt_errors()
            conn = libvirt.open(uri)
            ctx.shared[SHARED_CONN] = conn
            return conn

    # -- observe --------------------------------------------------------------------------------------

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        conn = self._connect(ctx, start=False)
        if conn is None:
            LOG.debug("no libvirtd answers; VM %s cannot be running", resource.name)
            return None
        name = domain_name(ctx.lab.name, resource.name)
        dom = lookup_domain(conn, name)
        if dom is None:
            return None
        xml = dom.XMLDesc(0)
        if owner_of(xml) != (ctx.lab.name, resource.name):
            return Observed(owned=False, facts={"domain": name})
        config = DomainConfig.parse(xml)
        active = bool(dom.isActive())
        drift: list[str] = []
        if not active:
            drift.append("stopped")
        recorded_hash = config.metadata.spec_hash if config.metadata else None
        if recorded_hash is not None and recorded_hash != resource.hash:
            drift.append(f"domain defined from another spec ({recorded_hash})")
        wanted = current_entry(ctx, str(resource.spec.get("image")))
        booted = image_hash_of_kernel(config.kernel)
        if wanted is not None and booted is not None and booted != wanted.hash:
            drift.append(f"image changed: built from {booted}, the recipe now gives {wanted.hash}")
        facts = {
            "domain": name,
            "state": "running" if active else "stopped",
            "virt_type": config.virt_type,
            "macs": list(config.macs),
            "taps": [i.target_dev for i in config.interfaces if i.target_dev],
        }
        return Observed(owned=True, facts=facts, drift=tuple(drift))

    # -- apply ----------------------------------------------------------------------------------------

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        if change.action is Action.DELETE:
            raise ValueError("deletions go through delete()")
        resource = change.resource
        spec = resource.spec
        node = resource.name
        layout = VmLayout(ctx.state_dir, node)
        kvm_usable = ctx.host.kvm.usable_for_guests if ctx.host is not None else None
        virt_type = choose_virt_type(str(spec.get("accel", "tcg")), kvm_usable)
        with _applying_lock:
            _applying[0] += 1
        try:
            return self._apply(resource, ctx, layout, virt_type, change)
        except BaseException:
            with _applying_lock:
                last = _applying[0] == 1
            if last:  # a daemon started for this `up` must not outlive a failure that leaves no VM
                try:
                    self._release_daemon_if_unused(ctx)
                except Exception:
                    LOG.exception("VM %s: could not release libvirtd after a failed apply", node)
            raise
        finally:
            with _applying_lock:
                _applying[0] -= 1

    def _apply(
        self, resource: Resource, ctx: DriverContext, layout: VmLayout, virt_type: DomainType, change: Change
    ) -> Mapping[str, Any]:
        spec = resource.spec
        lab, node = ctx.lab.name, resource.name
        conn = self._connect(ctx, start=True, hide_kvm=virt_type != "kvm")
        assert conn is not None
        name = domain_name(lab, node)

        reused = self._keep_existing(resource, ctx, conn, layout=layout, virt_type=virt_type, change=change)
        if reused is not None:
            return reused
        ctx.progress(f"preparing disks for {node}")
        image_id = f"image/{spec['image']}"
        rootfs = Path(str(ctx.output(image_id, "rootfs")))
        base = self.base_disk(rootfs, str(ctx.output(image_id, "hash")), ctx.runner, progress=ctx.progress)
        key_id = f"sshkey/{lab}"
        key_file = str(ctx.output(key_id, "private_key"))
        public_key = public_key_text(str(ctx.output(key_id, "public_key")))
        try:
            self._make_disks(conn, ctx, resource, layout=layout, base=base, public_key=public_key)
            config = build_domain(
                lab=lab,
                node=node,
                spec=spec,
                spec_hash=resource.hash,
                layout=layout,
                kernel=str(base.kernel),
                initrd=str(base.initrd),
                virt_type=virt_type,
            )
            dom = conn.defineXML(config.to_xml())
            LOG.info("VM %s: defined %s (%s, %d MiB, %d vCPU)", node, name, virt_type, config.memory_mib, config.vcpus)
            return self._start_and_wait(
                ctx, dom, spec=spec, layout=layout, virt_type=virt_type, fresh=True, key_file=key_file
            )
        except BaseException:
            LOG.info("VM %s: apply failed; removing what it made (console log kept)", node)
            try:
                self._remove_node(conn, ctx, layout, name, keep_console=True)
            except Exception:
                LOG.exception("VM %s: cleanup after a failed apply failed too", node)
            raise

    def _make_disks(
        self, conn: Any, ctx: DriverContext, resource: Resource, *, layout: VmLayout, base: BaseDisk, public_key: str
    ) -> None:
        """A fresh node directory and the lab's pool (QEMU may reach both), the node's volumes on the base disk and
        its NoCloud seed; the pool refreshed so libvirt sees the seed."""
        lab, spec = ctx.lab.name, resource.spec
        _fresh_node_dir(layout)
        with POOL_LOCK:
            pool = ensure_pool(conn, lab, layout)
        if self._uri(ctx) == libvirtd.URI:
            grant_qemu_traversal(ctx.state_dir, layout)
            check_reachable_by_qemu([base.qcow2, base.kernel, base.initrd, layout.pool_dir / "x"])
        with POOL_LOCK:
            create_volumes(pool, layout, spec, base)
        self.seed_writer(
            lab_name=lab,
            node_name=resource.name,
            node_spec=spec,
            public_key=public_key,
            hosts=lab_hosts(ctx),
            dest=layout.path(layout.seed_volume),
            runner=ctx.runner,
            templates_dir=find_templates_dir(ctx.lab_file_dir),
        )
        with POOL_LOCK:
            pool.refresh(0)

    def _keep_existing(
        self,
        resource: Resource,
        ctx: DriverContext,
        conn: Any,
        *,
        layout: VmLayout,
        virt_type: DomainType,
        change: Change,
    ) -> Mapping[str, Any] | None:
        """An existing domain of this node: started as it is when its spec, image and volumes are current (its
        outputs), else removed (None: the caller builds it anew). A domain another lab owns is a PlanError."""
        spec = resource.spec
        lab, node = ctx.lab.name, resource.name
        name = domain_name(lab, node)
        existing = lookup_domain(conn, name)
        if existing is None:
            return None
        xml = existing.XMLDesc(0)
        if owner_of(xml) != (lab, node):
            raise PlanError(
                f"libvirt domain {name} exists but is not owned by this lab",
                resource=resource.id,
                hint="stacklab never touches foreign domains; undefine or rename it",
            )
        config = DomainConfig.parse(xml)
        same_spec = config.metadata is not None and config.metadata.spec_hash == resource.hash
        same_image = image_hash_of_kernel(config.kernel) in (
            None,
            str(ctx.output(f"image/{spec['image']}", "hash")),
        )
        if same_spec and same_image and volumes_present(conn, lab, layout, spec):
            return self._start_and_wait(ctx, existing, spec=spec, layout=layout, virt_type=virt_type, fresh=False)
        LOG.info("VM %s: recreating domain %s (%s)", node, name, "; ".join(change.reasons) or "spec changed")
        self._remove_node(conn, ctx, layout, name, keep_console=False)
        return None

    def _start_and_wait(
        self,
        ctx: DriverContext,
        dom: Any,
        *,
        spec: Mapping[str, Any],
        layout: VmLayout,
        virt_type: DomainType,
        fresh: bool,
        key_file: str | None = None,
    ) -> Mapping[str, Any]:
        node = layout.node
        if key_file is None:
            key_file = str(ctx.output(f"sshkey/{ctx.lab.name}", "private_key"))
        start = time.monotonic()
        if not dom.isActive():
            ctx.progress(f"starting {node}")
            if self._uri(ctx) == libvirtd.URI:
                grant_qemu_traversal(ctx.state_dir, layout)  # the engine reset the lab dir to 0700
            dom.create()
            LOG.info("VM %s: started in %.2fs", node, time.monotonic() - start)
        budget = float(self.ready_budget.get(virt_type, READY_BUDGET["qemu"]))
        ctx.progress(f"waiting for {node}: SSH and cloud-init (budget {budget:g}s)")
        target = ReadyTarget(
            node=node,
            host=mgmt_address(spec),
            user=SSH_USER,
            port=SSH_PORT,
            key_file=key_file,
            console_log=layout.console_log,
            is_alive=lambda: bool(dom.isActive()),
        )
        if fresh:
            self._forget_host_key(ctx, target.host)
        self.ready_waiter(target, budget=budget, runner=ctx.runner)
        ready = time.monotonic() - start
        LOG.info("VM %s: SSH and cloud-init ready %.1fs after start", node, ready)
        return vm_outputs(
            domain=str(dom.name()),
            virt_type=virt_type,
            spec=spec,
            layout=layout,
            key_file=key_file,
            ready_seconds=ready,
            pool=pool_name(ctx.lab.name),
            uri=self._uri(ctx),
        )

    def _forget_host_key(self, ctx: DriverContext, host: str) -> None:
        """A recreated VM has new host keys: drop the old one from the lab's known_hosts."""
        known = ctx.state_dir / "known_hosts"
        if known.exists():
            try:
                ctx.runner.run(["ssh-keygen", "-R", host, "-f", str(known)], timeout=30, check=False)
            except (CommandError, CommandTimeout) as exc:
                LOG.debug("could not remove %s from %s: %s", host, known, exc)

    # -- delete ---------------------------------------------------------------------------------------

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        node = resource_id.split("/", 1)[-1]
        outputs: Mapping[str, Any] = recorded.get("outputs", {})
        layout = VmLayout(ctx.state_dir, node)
        conn = self._connect(ctx, start=True)
        assert conn is not None
        name = str(outputs.get("domain") or domain_name(ctx.lab.name, node))
        self._remove_node(conn, ctx, layout, name, keep_console=False)
        if host := outputs.get("ssh", {}).get("host"):
            self._forget_host_key(ctx, str(host))
        self._release_daemon_if_unused(ctx)

    def _remove_node(self, conn: Any, ctx: DriverContext, layout: VmLayout, name: str, *, keep_console: bool) -> None:
        """Destroy and undefine the node's domain (if ours), delete its volumes, and the pool once empty."""
        lab, node = ctx.lab.name, layout.node
        dom = lookup_domain(conn, name)
        if dom is not None:
            if owner_of(dom.XMLDesc(0)) != (lab, node):
                LOG.warning("domain %s is not owned by lab %s node %s; leaving it alone", name, lab, node)
            else:
                if dom.isActive():
                    try:
                        dom.destroy()
                    except libvirt.libvirtError as exc:
                        if dom.isActive():
                            raise
                        LOG.debug("domain %s stopped by itself: %s", name, exc)
                undefine(dom)
                LOG.info("VM %s: domain %s destroyed and undefined", node, name)
                if not keep_console and self._uri(ctx) == libvirtd.URI:
                    # libvirt's own per-domain QEMU log; the domain was ours, so is its log
                    (LIBVIRT_QEMU_LOG_DIR / f"{name}.log").unlink(missing_ok=True)
        remove_volumes(conn, lab, layout)
        if not keep_console and layout.node_dir.exists():
            shutil.rmtree(layout.node_dir)
        if layout.vm_dir.is_dir() and not any(layout.vm_dir.iterdir()):
            layout.vm_dir.rmdir()

    def _release_daemon_if_unused(self, ctx: DriverContext) -> None:
        """Stop the libvirtd stacklab started once no stacklab domain or pool is left on it (any lab)."""
        if not self.release_daemon or self._uri(ctx) != libvirtd.URI:
            return
        if not any(d.name == "libvirtd" for d in libvirtd.owned_daemons()):
            return
        with ctx.lock, _connect_lock:
            conn = ctx.shared.get(SHARED_CONN)
            if conn is None or not conn.isAlive():
                return
            domains = conn.listAllDomains(0)
            in_use = [d.name() for d in domains if d.isActive() or owner_of(d.XMLDesc(0)) is not None]
            pools = [p.name() for p in conn.listAllStoragePools(0) if p.name().startswith("stacklab-")]
            if in_use or pools:
                LOG.debug("libvirtd still in use (domains %s, pools %s)", in_use, pools)
                return
            conn.close()
            ctx.shared.pop(SHARED_CONN, None)
            stopped = libvirtd.stop_owned_libvirtd()
            LOG.info("stopped %s: no lab uses them any more", ", ".join(d.name for d in stopped) or "nothing")
