"""Container nodes: privileged LXC system containers (systemd as PID 1) on an overlay of the image's rootfs.

Layout, per lab (labs never share an lxcpath): lxcpath = `<state_dir>/lxc` (absolute), container name = the node's
hostname, node dir = `<lxcpath>/<name>` holding
  config          the LXC config, rendered here in full (python3-lxc's set_config_item cannot set lxc.include);
                  its first line is the ownership mark `# stacklab-marker: stacklab:<lab>:node:<name>`
  stacklab.json   the same mark plus the image rootfs and spec hash the container was made from
  delta0/         the overlay upper dir (LXC's own `overlay:LOWER:UPPER` backend, mounted only inside the
                  container); the NoCloud seed goes to delta0/var/lib/cloud/seed/nocloud/ before the first boot
  console.log, lxc.log
Addresses are not in the LXC config: cloud-init's network-config matches each NIC by its MAC. One `veth` per NIC,
its host side named by the spec (`host_ifname`, lab prefix) on the NIC's bridge.

Cgroups: each container gets its own tree `stacklab/<lab>-<hash of lxcpath>/<name>/{payload,monitor,pivot}` in
every hierarchy (`lxc.cgroup.dir.*`), so the `lxc.pivot` cgroup LXC leaves behind on stop is ours alone and
`delete` removes exactly that tree (rmdir only: a cgroup with processes in it is never forced).

Readiness after `lxc-start -d`, each with its own budget: the container is RUNNING, `cloud-init status --wait`
(via lxc-attach) says done, and SSH with the lab key answers on the node's management address.

After a failed apply nothing is left: the container is stopped and destroyed, its cgroups and node dir removed.
Its console and LXC logs are first copied to `<state_dir>/logs/container-<name>.{console,lxc}.log`, and the error
names them. A later `up` therefore starts from scratch. (Restarting an existing, recorded container that then
fails its readiness leaves it as it is: it is in the state file, and `down` removes it.)
An `apply` of an existing container of ours reuses it when its rendered config is unchanged (starting it if it
is stopped), and recreates it otherwise (e.g. a new image rootfs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacklab.drivers.base import BaseDriver, DriverContext
from stacklab.drivers.nodes.image import current_entry
from stacklab.drivers.nodes.lxc_config import (
    FILE_HANDLES,
    SECCOMP_WITH_FILE_HANDLES,
    SSH_PORT,
    SSH_USER,
    CgroupKeys,
    ContainerLayout,
    bare_address,
    cgroup_base,
    container_outputs,
    detect_cgroup_keys,
    marker_of,
    mgmt_nic,
    render_lxc_config,
    rootfs_of,
)
from stacklab.drivers.nodes.lxc_host import (
    cgroup_mounts,
    container_state,
    file_tail,
    link_exists,
    lxc_attach_argv,
    lxc_start_argv,
    remove_cgroup_tree,
)
from stacklab.drivers.nodes.seed import (
    find_templates_dir,
    lab_hosts,
    public_key_text,
    render_nocloud,
    write_seed_dir,
)
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.readiness import NotReady, ReadinessTimeout, wait_until
from stacklab.exec.runner import CommandError, CommandTimeout, Runner
from stacklab.exec.ssh import forget_host_key, wait_for_ssh
from stacklab.plan.resource import Action, Change, Observed, Resource

LOG = logging.getLogger(__name__)


# Command timeouts (seconds) for the lxc-* tools.
_START_TIMEOUT = 60.0
_STOP_CLEAN_SECONDS = 30
_KILL_TIMEOUT = 30.0
_DESTROY_TIMEOUT = 120.0
_IP_TIMEOUT = 15.0


@dataclass(frozen=True)
class ReadyBudgets:
    """Seconds allowed for each readiness step after `lxc-start` (the measured total is ~3 s with cloud-init)."""

    running: float = 30.0
    cloud_init: float = 240.0
    ssh: float = 60.0
    # After stop: the monitor process must leave its pivot cgroup, the host veths must disappear.
    cleanup: float = 20.0


# Names, paths and the LXC config (pure) are in lxc_config.py; the lxc-* command lines and the host cleanup
# (cgroups, veths) in lxc_host.py.


# ----------------------------------------------------------------------------------------------------
# The driver


@dataclass
class ContainerDriver(BaseDriver):
    """The `node` resource for spec kind "container" (routed here by drivers/nodes/node.py).

    Stateless apart from its settings: nodes are applied in parallel from one instance.
    """

    budgets: ReadyBudgets = field(default_factory=ReadyBudgets)
    # Injectable for unit tests: SSH readiness (host, key_file, budget, **kw) -> seconds.
    ssh_waiter: Callable[..., float] = wait_for_ssh
    cgroup_keys: Callable[[], CgroupKeys] = detect_cgroup_keys
    cgroup_mounts: Callable[[], list[Path]] = cgroup_mounts
    link_exists: Callable[[str], bool] = link_exists
    poll_interval: float = 0.2

    kind = "node"

    # -- observe --------------------------------------------------------------------------------------

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        spec = resource.spec
        layout = ContainerLayout.for_lab(ctx.state_dir, str(spec.get("hostname") or resource.name))
        try:
            config_text = layout.config.read_text()
        except FileNotFoundError:
            return None
        if marker_of(config_text) != spec.get("marker"):
            return Observed(owned=False, facts={"config": str(layout.config), "marker": marker_of(config_text)})
        state, pid = container_state(ctx.runner, layout)
        drift: list[str] = []
        if state == "MISSING":
            drift.append("config present but LXC does not list the container")
        elif state != "RUNNING":
            drift.append("stopped" if state == "STOPPED" else f"state {state}")
        wanted = current_entry(ctx, str(spec.get("image")))
        image_rootfs = wanted.rootfs if wanted else (ctx.outputs.get(f"image/{spec.get('image')}") or {}).get("rootfs")
        current = rootfs_of(config_text)
        if image_rootfs and current and os.path.normpath(str(image_rootfs)) != os.path.normpath(current):
            drift.append(f"image rootfs changed: {current} -> {image_rootfs}")
        facts = {"state": state.lower(), "pid": pid, "lxcpath": str(layout.lxcpath), "name": layout.name}
        return Observed(owned=True, facts=facts, drift=tuple(drift))

    # -- apply ----------------------------------------------------------------------------------------

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        if change.action is Action.DELETE:
            raise ValueError("deletions go through delete()")
        resource = change.resource
        spec = resource.spec
        if spec.get("kind") != "container":
            raise PlanError(f"ContainerDriver got a node of kind {spec.get('kind')!r}", resource=resource.id)
        lab = ctx.lab.name
        layout = ContainerLayout.for_lab(ctx.state_dir, str(spec.get("hostname") or resource.name))
        rootfs = Path(str(ctx.output(f"image/{spec['image']}", "rootfs")))
        if not rootfs.is_dir():
            raise StackLabError(
                f"image rootfs {rootfs} does not exist", resource=resource.id, hint="is the image built?"
            )
        key_file = str(ctx.output(f"sshkey/{lab}", "private_key"))
        config_text = render_lxc_config(lab=lab, spec=spec, layout=layout, rootfs=rootfs, cgroup=self.cgroup_keys())

        if layout.config.exists():
            existing = layout.config.read_text()
            if marker_of(existing) != spec["marker"]:
                raise PlanError(
                    f"container {layout.name} in {layout.lxcpath} is not owned by this node",
                    resource=resource.id,
                    hint="stacklab never touches foreign containers; remove it by hand",
                )
            if existing == config_text:
                LOG.info("container %s: reusing the existing container (%s)", layout.name, change.action.value)
                return self._start_and_wait(ctx, resource, layout, key_file=key_file, fresh=False)
            LOG.info("container %s: config changed, recreating (%s)", layout.name, "; ".join(change.reasons))
            self._remove(ctx, layout, spec)
        elif layout.node_dir.exists():
            self._remove_leftover_dir(layout, spec, resource.id)

        try:
            self._create(ctx, resource, layout, config_text, rootfs)
            return self._start_and_wait(ctx, resource, layout, key_file=key_file, fresh=True)
        except BaseException as exc:
            saved = self._save_logs(ctx, layout)
            LOG.info("container %s: apply failed; removing it (logs kept in %s)", layout.name, saved or "-")
            try:
                self._remove(ctx, layout, spec)
            except Exception:
                LOG.exception("container %s: cleanup after a failed apply failed too", layout.name)
            if isinstance(exc, StackLabError) and saved:
                kept = f"the node was removed; its logs are kept in {', '.join(map(str, saved))}"
                raise StackLabError(
                    f"{exc.message}\nlast lines of {saved[0]}:\n{file_tail(saved[0])}",
                    hint=f"{exc.hint}; {kept}" if exc.hint else kept,
                    resource=exc.resource or resource.id,
                ) from exc
            raise

    def _remove_leftover_dir(self, layout: ContainerLayout, spec: Mapping[str, Any], rid: str) -> None:
        """A node dir without a config: a create that died before writing it. Remove it if it is ours."""
        marker = None
        with contextlib.suppress(OSError, ValueError):
            marker = json.loads(layout.meta.read_text()).get("marker")
        if marker not in (None, spec["marker"]):
            raise PlanError(f"{layout.node_dir} belongs to {marker}", resource=rid, hint="remove it by hand")
        LOG.info("container %s: removing the leftovers of an earlier failed create", layout.name)
        shutil.rmtree(layout.node_dir)

    def _create(
        self, ctx: DriverContext, resource: Resource, layout: ContainerLayout, config_text: str, rootfs: Path
    ) -> None:
        """The node dir, its marker, the seed in the upper dir, and last the config (so a config means complete)."""
        spec = resource.spec
        lab = ctx.lab.name
        public_key = public_key_text(str(ctx.output(f"sshkey/{lab}", "public_key")))
        files = render_nocloud(
            lab_name=lab,
            node_name=resource.name,
            node_spec=spec,
            public_key=public_key,
            hosts=lab_hosts(ctx),
            templates_dir=find_templates_dir(ctx.lab_file_dir),  # the lab's own cloud-init/ first
        )
        layout.node_dir.mkdir(mode=0o750, parents=True)  # parents: the lxcpath (another node may remove it)
        meta = {
            "marker": spec["marker"],
            "lab": lab,
            "node": resource.name,
            "rootfs": str(rootfs),
            "spec_hash": resource.hash,
        }
        write_atomic(layout.meta, json.dumps(meta, indent=2, sort_keys=True) + "\n", mode=0o644)
        layout.delta.mkdir(mode=0o755)
        write_seed_dir(files, layout.seed_dir)
        if FILE_HANDLES in spec.get("features", []):
            write_atomic(layout.seccomp, SECCOMP_WITH_FILE_HANDLES, mode=0o644)
        write_atomic(layout.config, config_text, mode=0o644)
        LOG.info("container %s: defined in %s on %s", layout.name, layout.lxcpath, rootfs)

    def _start_and_wait(
        self, ctx: DriverContext, resource: Resource, layout: ContainerLayout, *, key_file: str, fresh: bool
    ) -> Mapping[str, Any]:
        spec = resource.spec
        name = layout.name
        host = bare_address(str(mgmt_nic(spec)["address"]))
        known_hosts = ctx.state_dir / "known_hosts"
        if fresh:
            # cloud-init generates new host keys for a new container.
            forget_host_key(known_hosts, host, SSH_PORT)
        state, _pid = container_state(ctx.runner, layout)
        start = time.monotonic()
        if state != "RUNNING":
            ctx.progress(f"starting container {name}")
            if not fresh:
                layout.console_log.unlink(missing_ok=True)
            ctx.runner.run(lxc_start_argv(layout), timeout=_START_TIMEOUT)
        budgets = self.budgets

        def running() -> bool:
            current, pid = container_state(ctx.runner, layout)
            if current == "RUNNING" and pid:
                return True
            if current in ("STOPPED", "MISSING"):
                raise StackLabError(
                    f"container {name} stopped right after lxc-start; LXC log ({layout.lxc_log}):\n"
                    + file_tail(layout.lxc_log),
                    resource=resource.id,
                )
            raise NotReady(f"state {current}")

        wait_until(
            running,
            budget=budgets.running,
            interval=self.poll_interval,
            what=f"container {name} to be RUNNING",
            resource=resource.id,
        )
        ctx.progress(f"waiting for {name}: cloud-init (budget {budgets.cloud_init:g}s)")
        self._wait_cloud_init(ctx.runner, layout, resource.id, budgets.cloud_init)
        ctx.progress(f"waiting for {name}: SSH on {host} (budget {budgets.ssh:g}s)")
        self.ssh_waiter(
            host,
            Path(key_file),
            budgets.ssh,
            user=SSH_USER,
            port=SSH_PORT,
            known_hosts=known_hosts,
            resource=resource.id,
        )
        ready = time.monotonic() - start
        LOG.info("container %s: RUNNING, cloud-init done and SSH ready %.2fs after start", name, ready)
        return container_outputs(spec=spec, layout=layout, key_file=key_file, ready_seconds=ready)

    def _wait_cloud_init(self, runner: Runner, layout: ContainerLayout, rid: str, budget: float) -> None:
        argv = lxc_attach_argv(layout, ["cloud-init", "status", "--wait", "--long"])
        try:
            result = runner.run(argv, timeout=budget, check=False)
        except CommandTimeout as exc:
            raise ReadinessTimeout(
                f"cloud-init in container {layout.name} to finish",
                budget,
                "`cloud-init status --wait` still waiting",
                1,
                hint=f"see {layout.console_log} and /var/log/cloud-init.log in the node",
                resource=rid,
            ) from exc
        status = _status_line(result.stdout)
        if result.ok and status == "done":
            return
        state, _pid = container_state(runner, layout)
        if state != "RUNNING":
            raise StackLabError(
                f"container {layout.name} stopped while booting (state {state})",
                resource=rid,
                hint=f"see {layout.console_log} and {layout.lxc_log}",
            )
        detail = (result.stdout.strip() or result.stderr.strip() or f"exit code {result.returncode}")[-2000:]
        raise StackLabError(
            f"cloud-init in container {layout.name} did not finish cleanly (status {status or '?'}):\n{detail}",
            resource=rid,
            hint="see /var/log/cloud-init.log in the node (lxc-attach -P "
            f"{layout.lxcpath} -n {layout.name} -- less /var/log/cloud-init.log)",
        )

    def _save_logs(self, ctx: DriverContext, layout: ContainerLayout) -> list[Path]:
        saved = []
        logs = ctx.state_dir / "logs"
        for source, suffix in ((layout.console_log, "console"), (layout.lxc_log, "lxc")):
            if source.is_file():
                logs.mkdir(parents=True, exist_ok=True)
                dest = logs / f"container-{layout.name}.{suffix}.log"
                try:
                    shutil.copyfile(source, dest)
                    saved.append(dest)
                except OSError as exc:
                    LOG.warning("could not keep %s: %s", source, exc)
        return saved

    # -- delete ---------------------------------------------------------------------------------------

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        node = resource_id.split("/", 1)[-1]
        spec: Mapping[str, Any] = recorded.get("spec", {})
        outputs: Mapping[str, Any] = recorded.get("outputs", {})
        name = str(outputs.get("name") or spec.get("hostname") or node)
        layout = ContainerLayout.for_lab(ctx.state_dir, name)
        if outputs.get("lxcpath"):
            layout = ContainerLayout(Path(os.path.abspath(str(outputs["lxcpath"]))), name)
        if layout.config.exists():
            marker = marker_of(layout.config.read_text())
            if spec.get("marker") and marker != spec["marker"]:
                raise StackLabError(
                    f"container {name} in {layout.lxcpath} carries the mark {marker!r}, not {spec['marker']!r}",
                    resource=resource_id,
                    hint="stacklab never removes what it does not own; remove it by hand",
                )
        # Deleted with the rest of its lab (`down`, or a node dropped from the lab file): everything recorded on the
        # node was deleted before it (the engine deletes dependents first), so a clean shutdown would only tidy a
        # root that is destroyed next, and it takes a controller's systemd 11-36 s to stop MariaDB, RabbitMQ and
        # the OpenStack units. Killed at once instead, as a VM going in the same run is destroyed; the leak check
        # still proves nothing of it is left on the host.
        self._remove(ctx, layout, spec, kill=node in ctx.vanishing_nodes)
        if host := outputs.get("ssh", {}).get("host"):
            forget_host_key(ctx.state_dir / "known_hosts", str(host), int(outputs["ssh"].get("port", SSH_PORT)))

    def _remove(
        self, ctx: DriverContext, layout: ContainerLayout, spec: Mapping[str, Any], *, kill: bool = False
    ) -> None:
        """Stop (clean, then kill; or `kill` at once), destroy, remove the cgroup tree, the veths and the node dir.
        Idempotent."""
        name = layout.name
        if layout.config.exists():
            state, _pid = container_state(ctx.runner, layout)
            if state not in ("STOPPED", "MISSING"):
                start = time.monotonic()
                if kill:
                    self._kill(ctx.runner, layout)
                else:
                    self._stop(ctx.runner, layout)
                ctx.progress(f"container {name}: {'killed' if kill else 'stopped'} in {time.monotonic() - start:.1f}s")
            start = time.monotonic()
            ctx.runner.run(["lxc-destroy", "-P", str(layout.lxcpath), "-n", name], timeout=_DESTROY_TIMEOUT, check=True)
            ctx.progress(f"container {name}: destroyed in {time.monotonic() - start:.1f}s")
            LOG.info("container %s: destroyed", name)
        if layout.node_dir.exists():
            shutil.rmtree(layout.node_dir)
        base = cgroup_base(ctx.lab.name, layout.lxcpath, name)
        mounts = self.cgroup_mounts()

        def cgroups_gone() -> bool:
            left = remove_cgroup_tree(base, mounts)
            if left:
                raise NotReady(f"{len(left)} cgroup(s) still busy, e.g. {left[0]}")
            return True

        wait_until(
            cgroups_gone,
            budget=self.budgets.cleanup,
            interval=self.poll_interval,
            what=f"the cgroups of container {name} ({base}) to be removable",
            hint="a process is still in the container's cgroup; see `cat /sys/fs/cgroup/*/" + base + "/*/cgroup.procs`",
        )
        self._ensure_veths_gone(ctx.runner, name, spec)
        with contextlib.suppress(OSError):  # other nodes still there, or already gone
            layout.lxcpath.rmdir()

    def _stop(self, runner: Runner, layout: ContainerLayout) -> None:
        base = ["lxc-stop", "-P", str(layout.lxcpath), "-n", layout.name]
        try:
            # -t: clean shutdown (SIGPWR to systemd), hard stop after the timeout.
            runner.run([*base, "-t", str(_STOP_CLEAN_SECONDS)], timeout=_STOP_CLEAN_SECONDS + 30)
            LOG.info("container %s: stopped", layout.name)
            return
        except (CommandError, CommandTimeout) as exc:
            LOG.warning("container %s: clean stop failed (%s); killing it", layout.name, str(exc).splitlines()[0])
        state, _pid = container_state(runner, layout)
        if state not in ("STOPPED", "MISSING"):
            self._kill(runner, layout)

    @staticmethod
    def _kill(runner: Runner, layout: ContainerLayout) -> None:
        """SIGKILL to the container's init: the kernel ends every process of its PID namespace with it."""
        runner.run(["lxc-stop", "-P", str(layout.lxcpath), "-n", layout.name, "-k"], timeout=_KILL_TIMEOUT)
        LOG.info("container %s: killed", layout.name)

    def _ensure_veths_gone(self, runner: Runner, name: str, spec: Mapping[str, Any]) -> None:
        """LXC removes the host side of each veth with the container's netns; delete any left behind."""
        ifnames = [str(n["host_ifname"]) for n in spec.get("nics", []) if n.get("host_ifname")]
        for ifname in ifnames:
            if self.link_exists(ifname):
                LOG.info("container %s: removing leftover veth %s", name, ifname)
                result = runner.run(["ip", "link", "delete", "dev", ifname], timeout=_IP_TIMEOUT, check=False)
                if not result.ok and self.link_exists(ifname):
                    raise CommandError(result)

        def gone() -> bool:
            left = [i for i in ifnames if self.link_exists(i)]
            if left:
                raise NotReady(f"still present: {', '.join(left)}")
            return True

        if ifnames:
            wait_until(
                gone,
                budget=self.budgets.cleanup,
                interval=self.poll_interval,
                what=f"the host veths of container {name} to disappear",
            )


def _status_line(stdout: str) -> str | None:
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "status":
            return value.strip()
    return None
