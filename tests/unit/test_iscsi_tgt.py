"""tgt backend: golden conf/drop-in/commands, the tgtadm show parser on a captured sample, and the role driver's
apply/observe/diff/delete against a fake node whose tgtd keeps state like the real one.

`tests/golden/storage/tgtadm-show.sample.txt` was captured from tgt 1.0.85 (Debian 12) on the CI host
(`tgtadm --lld iscsi --mode target --op show` with two file LUNs, a CHAP account and address + name ACLs); only the
backing file directory was rewritten to /var/lib/stacklab/iscsi. The rendered conf was also checked against the
real `tgt-admin -p -e` (it produces the same tgtadm calls as `live_commands`).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext, driver_for
from stacklab.drivers.storage.iscsi.driver import IscsiDriver, iscsi_layout, outputs_of
from stacklab.drivers.storage.iscsi.tgt import (
    CHAP_HELPER_PATH,
    DROPIN_PATH,
    NODE_PYTHON,
    TGT_CHAP_HELPER,
    chap_path,
    conf_path,
    live_commands,
    parse_tgt_accounts,
    parse_tgt_portals,
    parse_tgt_show,
    render_chap_file,
    render_dropin,
    render_tgt_conf,
    seen_of,
)
from stacklab.drivers.storage.iscsi.types import chap_secret_name, drift_of, initiator_iqn
from stacklab.errors import PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.golden_util import GOLDEN, check_golden
from tests.unit.test_lvm import FakeNode

LABS = Path(__file__).resolve().parents[2] / "labs"
SECRETS = {"iscsi-chap-lun1": "SecretOne1234567", "iscsi-chap-lun2": "SecretTwo7654321"}


@pytest.fixture
def lab() -> Lab:
    return load_lab_text((LABS / "aio.yml").read_text(), "aio.yml")


@pytest.fixture
def resource(lab: Lab) -> Resource:
    return next(r for r in expand(lab) if r.kind == "iscsi")


# --- a tgtd that remembers ----------------------------------------------------------------------------------


@dataclass
class FakeTgtd:
    """Enough of tgtd for the driver: targets, LUNs, ACLs, accounts and portals, printed like tgt 1.0.85."""

    portal: str = "0.0.0.0:3260"
    targets: dict[int, dict[str, object]] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)
    bound: dict[int, list[str]] = field(default_factory=dict)

    def helper(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        """stacklab-tgt-chap new USER < secret: an account made over tgtd's socket."""
        assert argv[2:3] == ("new",) and stdin, "CHAP passwords must come through stdin"
        self.accounts[argv[3]] = stdin
        return CommandResult(argv, 0, "", "", 0.0)

    def __call__(self, argv: tuple[str, ...]) -> CommandResult:
        args = list(argv)
        opts = dict(zip(args[3::2], args[4::2], strict=False)) if len(args) > 3 else {}
        mode, op = opts.get("--mode"), opts.get("--op")
        out = ""
        tid = int(opts.get("--tid", "0"))
        if mode == "target" and op == "show":
            out = self.show()
        elif mode == "portal" and op == "show":
            out = f"Portal: {self.portal},1\n"
        elif mode == "account" and op == "show":
            out = "Account list:\n" + "".join(f"    {u}\n" for u in self.accounts)
        elif mode == "target" and op == "new":
            self.targets[tid] = {"iqn": opts["--targetname"], "luns": {}, "acls": []}
        elif mode == "logicalunit" and op == "new":
            self.targets[tid]["luns"][int(opts["--lun"])] = opts["--backing-store"]  # type: ignore[index]
        elif mode == "target" and op == "bind":
            acl = opts.get("--initiator-address") or opts.get("--initiator-name")
            self.targets[tid]["acls"].append(acl)  # type: ignore[attr-defined]
        elif mode == "target" and op == "delete":
            tid = int(args[args.index("--tid") + 1])
            self.targets.pop(tid)
            self.bound.pop(tid, None)
        elif mode == "account" and op == "new":
            raise AssertionError(f"tgtadm account new puts the CHAP password on argv: {argv}")
        elif mode == "account" and op == "bind":
            self.bound.setdefault(tid, []).append(opts["--user"])
        elif mode == "account" and op == "delete":
            self.accounts.pop(opts["--user"], None)
            for users in self.bound.values():
                if opts["--user"] in users:
                    users.remove(opts["--user"])
        else:
            raise AssertionError(f"fake tgtd does not know {argv}")
        return CommandResult(argv, 0, out, "", 0.0)

    def show(self) -> str:
        lines: list[str] = []
        for tid, t in sorted(self.targets.items()):
            lines += [
                f"Target {tid}: {t['iqn']}",
                "    System information:",
                "        Driver: iscsi",
                "    I_T nexus information:",
                "    LUN information:",
                "        LUN: 0",
                "            Type: controller",
                "            Backing store path: None",
            ]
            for lun, path in sorted(t["luns"].items()):  # type: ignore[attr-defined]
                lines += [f"        LUN: {lun}", "            Type: disk", f"            Backing store path: {path}"]
            lines.append("    Account information:")
            lines += [f"        {u}" for u in self.bound.get(tid, [])]
            lines.append("    ACL information:")
            lines += [f"        {a}" for a in t["acls"]]  # type: ignore[attr-defined]
        return "\n".join(lines) + ("\n" if lines else "")


def tgt_node(tgtd: FakeTgtd, *, active: bool = True) -> FakeNode:
    node = FakeNode(files={"/usr/sbin/tgtd": "", "/usr/lib/tgt/backing-store/bs_rbd.so": "", "/etc/ceph/ceph.conf": ""})
    node.expect(["tgtadm"], responder=tgtd)
    node.expect([NODE_PYTHON, CHAP_HELPER_PATH], responder=lambda argv: tgtd.helper(argv, node.inputs[-1][1]))
    state = {"active": active}

    def systemctl(argv: tuple[str, ...]) -> CommandResult:
        if argv[1] in ("start", "restart"):
            state["active"] = True
            tgtd.portal = "172.29.244.21:3260" if DROPIN_PATH in node.files else "0.0.0.0:3260"
        rc = 0 if argv[1] != "is-active" or state["active"] else 3
        return CommandResult(argv, rc, "", "", 0.0)

    node.expect(["systemctl"], responder=systemctl)
    node.expect(["rbd", "info"], rc=2)
    node.expect(["rbd", "create"])
    node.expect(["truncate"])
    return node


def node_argvs(node: FakeNode) -> list[tuple[str, ...]]:
    """Every argv that showed in the node's /proc/PID/cmdline: the commands run, what `xargs` would have run with
    its stdin appended, and the tgtadm calls tgt-admin makes from the conf at each tgt start (tgt-admin runs
    `tgtadm ... --mode account --op new --user=U --password=S` for an `incominguser U S` line)."""
    argvs: list[tuple[str, ...]] = []
    for argv, stdin in node.inputs:
        argvs.append(argv)
        if argv[0] == "xargs":
            argvs.append((*argv[2:], *(stdin or "").split("\0")))
        if argv[:2] in (("systemctl", "restart"), ("systemctl", "start")) and "tgt.service" in argv:
            for path, text in node.files.items():
                if path.startswith("/etc/tgt/conf.d/"):
                    for line in text.splitlines():
                        words = line.split()
                        if words[:1] == ["incominguser"]:
                            argvs.append(("tgtadm", "--mode", "account", "--op", "new", f"--user={words[1]}",
                                          f"--password={words[2]}"))  # fmt: skip
    return argvs


def prefer(node: FakeNode, prefix: list[str], rc: int = 0) -> None:
    """Script a command ahead of the earlier rules (FakeRunner answers with the first matching rule)."""
    node.expect(prefix, rc=rc)
    node.rules.insert(0, node.rules.pop())


def ctx_for(lab: Lab, node: FakeRunner, state_dir: Path) -> DriverContext:
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=state_dir, node_runner=lambda _n: node)


# --- pure ---------------------------------------------------------------------------------------------------


def test_initiator_iqn_is_stable() -> None:
    assert initiator_iqn("aio", "compute1") == "iqn.2026-11.dev.stacklab:aio:compute1"


def test_plan_and_outputs_golden(lab: Lab, resource: Resource) -> None:
    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    assert [t.path for t in plan.targets] == ["/var/lib/stacklab/iscsi/lun1.img", "volumes/iscsi-lun2"]
    assert plan.portal == "172.29.244.21:3260"
    outputs = outputs_of(plan)
    assert outputs["chap_secret_names"] == {"lun1": "iscsi-chap-lun1", "lun2": "iscsi-chap-lun2"}
    check_golden("storage/iscsi-outputs.json", json.dumps(outputs, indent=2, sort_keys=True) + "\n")


def test_conf_dropin_and_commands_golden(lab: Lab, resource: Resource) -> None:
    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    check_golden("storage/tgt-stacklab-aio.conf", render_tgt_conf(plan))
    check_golden("storage/tgt-stacklab-aio.chap", render_chap_file(plan, SECRETS))
    check_golden("storage/tgt-dropin.conf", render_dropin(plan))
    text = "".join(" ".join(argv) + "\n" for i, t in enumerate(plan.targets, 1) for argv in live_commands(plan, t, i))
    check_golden("storage/tgt-live-commands.txt", text)
    assert "--iscsi portal=172.29.244.21:3260" in render_dropin(plan)


def test_parse_captured_show_golden() -> None:
    text = (GOLDEN / "storage/tgtadm-show.sample.txt").read_text()
    parsed = parse_tgt_show(text)
    assert sorted(parsed) == ["iqn.2026-11.dev.stacklab:demo:vol1", "iqn.2026-11.dev.stacklab:demo:vol2"]
    vol1 = seen_of(parsed["iqn.2026-11.dev.stacklab:demo:vol1"])
    assert vol1.luns == {1: "/var/lib/stacklab/iscsi/vol1.img"}
    assert vol1.addresses == ("172.29.244.0/24",)
    assert vol1.initiators == ("iqn.2026-11.dev.stacklab:demo:compute1", "iqn.2026-11.dev.stacklab:demo:compute2")
    assert vol1.chap_users == ("demo-vol1",)
    assert seen_of(parsed["iqn.2026-11.dev.stacklab:demo:vol2"]).chap_users == ()
    dump = {iqn: t.to_json() for iqn, t in parsed.items()}
    check_golden("storage/tgtadm-show.parsed.json", json.dumps(dump, indent=2, sort_keys=True) + "\n")


def test_parse_portals_and_accounts() -> None:
    assert parse_tgt_portals("Portal: 172.29.244.21:3260,1\nPortal: [::]:3260,1\n") == [
        "172.29.244.21:3260",
        "[::]:3260",
    ]
    assert parse_tgt_accounts("Account list:\n    aio-lun1\n    aio-lun2\n") == ["aio-lun1", "aio-lun2"]
    assert parse_tgt_show("") == {}


# --- driver -------------------------------------------------------------------------------------------------


def test_apply_builds_targets_then_second_up_plans_nothing(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    tgtd = FakeTgtd()
    node = tgt_node(tgtd)
    driver = IscsiDriver()
    ctx = ctx_for(lab, node, tmp_path)
    outputs = driver.apply(Change(resource, Action.CREATE), ctx)

    assert isinstance(driver_for("iscsi"), IscsiDriver)
    assert outputs["portal"] == "172.29.244.21:3260"
    assert outputs["targets"]["lun1"] == {
        "iqn": "iqn.2026-11.dev.stacklab:aio:lun1",
        "lun": 1,
        "backing": "file",
        "path": "/var/lib/stacklab/iscsi/lun1.img",
        "size_mib": 1024,
        "chap_user": "aio-lun1",
    }
    # Backing stores, the portal drop-in (restart), and the exact tgtadm calls for target 1.
    assert ("truncate", "--size", "1024M", "/var/lib/stacklab/iscsi/lun1.img") in node.calls
    assert ("rbd", "create", "--size", "1024", "volumes/iscsi-lun2") in node.calls
    assert ("systemctl", "restart", "tgt.service") in node.calls
    for argv in live_commands(driver.plan_of(resource.id, resource.name, resource.spec, ctx), _t(lab, resource, 0), 1):
        assert argv in node.calls
    assert ("tgtadm", "--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", "1", "--user", "aio-lun1") in (
        node.calls
    )
    # The CHAP secret went through stdin only: never in an argv, and it is the one stored for the lab.
    secret = (tmp_path / "secrets" / chap_secret_name("lun1")).read_text().strip()
    assert len(secret) == 16
    assert not any(secret in " ".join(argv) for argv in node_argvs(node))
    assert ((NODE_PYTHON, CHAP_HELPER_PATH, "new", "aio-lun1"), secret) in node.inputs
    assert tgtd.accounts["aio-lun1"] == secret
    assert secret not in node.files[conf_path("aio")]  # tgt-admin would put it on tgtadm's argv at every start
    assert f"iqn.2026-11.dev.stacklab:aio:lun1 aio-lun1 {secret}" in node.files[chap_path("aio")]
    modes = {a[-1]: a[3] for a, _ in node.inputs if a[0] == "install"}
    assert modes[chap_path("aio")] == "0600" and modes[CHAP_HELPER_PATH] == "0700"
    assert node.files[CHAP_HELPER_PATH] == TGT_CHAP_HELPER

    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.owned
    assert observed.drift == ()
    recorded = {"hash": resource.hash, "spec": dict(resource.spec), "outputs": outputs}
    assert driver.diff(resource, observed, recorded).action is Action.NOOP

    # Applying again changes nothing on the node.
    before = len(node.calls)
    driver.apply(Change(resource, Action.UPDATE, recorded=recorded), ctx)
    changed = [
        c
        for c in node.calls[before:]
        if c[0] in (NODE_PYTHON, "install") or c[3:7] == ("--mode", "target", "--op", "new")
    ]
    assert changed == []


def test_drift_when_a_target_vanishes(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    tgtd = FakeTgtd()
    node = tgt_node(tgtd)
    ctx = ctx_for(lab, node, tmp_path)
    IscsiDriver().apply(Change(resource, Action.CREATE), ctx)
    tgtd.targets.pop(2)
    observed = IscsiDriver().observe(resource, ctx)
    assert observed is not None
    assert observed.drift == ("target iqn.2026-11.dev.stacklab:aio:lun2 missing",)
    IscsiDriver().apply(Change(resource, Action.UPDATE), ctx)
    again = IscsiDriver().observe(resource, ctx)
    assert again is not None and again.drift == ()


def test_removed_target_and_its_backing_go(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    tgtd = FakeTgtd()
    node = tgt_node(tgtd)
    ctx = ctx_for(lab, node, tmp_path)
    outputs = IscsiDriver().apply(Change(resource, Action.CREATE), ctx)
    spec = dict(resource.spec)
    spec["targets"] = [t for t in spec["targets"] if t["name"] == "lun1"]
    smaller = Resource(resource.kind, resource.name, spec, resource.deps)
    prefer(node, ["rbd", "info", "volumes/iscsi-lun2"], rc=0)
    prefer(node, ["rbd", "rm"])
    recorded = {"hash": resource.hash, "spec": dict(resource.spec), "outputs": outputs}
    IscsiDriver().apply(Change(smaller, Action.UPDATE, recorded=recorded), ctx)
    assert [t["iqn"] for t in tgtd.targets.values()] == ["iqn.2026-11.dev.stacklab:aio:lun1"]
    assert "aio-lun2" not in tgtd.accounts
    assert ("rbd", "rm", "--no-progress", "volumes/iscsi-lun2") in node.calls


def test_delete_removes_targets_accounts_files(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    tgtd = FakeTgtd()
    node = tgt_node(tgtd)
    ctx = ctx_for(lab, node, tmp_path)
    outputs = IscsiDriver().apply(Change(resource, Action.CREATE), ctx)
    prefer(node, ["rbd", "info", "volumes/iscsi-lun2"], rc=0)
    prefer(node, ["rbd", "rm"])
    IscsiDriver().delete(resource.id, {"name": "storage1", "spec": dict(resource.spec), "outputs": outputs}, ctx)
    assert tgtd.targets == {} and tgtd.accounts == {}
    assert conf_path("aio") not in node.files and DROPIN_PATH not in node.files and chap_path("aio") not in node.files
    assert ("rm", "-f", "/var/lib/stacklab/iscsi/lun1.img") in node.calls
    assert ("tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force", "--tid", "1") in node.calls
    # A second delete finds nothing and still succeeds.
    IscsiDriver().delete(resource.id, {"name": "storage1", "spec": dict(resource.spec), "outputs": outputs}, ctx)


def test_wrong_portal_is_an_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    tgtd = FakeTgtd()
    node = tgt_node(tgtd)
    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    node.files[DROPIN_PATH] = render_dropin(plan)  # unchanged drop-in: no restart, tgtd still on 0.0.0.0
    with pytest.raises(Exception, match=r"listens on \['0.0.0.0:3260'\]"):
        IscsiDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))


def test_missing_tgt_rbd_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = tgt_node(FakeTgtd())
    del node.files["/usr/lib/tgt/backing-store/bs_rbd.so"]
    with pytest.raises(PlanError, match="tgt-rbd"):
        IscsiDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    assert not [c for c in node.calls if c[0] in ("tgtadm", "truncate", "install")]


def test_drift_lines_are_pure(lab: Lab, resource: Resource) -> None:
    from stacklab.drivers.storage.iscsi.types import TargetSeen, TargetsSeen

    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    t1 = plan.targets[0]
    seen = TargetsSeen(
        {
            t1.iqn: TargetSeen(t1.iqn, {1: "/elsewhere.img"}, t1.initiators, ("172.29.244.0/24",), ("aio-lun1",)),
            "iqn.2026-11.dev.stacklab:aio:old": TargetSeen("iqn.2026-11.dev.stacklab:aio:old"),
        },
        ("172.29.244.21:3260",),
    )
    assert drift_of(plan, seen) == (
        "target lun1: LUN 1 backed by '/elsewhere.img', want '/var/lib/stacklab/iscsi/lun1.img'",
        # tgt admits address-OR-IQN matches: an address ACL would open the target to any IQN on the network
        "target lun1: address ACL ['172.29.244.0/24'] present (IQN ACLs only)",
        "target iqn.2026-11.dev.stacklab:aio:lun2 missing",
        "target iqn.2026-11.dev.stacklab:aio:old is not in the lab file",
    )


def _t(lab: Lab, resource: Resource, index: int):  # type: ignore[no-untyped-def]
    return iscsi_layout(resource.id, resource.name, resource.spec, lab.name).targets[index]


# --- the CHAP helper, run for real against a socket that answers like tgtd ----------------------------------


class _FakeTgtdSocket:
    """A Unix socket at `<base>.0` that records each request and answers tgtadm's `struct tgtadm_rsp` with `err`."""

    def __init__(self, base: Path, err: int = 0) -> None:
        self.requests: list[bytes] = []
        self.err = err
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(f"{base}.0")
        self.server.listen(4)
        self.server.settimeout(0.1)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with conn:
                data = b""
                while len(data) < 76 or len(data) < struct.unpack_from("=I", data, 72)[0]:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                reply = b"no such target" if self.err else b""
                conn.sendall(struct.pack("=II", self.err, 8 + len(reply)) + reply)

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=10)
        self.server.close()


def _run_helper(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    helper = tmp_path / "stacklab-tgt-chap"
    helper.write_text(TGT_CHAP_HELPER)
    env = {**os.environ, "TGT_IPC_SOCKET": str(tmp_path / "sock"), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, str(helper), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_chap_helper_sends_the_bytes_the_real_tgtadm_sends(tmp_path: Path) -> None:
    """The helper speaks tgtadm's protocol: same request bytes as tgtadm 1.0.85 for the same account (captured from
    the real binary), the secret from stdin and in no argv; tgtd's refusal is an error."""
    lines = (GOLDEN / "storage/tgtadm-account-new.req.hex").read_text().splitlines()
    captured = bytes.fromhex("".join(line for line in lines if not line.startswith("#")))
    tgtd = _FakeTgtdSocket(tmp_path / "sock")
    try:
        done = _run_helper(tmp_path, "new", "lab-u1", stdin="S3cretPW\n")
        assert done.returncode == 0, done.stderr
        assert tgtd.requests == [captured]
        tgtd.err = 12  # TGTADM_USER_EXIST-like refusal
        refused = _run_helper(tmp_path, "new", "lab-u1", stdin="S3cretPW\n")
        assert refused.returncode != 0 and "refused account lab-u1: error 12" in refused.stderr
        # a secret tgtd would split at the comma is refused before anything is sent
        before = len(tgtd.requests)
        bad = _run_helper(tmp_path, "new", "lab-u1", stdin="a,password=b\n")
        assert bad.returncode != 0 and len(tgtd.requests) == before
    finally:
        tgtd.close()


def test_chap_helper_restore_adds_and_binds_accounts_without_argv_secrets(tmp_path: Path) -> None:
    """At tgt start: each account of the 0600 file over the socket, then bound to its target's tid by tgtadm,
    whose argv (logged by a stand-in tgtadm) never holds the secret; targets that are gone are skipped."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tgtadm.log"
    (bin_dir / "tgtadm").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in *"--op show"*) printf "Target 1: iqn.x:lab:a\\n    System information:\\n'
        'Target 2: iqn.x:lab:b\\n";; esac\n'
    )
    (bin_dir / "tgtadm").chmod(0o755)
    accounts = tmp_path / "lab.chap"
    accounts.write_text("# comment\niqn.x:lab:b lab-b SecretBee12345678\niqn.x:lab:gone lab-g SecretGone1234567\n")
    tgtd = _FakeTgtdSocket(tmp_path / "sock")
    try:
        done = _run_helper(tmp_path, "restore", str(accounts))
    finally:
        tgtd.close()
    assert done.returncode == 0, done.stderr
    assert [r[120:] for r in tgtd.requests] == [b"user=lab-b,password=SecretBee12345678\0"]
    assert log.read_text().splitlines() == [
        "--lld iscsi --mode target --op show",
        "--lld iscsi --mode account --op bind --tid 2 --user lab-b",
    ]
