"""One CLI run against one lab: lock, event sinks, host report, engine, and the lab's exports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

import stacklab.drivers.registry  # noqa: F401  - registers every driver
from stacklab.engine.core import Engine
from stacklab.engine.events import EventBus, JsonlSink, PlainSink, RichSink
from stacklab.engine.state import StateStore, lab_lock
from stacklab.errors import StackLabError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.runner import LocalRunner, Runner
from stacklab.host.capabilities import HostReport, probe_host
from stacklab.host.choose import Choice, choose_all
from stacklab.host.snapshot import Leak
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab
from stacklab.plan.node_kind import KERNEL_PINS

# Lab file field -> doctor role, for implementations a lab may pin.
# How long `down` lets exiting processes of the lab finish before calling them leaks.
LEAK_CHECK_BUDGET = 15.0
PIN_FIELDS = {"iscsi": "iscsi_target", "nfs": "nfs_server", "ceph": "ceph"}
# Implementations that need modules the host may lack but a VM node's kernel has (host-notes: the cloud kernel).
VM_KERNEL_IMPLEMENTATIONS = frozenset(implementation for _role, implementation, _what in KERNEL_PINS.values())
# The lab as JSON text, in the lab file's order (the `lab` meta is an object, whose keys the state file sorts).
LAB_TEXT_META = "lab_json"


def probe(runner: Runner | None = None) -> HostReport:
    return probe_host(runner or LocalRunner(), disk_path=Path.cwd())


def lab_pins(lab: Lab | None) -> dict[str, str]:
    pins: dict[str, str] = {}
    if lab is None:
        return pins
    for section, role in PIN_FIELDS.items():
        spec = getattr(lab.storage, section)
        if spec is None or spec.implementation == "auto":
            continue
        # A kernel implementation pinned on a VM node runs in the VM's own kernel, not the host's: the host
        # report cannot judge it, and the backend's check_node asks that kernel (configfs, nfsd) before any change.
        node = lab.nodes.get(getattr(spec, "node", ""))
        # An `auto` node holding it becomes a VM node when the host lacks the module (plan/node_kind.py).
        if spec.implementation in VM_KERNEL_IMPLEMENTATIONS and node is not None and node.kind in ("vm", "auto"):
            continue
        pins[role] = spec.implementation
    swift = lab.openstack.swift if lab.openstack is not None and "swift" in lab.openstack.services else None
    if swift is not None and swift.device_kind != "auto":  # Swift's devices depend on the host kernel too
        pins["swift_devices"] = swift.device_kind
    return pins


def host_choices(report: HostReport, lab: Lab | None) -> dict[str, Choice]:
    return choose_all(report, lab_pins(lab))


def lab_from_arg(arg: str, state_root: Path) -> Lab:
    """A lab file path, or the name of a lab that has state here (its lab is stored in the state file)."""
    path = Path(arg)
    if path.suffix in (".yml", ".yaml") or path.is_file():
        return load_lab(path)
    store = StateStore(state_root, arg)
    stored = store.meta("lab")
    if not store.exists or stored is None:
        raise StackLabError(f"no lab named {arg!r} has state under {state_root}", hint="pass the lab file instead")
    # The state file sorts its keys, which reorders the lab's nodes, and `auto` addresses are handed out in file
    # order: the text keeps the file's order, so `status aio` observes with the same addresses as `plan`.
    ordered = store.meta(LAB_TEXT_META)
    if isinstance(ordered, str):
        stored = json.loads(ordered)
    try:
        lab = Lab.model_validate(stored)
    except pydantic.ValidationError as exc:
        # A lab brought up by an older stacklab may break a rule added since (an export outside /srv/nfs/, a name
        # that is no DNS label): say which, rather than end in the CLI's bug line.
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StackLabError(
            f"the lab stored for {arg!r} no longer passes this stacklab's checks ({exc.error_count()} problem(s); "
            f"first: {where}: {first['msg']})",
            hint="run this command with the stacklab release that brought the lab up",
        ) from exc
    return lab.model_copy(update={"source": store.meta("lab_file") or arg})


@dataclass
class Session:
    lab: Lab
    engine: Engine
    bus: EventBus
    runner: Runner

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, lab: Lab, state_root: Path, *, command: str, quiet: bool = False, lock: bool = True
    ) -> Iterator[Session]:
        lab_dir = state_root / lab.name
        if command in ("plan", "up"):  # a lab that cannot fit this host is refused before anything is written
            from stacklab.plan.host_fit import check_lab_fits_host

            check_lab_fits_host(lab, LocalRunner(), lab_dir)
        with lab_lock(lab_dir) if lock else contextlib.nullcontext():
            bus = EventBus()
            if lock:  # read-only commands (plan, status) leave no log behind
                bus.add_sink(JsonlSink(lab_dir / "logs" / f"{bus.run_id}-{command}.jsonl"))
            if not quiet:
                bus.add_sink(RichSink(sys.stderr) if sys.stderr.isatty() else PlainSink(sys.stderr))
            runner = LocalRunner()
            report = probe(runner)
            choices = {role: c.implementation for role, c in host_choices(report, lab).items()}
            from stacklab.engine.access import NodeRunners

            node_runners = NodeRunners(state_root / lab.name)
            engine = Engine(
                lab,
                state_root=state_root,
                runner=runner,
                bus=bus,
                choices=choices,
                host=report,
                node_runner=node_runners,
            )
            bus.emit("run_start", message=f"{command} {lab.name}")
            session = cls(lab, engine, bus, runner)
            try:
                yield session
            finally:
                node_runners.close()
                bus.emit("run_end", message=f"{command} {lab.name}")
                bus.close()

    @property
    def state(self) -> StateStore:
        return self.engine.state

    def remember_host_before_first_up(self) -> None:
        """Store the lab and, on the first `up`, a snapshot of the host for the leak check of `down`."""
        self.state.set_meta("lab", self.lab.model_dump(mode="json"))
        self.state.set_meta(LAB_TEXT_META, self.lab.model_dump_json())
        self.state.set_meta("lab_file", str(Path(self.lab.source).resolve()))
        if self.state.meta("host_before") is None:
            from stacklab.host.snapshot import take_snapshot

            with self.bus.phase("snapshot"):
                self.state.set_meta(
                    "host_before", take_snapshot(self.runner, lxcpaths=[self.state.dir / "lxc"]).to_json()
                )

    def leak_check(self) -> list[str]:
        from stacklab.host.snapshot import HostSnapshot, leaks, take_snapshot

        before = self.state.meta("host_before")
        if before is None:
            self.bus.note("no host snapshot from before `up`: leak check skipped")
            return []
        from stacklab.exec.readiness import NotReady, ReadinessTimeout, wait_until

        markers, prefixes = lab_markers(self.lab, self.state.dir), [self.lab.kernel_prefix]
        found: list[str] = []

        def clean() -> bool:
            # Monitors and daemons of deleted nodes take a moment to exit and be reaped: look again until the
            # budget ends, then report what is still there.
            after = take_snapshot(self.runner, lxcpaths=[self.state.dir / "lxc"])
            new_objects = leaks(HostSnapshot.from_json(before), after, lab_markers=markers, prefix_markers=prefixes)
            found[:] = [str(leak) for leak in new_objects if _attributable(leak, markers, self.lab.kernel_prefix)]
            if found:
                raise NotReady(f"{len(found)} objects still present")
            return True

        with self.bus.phase("leak-check"):
            try:
                wait_until(clean, budget=LEAK_CHECK_BUDGET, interval=0.5, what="lab objects to disappear")
            except ReadinessTimeout:
                return found
        return []

    def finish_down(self) -> None:
        """Remove the lab's state (keys, secrets, exports) but keep its run logs and verify's reports (each run's
        JUnit and HTML: the verdict a nightly job or a person reads after `down`) for diagnosis and benchmarks."""
        self.state.remove()
        for child in self.state.dir.iterdir():
            if child.name in ("logs", "lock"):
                continue
            if child.name == "verify" and child.is_dir():
                _keep_reports_only(child)
            elif child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def write_exports(self) -> None:
        """ssh_config and an Ansible inventory for the lab's nodes (from the recorded node outputs)."""
        nodes = _ssh_targets(self.state)
        if not nodes:
            return
        known = self.state.dir / "known_hosts"
        ssh_lines = []
        inventory: dict[str, Any] = {"all": {"hosts": {}}}
        for name, ssh in sorted(nodes.items()):
            ssh_lines += [
                f"Host {name}",
                f"  HostName {ssh['host']}",
                f"  User {ssh.get('user', 'root')}",
                f"  Port {ssh.get('port', 22)}",
                f"  IdentityFile {ssh['key']}",
                f"  UserKnownHostsFile {known}",
                "  StrictHostKeyChecking accept-new",
                "  IdentitiesOnly yes",
                "",
            ]
            inventory["all"]["hosts"][name] = {
                "ansible_host": ssh["host"],
                "ansible_user": ssh.get("user", "root"),
                "ansible_ssh_private_key_file": ssh["key"],
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=accept-new",
            }
        write_atomic(self.state.dir / "ssh_config", "\n".join(ssh_lines), mode=0o600)
        write_atomic(self.state.dir / "inventory.json", json.dumps(inventory, indent=2) + "\n", mode=0o600)

    def status(self) -> list[dict[str, Any]]:
        from stacklab.plan.resource import Resource

        rows = []
        for rid, rec in sorted(self.state.resources.items()):
            resource = Resource(rec["kind"], rec["name"], rec.get("spec", {}), tuple(rec.get("deps", ())))
            driver = self.engine._driver(resource.kind)
            row: dict[str, Any] = {"id": rid, "outputs": rec.get("outputs", {})}
            if driver is None:
                row["state"] = "unknown (no driver)"
            else:
                try:
                    observed = driver.observe(resource, self.engine._step_ctx(rid))  # as `plan` observes
                except StackLabError as exc:
                    observed, row["error"] = None, str(exc)
                if observed is None:
                    row["state"] = "missing"
                elif not observed.owned:
                    row["state"] = "foreign"
                else:
                    row["state"] = "drift: " + "; ".join(observed.drift) if observed.drift else "present"
                    row["facts"] = dict(observed.facts)
            rows.append(row)
        return rows


def lab_markers(lab: Lab, state_dir: Path) -> list[str]:
    """Names that tie a host object or process to this lab, matched exactly (a delimiter after them, so lab
    `containers-3` never claims `containers-3b`'s): the lab name, its state dir, the cgroup directory of its
    containers and its libvirt domain names. The kernel prefix is matched apart, as the start of a name."""
    from stacklab.drivers.nodes.lxc_config import cgroup_lab_dir
    from stacklab.drivers.nodes.vm_domain import domain_name

    lxcpath = Path(os.path.abspath(state_dir / "lxc"))
    domains = [domain_name(lab.name, node) for node in lab.nodes]
    return [lab.name, str(state_dir), cgroup_lab_dir(lab.name, lxcpath), *domains]


def _attributable(leak: Leak, markers: list[str], prefix: str) -> bool:
    """Whether a new host object belongs to this lab. Other labs (and the host) create objects meanwhile;
    ours carry the lab's kernel prefix, name or state dir. Processes are already filtered by markers, and
    containers are only listed from this lab's own lxcpath."""
    from stacklab.host.snapshot import mentions_any

    if leak.kind in ("process", "lxc container"):
        return True
    if leak.kind == "interface":
        return leak.object.startswith(prefix)
    return mentions_any(f"{leak.object} {leak.detail}", markers, [prefix]) is not None


def _ssh_targets(state: StateStore) -> dict[str, Mapping[str, Any]]:
    out = {}
    for rid, rec in state.resources.items():
        ssh = rec.get("outputs", {}).get("ssh")
        if rid.startswith("node/") and ssh:
            out[rid.split("/", 1)[1]] = ssh
    return out


def ssh_argv(lab: str, node: str, state_root: Path, command: list[str]) -> list[str]:
    state = StateStore(state_root, lab)
    targets = _ssh_targets(state)
    if node not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise StackLabError(f"lab {lab} has no node {node!r} that is up", hint=f"nodes up: {known}")
    ssh = targets[node]
    return [
        "ssh",
        "-i",
        str(ssh["key"]),
        "-p",
        str(ssh.get("port", 22)),
        "-o",
        f"UserKnownHostsFile={state.dir / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "IdentitiesOnly=yes",
        f"{ssh.get('user', 'root')}@{ssh['host']}",
        *command,
    ]


# verify's reports (verify.py): `<time>.xml`, `<time>.html`, `tempest-<time>.xml`. What else verify keeps there holds
# the lab's secrets (context.json, tempest's workspace with its tempest.conf) and goes with the lab.
REPORT_NAMES = ("[0-9]*.xml", "[0-9]*.html", "tempest-[0-9]*.xml")


def _keep_reports_only(verify_dir: Path) -> None:
    keep = {path for pattern in REPORT_NAMES for path in verify_dir.glob(pattern) if path.is_file()}
    for child in verify_dir.iterdir():
        if child in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
