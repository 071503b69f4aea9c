"""Suite `storage`: every storage path of the lab is proven from a client node over br-storage.

For each iSCSI LUN, NFS export and RBD pool: a random pattern written by the client reads back through the same
protocol and is found byte for byte on the backing store of the storage node (file, LV, RBD image, export dir);
the client's storage NIC carried the bytes, its management NIC did not. Wrong CHAP secrets, unknown initiator IQNs,
clients outside the storage CIDR and cephx users outside their pools are refused. Faults: a tgt restart in the
middle of a write stream keeps every acknowledged write; a killed OSD or monitor loses no acknowledged write and
the cluster returns to HEALTH_OK.

Clients are user space (QEMU's iscsi/nfs/rbd drivers, libnfs tools, python3-rbd), which is what the CI host can
run; the same checks hold on full kernels. When the client is a VM node (its own kernel), the kernel clients are
proven too: open-iscsi logs in to every LUN (the session from the client's storage address is read from
`iscsiadm -m session`) and the kernel NFS client mounts every export once per version; container clients skip
those cases with the reason. The target restart is tgtd's, or for LIO rtslib-fb-targetctl's clear-and-restore.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.storage_paths import (
    ACL_REFUSALS,
    CEPH_CONF,
    CHAP_REFUSALS,
    IO_TIMEOUT,
    ISCSI_IFACE_PREFIX,
    NFS_MOUNT,
    RBD_TOOL,
    SCRATCH,
    Pattern,
    assert_carried_by_storage,
    assert_login_refused,
    client_nodes,
    device_write,
    file_range_sha,
    is_vm,
    kernel_login,
    kernel_logout,
    outputs,
    outside_source,
    put_private,
    qemu_io,
    rbd_tool,
    read_range_sha,
    read_secret,
    remove_copies,
    session_block,
    sha256_of,
    tcp_connects,
    traffic,
    upload_pattern,
)

MIB = 1024 * 1024
OUTSIDE_IP = "198.51.100.77"  # TEST-NET-2: never a lab network
HEALTH_BUDGET = 240.0
# What this suite copies into SCRATCH on the nodes, removed when the module ends (CHAP secrets included).
COPIES = ("chap-*", "iscsi-*.bin", "nfs-*.bin", "rbd.bin", "readback.raw", "rbd_tool.py")
# The daemon serving each implementation (LIO is the kernel's: no daemon to check).
UNITS = {"tgt": "tgt", "ganesha": "nfs-ganesha", "knfsd": "nfs-server"}
# What restarting the target means: tgtd itself; for LIO, rtslib-fb-targetctl clears every target from configfs
# (sessions drop) and restores them from saveconfig.json.
RESTART_UNITS = {"tgt": "tgt.service", "lio": "rtslib-fb-targetctl.service"}


@pytest.fixture(scope="module", autouse=True)
def leave_no_copies(lab: LabContext, runners: dict[str, Runner]) -> Iterator[None]:
    """Every node ends the suite without the suite's copies, secrets first; a leftover fails the teardown."""
    yield
    left = {node: remove_copies(runners[node], COPIES) for node in sorted(lab.nodes)}
    left = {node: files for node, files in left.items() if files}
    assert not left, f"the storage suite left copies behind: {left}"


# --- fixtures -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IscsiLab:
    node: str
    portal: str
    targets: Mapping[str, Mapping[str, Any]]
    initiators: Mapping[str, str]  # client node -> initiator IQN
    client: str

    def opts(self, target: str, *, initiator: str | None = None, chap: bool = True) -> str:
        t = self.targets[target]
        opts = (
            f"driver=iscsi,transport=tcp,portal={self.portal},target={t['iqn']},lun={t['lun']},"
            f"initiator-name={initiator or self.initiators[self.client]}"
        )
        if chap and t.get("chap_user"):
            opts += f",user={t['chap_user']},password-secret=chap-{target}"
        return opts


@pytest.fixture(scope="module")
def iscsi(lab: LabContext, runners: dict[str, Runner]) -> Iterator[IscsiLab]:
    found = outputs(lab, "iscsi")
    if found is None:
        pytest.skip("the lab has no iSCSI target")
    node, out = found
    initiators = dict(out.get("initiators", {}))
    if not initiators:
        pytest.skip("the iSCSI target admits no client node of the lab")
    client = sorted(initiators)[0]
    info = IscsiLab(node, str(out["portal"]), dict(out["targets"]), initiators, client)
    try:
        for name, secret_name in out.get("chap_secret_names", {}).items():
            put_private(runners[client], f"{SCRATCH}/chap-{name}", read_secret(lab, secret_name))
        yield info
    finally:
        remove_copies(runners[client], ("chap-*",))


def secret_objects(iscsi: IscsiLab, target: str, secret_file: str | None = None) -> tuple[str, ...]:
    if not iscsi.targets[target].get("chap_user"):
        return ()
    return ("--object", f"secret,id=chap-{target},file={secret_file or f'{SCRATCH}/chap-{target}'}")


@dataclass(frozen=True)
class NfsLab:
    node: str
    server: str
    exports: Mapping[str, str]
    versions: tuple[int, ...]
    client: str

    def url(self, export: str, name: str, version: int) -> str:
        return f"nfs://{self.server}{self.exports[export]}/{name}?version={version}"


@pytest.fixture(scope="module")
def nfs(lab: LabContext) -> NfsLab:
    found = outputs(lab, "nfs")
    if found is None:
        pytest.skip("the lab has no NFS server")
    node, out = found
    clients = client_nodes(lab, node)
    if not clients:
        pytest.skip("the lab has no client node on the storage network")
    return NfsLab(node, str(out["server"]), dict(out["exports"]), tuple(out["versions"]), clients[0])


@dataclass(frozen=True)
class CephLab:
    admin_node: str  # first monitor: has the admin key
    mons: tuple[str, ...]
    pools: tuple[str, ...]
    clients: tuple[str, ...]  # cephx client names with keyrings on client nodes
    client_node: str | None


@pytest.fixture(scope="module")
def ceph(lab: LabContext, runners: dict[str, Runner]) -> Iterator[CephLab]:
    found = outputs(lab, "ceph")
    if found is None:
        pytest.skip("the lab has no Ceph cluster")
    _, out = found
    mons = tuple(out["mons"])
    candidates = [n for n in client_nodes(lab, mons[0]) if n not in mons]
    tool = resources.files("stacklab.suites").joinpath("rbd_tool.py").read_text()
    copied = sorted({mons[0], *candidates[:1]})
    try:
        for node in copied:
            put_private(runners[node], RBD_TOOL, tool)
        yield CephLab(mons[0], mons, tuple(out["pools"]), tuple(out["clients"]), candidates[0] if candidates else None)
    finally:
        for node in copied:
            remove_copies(runners[node], ("rbd_tool.py",))


@pytest.fixture
def scratch_image(ceph: CephLab, runners: dict[str, Runner]) -> Iterator[tuple[str, str]]:
    """A fresh RBD image (pool, name) made by the admin node and removed afterwards, even on failure."""
    pool = "volumes" if "volumes" in ceph.pools else ceph.pools[0]
    name = f"suite-{uuid.uuid4().hex[:8]}"
    admin = runners[ceph.admin_node]
    rbd_tool(admin, "admin", pool, name, "create", str(64 * MIB))
    yield pool, name
    rbd_tool(admin, "admin", pool, name, "remove")


# --- helpers ------------------------------------------------------------------------------------------------


def backend_sha(runners: dict[str, Runner], iscsi: IscsiLab, target: str, pattern: Pattern) -> str:
    t = iscsi.targets[target]
    storage = runners[iscsi.node]
    if t["backing"] == "rbd":
        pool, _, image = str(t["path"]).partition("/")
        opts = f"driver=rbd,pool={pool},image={image},conf={CEPH_CONF},user=admin"
        return read_range_sha(storage, opts, pattern)
    return file_range_sha(storage, str(t["path"]), pattern)


def wait_health_ok(admin: Runner, budget: float = HEALTH_BUDGET) -> None:
    deadline = time.monotonic() + budget
    last = ""
    while time.monotonic() < deadline:
        result = admin.run(["ceph", "--connect-timeout", "10", "health"], timeout=30.0, check=False)
        last = (result.stdout or result.stderr).strip()
        if result.ok and last.startswith("HEALTH_OK"):
            return
        time.sleep(2.0)
    raise AssertionError(f"expected HEALTH_OK within {budget:.0f}s, last saw: {last}")


# --- iSCSI --------------------------------------------------------------------------------------------------


def test_iscsi_portal_listens_on_the_storage_address_only(
    lab: LabContext, iscsi: IscsiLab, hosts: dict[str, Any], evidence: Evidence
) -> None:
    host = hosts[iscsi.node]
    implementation = str(lab.outputs[f"iscsi/{iscsi.node}"].get("implementation", ""))
    if implementation in UNITS:
        unit = host.service(UNITS[implementation])
        assert unit.is_running and unit.is_enabled, (
            f"{iscsi.node}: {unit} running={unit.is_running} enabled={unit.is_enabled}"
        )
    port = iscsi.portal.rpartition(":")[2]
    local = sorted(s for s in host.socket.get_listening_sockets() if s.startswith("tcp://") and s.endswith(f":{port}"))
    assert local == [f"tcp://{iscsi.portal}"], f"expected the portal on {iscsi.portal} only, saw listeners {local}"
    evidence("listeners", f"{iscsi.node}: {', '.join(local)} ({implementation})")


def _io_holding_session(
    lab: LabContext, iscsi: IscsiLab, hosts: dict[str, Any], target: str, command: str
) -> tuple[Any, set[str]]:
    """Run one qemu-io command on the client over its own SSH session and keep the iSCSI session open 2 s after it;
    meanwhile list the peers of the portal's established connections on the storage node (testinfra's socket
    module, `ss` there). Returns the qemu-io result and the peer addresses seen."""
    result: dict[str, Any] = {}

    def io() -> None:
        own = lab.runner(iscsi.client)
        objects = secret_objects(iscsi, target)
        try:
            result["io"] = qemu_io(own, iscsi.opts(target), command, "sleep 2000", objects=objects, check=False)
        finally:
            close = getattr(own, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=io)
    thread.start()
    port, peers = iscsi.portal.rpartition(":")[2], set[str]()
    # testinfra's socket(...).clients came back empty for this address-bound portal while ss listed the session,
    # so ask ss (through the same testinfra host) for the established connections of the portal itself
    listing = f"ss -Htn state established '( sport = :{port} )'"
    while thread.is_alive():
        for line in hosts[iscsi.node].check_output(listing).splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[-2] == iscsi.portal:
                peers.add(fields[-1].rpartition(":")[0])
        time.sleep(0.1)
    thread.join()
    return result["io"], peers


def test_iscsi_lun_roundtrip_lands_on_the_backing_store(
    lab: LabContext,
    iscsi: IscsiLab,
    runners: dict[str, Runner],
    iscsi_target: str,
    *,
    hosts: dict[str, Any],
    evidence: Evidence,
) -> None:
    client = runners[iscsi.client]
    t = iscsi.targets[iscsi_target]
    pattern = Pattern.random(offset=4 * MIB, size=4 * MIB)
    src = upload_pattern(client, pattern, f"iscsi-{iscsi_target}")
    before = traffic(lab, client, iscsi.client)
    wrote, peers = _io_holding_session(
        lab, iscsi, hosts, iscsi_target, f"write -s {src} {pattern.offset} {len(pattern.data)}"
    )
    after = traffic(lab, client, iscsi.client)
    assert wrote.ok and "wrote" in wrote.stdout, f"{iscsi_target}: qemu-io write failed: {wrote.stdout} {wrote.stderr}"
    client_ip = lab.address(iscsi.client, "storage").partition("/")[0]
    # The session itself: the target saw the login come from the client's storage address, over br-storage.
    assert client_ip in peers, f"{iscsi_target}: the portal {iscsi.portal} had sessions from {peers}, not {client_ip}"
    delta = assert_carried_by_storage(before, after, len(pattern.data), f"iSCSI {iscsi_target}")
    evidence(
        "written",
        f"{len(pattern.data)} random bytes (sha256 {pattern.sha256}) at offset {pattern.offset} of {t['iqn']} "
        f"LUN {t['lun']}, by {iscsi.client} as {iscsi.initiators[iscsi.client]}",
    )
    evidence("session", f"portal {iscsi.portal} on {iscsi.node} had a session from {client_ip} during the write")
    evidence("nic bytes", f"{iscsi.client}: " + ", ".join(f"{net} +{n}" for net, n in sorted(delta.items())))
    seen = read_range_sha(client, iscsi.opts(iscsi_target), pattern, secret_objects(iscsi, iscsi_target))
    assert seen == pattern.sha256, f"{iscsi_target}: read back {seen}, wrote {pattern.sha256}"
    backend = backend_sha(runners, iscsi, iscsi_target, pattern)
    backing = t["path"]
    assert backend == pattern.sha256, f"{iscsi_target}: backing store {backing} has {backend}, wrote {pattern.sha256}"
    evidence(
        "read back", f"through iSCSI by {iscsi.client}, and on {iscsi.node} from {t['backing']} {backing}: same sha256"
    )


def test_iscsi_wrong_chap_secret_is_refused(iscsi: IscsiLab, runners: dict[str, Runner], evidence: Evidence) -> None:
    chap_targets = [name for name, t in iscsi.targets.items() if t.get("chap_user")]
    if not chap_targets:
        pytest.skip("no target of the lab uses CHAP")
    client = runners[iscsi.client]
    target = chap_targets[0]
    # control: the same login with the lab's secret gets in, so a refusal below is CHAP's and nothing else's
    right = qemu_io(client, iscsi.opts(target), "read 0 4096", objects=secret_objects(iscsi, target), check=False)
    assert right.ok, f"{target}: the login with the lab's CHAP secret failed: {right.stderr}"
    wrong = f"{SCRATCH}/chap-wrong"
    put_private(client, wrong, "not-the-secret-00")
    for objects, opts, why in (
        (secret_objects(iscsi, target, wrong), iscsi.opts(target), "a wrong CHAP secret"),
        ((), iscsi.opts(target, chap=False), "no CHAP credentials"),
    ):
        result = qemu_io(client, opts, "read 0 4096", objects=objects, check=False)
        status = assert_login_refused(result, CHAP_REFUSALS, f"{target}: {why}")
        evidence(f"refused: {why}", f"{iscsi.targets[target]['iqn']}: {status}")


def _assert_acl_refuses(iscsi: IscsiLab, runners: dict[str, Runner]) -> tuple[str, str]:
    """An initiator IQN outside the ACL, with the right CHAP secret, is refused at login; the lab's own IQN with the
    same options gets in. Returns (the intruder IQN, the refusal)."""
    target = sorted(iscsi.targets)[0]
    client = runners[iscsi.client]
    objects = secret_objects(iscsi, target)
    right = qemu_io(client, iscsi.opts(target), "read 0 4096", objects=objects, check=False)
    assert right.ok, f"{target}: the lab's own initiator could not log in: {right.stderr}"
    intruder = iscsi.initiators[iscsi.client].rpartition(":")[0] + ":intruder"
    result = qemu_io(client, iscsi.opts(target, initiator=intruder), "read 0 4096", objects=objects, check=False)
    return intruder, assert_login_refused(result, ACL_REFUSALS, f"{target}: initiator {intruder} outside the ACL")


def test_iscsi_unknown_initiator_is_refused(iscsi: IscsiLab, runners: dict[str, Runner], evidence: Evidence) -> None:
    intruder, status = _assert_acl_refuses(iscsi, runners)
    evidence("refused initiator", f"{intruder}: {status}")


def test_iscsi_target_restart_mid_write_keeps_acknowledged_writes(
    lab: LabContext, iscsi: IscsiLab, runners: dict[str, Runner], evidence: Evidence
) -> None:
    target = next((n for n, t in sorted(iscsi.targets.items()) if t["backing"] == "file"), sorted(iscsi.targets)[0])
    chunk, count = 256 * 1024, 24
    commands = []
    for index in range(count):
        commands += [f"write -P {index + 1} {32 * MIB + index * chunk} {chunk}", "sleep 150"]
    result: dict[str, Any] = {}

    def writer() -> None:
        own = lab.runner(iscsi.client)  # a separate SSH session for the concurrent stream
        result["io"] = qemu_io(
            own, iscsi.opts(target), *commands, objects=secret_objects(iscsi, target), check=False, timeout=180.0
        )

    implementation = str(lab.outputs[f"iscsi/{iscsi.node}"].get("implementation", "tgt"))
    unit = RESTART_UNITS[implementation]
    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.5)
    runners[iscsi.node].run(["systemctl", "restart", unit], timeout=120.0)
    thread.join(200.0)
    io = result["io"]
    acked = [int(line.split()[-1]) for line in io.stdout.splitlines() if line.startswith("wrote ")]
    assert acked, f"no write was acknowledged around the restart: {io.stdout} {io.stderr}"
    for offset in acked:
        index = (offset - 32 * MIB) // chunk
        want = hashlib.sha256(bytes([index + 1]) * chunk).hexdigest()
        pattern = Pattern(offset, bytes(chunk))
        have = backend_sha(runners, iscsi, target, pattern)
        assert have == want, f"acknowledged write {index} at {offset} is not on the backing store after the restart"
    backing = iscsi.targets[target]["path"]
    evidence(
        "acknowledged",
        f"{len(acked)} of {count} writes of {chunk} bytes around `systemctl restart {unit}`, all on {backing} "
        f"on {iscsi.node}",
    )
    # and the target serves again, with its ACL and CHAP restored from the persisted configuration
    again = qemu_io(runners[iscsi.client], iscsi.opts(target), "read 0 4096", objects=secret_objects(iscsi, target))
    assert "read 4096/4096" in again.stdout, again.stdout
    _assert_acl_refuses(iscsi, runners)


# --- iSCSI through the kernel initiator (VM clients) ---------------------------------------------------------


def test_open_iscsi_kernel_login_writes_land_on_the_backing_store(
    lab: LabContext, iscsi: IscsiLab, runners: dict[str, Runner], iscsi_target: str, evidence: Evidence
) -> None:
    """open-iscsi (iscsid + the kernel's iscsi_tcp) logs in as the lab's initiator with the lab's CHAP account,
    the pattern goes through the SCSI disk it attached, and the bytes are on the backing store (the LV, the file)
    of the storage node; `iscsiadm -m session` shows the session from the client's storage address to the portal."""
    if not is_vm(lab, iscsi.client):
        pytest.skip(f"{iscsi.client} is a container: the kernel initiator needs iscsi_tcp in the node's own kernel")
    client = runners[iscsi.client]
    t = iscsi.targets[iscsi_target]
    iqn, iface = str(t["iqn"]), f"{ISCSI_IFACE_PREFIX}{lab.lab}"
    chap = None
    if t.get("chap_user"):
        found = outputs(lab, "iscsi")
        assert found is not None
        chap = (str(t["chap_user"]), read_secret(lab, str(found[1]["chap_secret_names"][iscsi_target])))
    pattern = Pattern.random(offset=8 * MIB, size=4 * MIB)
    src = upload_pattern(client, pattern, f"iscsi-kernel-{iscsi_target}")
    try:
        session = kernel_login(
            client, iface=iface, initiator=iscsi.initiators[iscsi.client], iqn=iqn, portal=iscsi.portal, chap=chap
        )
        block = session_block(session.details, iqn)
        client_ip = lab.address(iscsi.client, "storage").partition("/")[0]
        # the session itself: this target, through the portal, from the storage address, as the lab's initiator
        assert f"Current Portal: {iscsi.portal}," in block, f"{iqn}: no session to {iscsi.portal}: {block}"
        assert f"Iface IPaddress: {client_ip}" in block, f"{iqn}: the session is not from {client_ip}: {block}"
        assert f"Iface Initiatorname: {iscsi.initiators[iscsi.client]}" in block, block
        assert "iSCSI Session State: LOGGED_IN" in block, block
        disk = session.device.rpartition("/")[2]
        assert f"Attached scsi disk {disk}" in block, f"{iqn}: {session.device} is not this session's disk: {block}"
        before = traffic(lab, client, iscsi.client)
        device_write(client, session.device, pattern, src)
        after = traffic(lab, client, iscsi.client)
        delta = assert_carried_by_storage(before, after, len(pattern.data), f"open-iscsi {iscsi_target}")
        seen = file_range_sha(client, session.device, pattern)
        assert seen == pattern.sha256, f"{iscsi_target}: {session.device} reads back {seen}"
    finally:
        kernel_logout(client, iface=iface, iqn=iqn, portal=iscsi.portal)
    evidence(
        "session",
        f"iscsiadm -m session on {iscsi.client}: {iqn} via {iscsi.portal} from {client_ip} as "
        f"{iscsi.initiators[iscsi.client]}{' with CHAP' if chap else ''}, LOGGED_IN, disk {session.device}",
    )
    evidence("written", f"{len(pattern.data)} random bytes (sha256 {pattern.sha256}) at offset {pattern.offset} of "
                        f"{session.device} with O_DIRECT + fsync")  # fmt: skip
    evidence("nic bytes", f"{iscsi.client}: " + ", ".join(f"{net} +{n}" for net, n in sorted(delta.items())))
    backend = backend_sha(runners, iscsi, iscsi_target, pattern)
    assert backend == pattern.sha256, f"{iscsi_target}: backing store {t['path']} has {backend}"
    evidence("read back", f"on {iscsi.node} from {t['backing']} {t['path']}: same sha256, after logout")


# --- NFS ----------------------------------------------------------------------------------------------------


def test_nfs_server_is_an_enabled_unit_serving_the_storage_address(
    lab: LabContext, nfs: NfsLab, hosts: dict[str, Any], evidence: Evidence
) -> None:
    host = hosts[nfs.node]
    implementation = str(lab.outputs[f"nfs/{nfs.node}"].get("implementation", ""))
    unit = host.service(UNITS.get(implementation, "nfs-server"))
    assert unit.is_running and unit.is_enabled, (
        f"{nfs.node}: {unit} running={unit.is_running} enabled={unit.is_enabled}"
    )
    # Bound to the storage address only, never to every address (issue 11); ganesha's IPv6 socket binds the
    # IPv4-mapped form of its IPv4 Bind_addr. The CIDR test below proves nobody outside the storage network gets in.
    listeners = [s for s in host.socket.get_listening_sockets() if s.startswith("tcp://") and s.endswith(":2049")]
    serving = set(listeners)
    assert serving and serving <= {f"tcp://{nfs.server}:2049", f"tcp://::ffff:{nfs.server}:2049"}, (
        f"{nfs.node}: 2049 must listen on {nfs.server} only (listeners on 2049: {listeners})"
    )
    for export, path in sorted(nfs.exports.items()):
        assert host.file(path).is_directory, f"{nfs.node}: export {export} has no directory {path}"
    evidence("server", f"{unit} on {nfs.node} listening on {', '.join(sorted(serving))}; exports {dict(nfs.exports)}")


def test_nfs_roundtrip_lands_in_the_export(
    lab: LabContext, nfs: NfsLab, runners: dict[str, Runner], nfs_export: str, evidence: Evidence
) -> None:
    client = runners[nfs.client]
    pattern = Pattern.random(offset=0, size=4 * MIB)
    src = upload_pattern(client, pattern, f"nfs-{nfs_export}")
    name = f"suite-{uuid.uuid4().hex[:8]}.bin"
    before = traffic(lab, client, nfs.client)
    client.run(["nfs-cp", src, nfs.url(nfs_export, name, 3)], timeout=120.0)  # libnfs, NFSv3
    after = traffic(lab, client, nfs.client)
    try:
        delta = assert_carried_by_storage(before, after, len(pattern.data), f"NFS {nfs_export}")
        evidence("written", f"{len(pattern.data)} random bytes (sha256 {pattern.sha256}) by {nfs.client} over NFSv3 "
                            f"to {nfs.url(nfs_export, name, 3)}")  # fmt: skip
        evidence("nic bytes", f"{nfs.client}: " + ", ".join(f"{net} +{n}" for net, n in sorted(delta.items())))
        for version in nfs.versions:
            seen = sha256_of(client, ["nfs-cat", nfs.url(nfs_export, name, version)])
            assert seen == pattern.sha256, f"NFSv{version} read of {name} gave {seen}, wrote {pattern.sha256}"
        on_disk = sha256_of(runners[nfs.node], ["cat", f"{nfs.exports[nfs_export]}/{name}"])
        assert on_disk == pattern.sha256, f"{nfs.exports[nfs_export]}/{name} on {nfs.node} has {on_disk}"
        versions = ", ".join(f"NFSv{v}" for v in nfs.versions)
        evidence(
            "read back", f"over {versions} by {nfs.client}, and from {nfs.exports[nfs_export]}/{name} on {nfs.node}"
        )
    finally:
        runners[nfs.node].run(["rm", "-f", f"{nfs.exports[nfs_export]}/{name}"], timeout=30.0)


def test_nfs_qemu_block_driver_roundtrip(nfs: NfsLab, runners: dict[str, Runner], evidence: Evidence) -> None:
    client = runners[nfs.client]
    export = sorted(nfs.exports)[0]
    name = f"suite-{uuid.uuid4().hex[:8]}.raw"
    url = f"nfs://{nfs.server}{nfs.exports[export]}/{name}"
    try:
        client.run(["qemu-img", "create", "-f", "raw", url, "16M"], timeout=60.0)
        pattern = Pattern.random(offset=8 * MIB, size=1 * MIB)
        src = upload_pattern(client, pattern, "nfs-qemu")
        client.run(
            ["qemu-io", "-f", "raw", "-c", f"write -s {src} {pattern.offset} {len(pattern.data)}", url], timeout=60.0
        )
        on_disk = file_range_sha(runners[nfs.node], f"{nfs.exports[export]}/{name}", pattern)
        assert on_disk == pattern.sha256, f"QEMU nfs:// write is not in {nfs.exports[export]}/{name}"
        evidence("written", f"{len(pattern.data)} bytes at offset {pattern.offset} by QEMU's nfs driver to {url}, "
                            f"found in {nfs.exports[export]}/{name} on {nfs.node}")  # fmt: skip
    finally:
        runners[nfs.node].run(["rm", "-f", f"{nfs.exports[export]}/{name}"], timeout=30.0)


def test_kernel_nfs_mount_writes_land_in_the_export(
    lab: LabContext, nfs: NfsLab, runners: dict[str, Runner], nfs_export: str, evidence: Evidence
) -> None:
    """The client's kernel NFS client mounts the export once per NFS version the lab serves, from its storage
    address (/proc/mounts and the TCP connection to 2049 say so), writes a file with O_DIRECT + fsync, and the
    bytes are in the export directory on the server."""
    if not is_vm(lab, nfs.client):
        pytest.skip(f"{nfs.client} is a container: a kernel NFS mount needs nfs in the node's own kernel")
    client, server = runners[nfs.client], runners[nfs.node]
    client_ip = lab.address(nfs.client, "storage").partition("/")[0]
    path = nfs.exports[nfs_export]
    mnt = f"{NFS_MOUNT}-{nfs_export}"
    for version in nfs.versions:
        pattern = Pattern.random(offset=0, size=4 * MIB)
        src = upload_pattern(client, pattern, f"nfs-kernel-{nfs_export}")
        name = f"suite-{uuid.uuid4().hex[:8]}.bin"
        client.run(["mkdir", "-p", mnt], timeout=30.0)
        try:
            opts = f"vers={version},proto=tcp,hard,timeo=600"
            client.run(["mount", "-t", "nfs", "-o", opts, f"{nfs.server}:{path}", mnt], timeout=IO_TIMEOUT)
            line = next(
                (m for m in client.run(["cat", "/proc/mounts"], timeout=30.0).stdout.splitlines()
                 if m.split()[1] == mnt), ""
            )  # fmt: skip
            fields = line.split()
            assert fields[:3] == [f"{nfs.server}:{path}", mnt, "nfs4" if version == 4 else "nfs"], line
            assert f"addr={nfs.server}" in fields[3] and f"vers={version}" in line, line
            before = traffic(lab, client, nfs.client)
            device_write(client, f"{mnt}/{name}", pattern, src)
            after = traffic(lab, client, nfs.client)
            delta = assert_carried_by_storage(before, after, len(pattern.data), f"NFSv{version} mount {nfs_export}")
            conns = client.run(
                ["ss", "-Htn", "state", "established", f"( dport = :2049 and dst {nfs.server} )"], timeout=30.0
            ).stdout
            assert any(f.split()[-2].startswith(f"{client_ip}:") for f in conns.splitlines() if f.split()), (
                f"no TCP connection from {client_ip} to {nfs.server}:2049 while mounted: {conns}"
            )
        finally:
            client.run(["umount", mnt], timeout=IO_TIMEOUT, check=False)
            client.run(["rmdir", mnt], timeout=30.0, check=False)
        try:
            on_disk = sha256_of(server, ["cat", f"{path}/{name}"])
            assert on_disk == pattern.sha256, f"NFSv{version}: {path}/{name} on {nfs.node} has {on_disk}"
        finally:
            server.run(["rm", "-f", f"{path}/{name}"], timeout=30.0)
        evidence(
            f"NFSv{version} mount",
            f"{nfs.client} mounted {nfs.server}:{path} ({fields[2]}, {fields[3]}), TCP from {client_ip} to "
            f"{nfs.server}:2049; {len(pattern.data)} random bytes (sha256 {pattern.sha256}) written with O_DIRECT + "
            f"fsync were in {path}/{name} on {nfs.node} after umount; nic bytes "
            + ", ".join(f"{net} +{n}" for net, n in sorted(delta.items())),
        )


# --- the storage network is the only way in -----------------------------------------------------------------


def test_clients_outside_the_storage_cidr_are_refused(lab: LabContext, runners: dict[str, Runner]) -> None:
    services = []
    found = outputs(lab, "iscsi")
    if found:
        services.append((found[0], str(found[1]["portal"]).rpartition(":")[0], 3260))
    found = outputs(lab, "nfs")
    if found:
        services += [(found[0], str(found[1]["server"]), port) for port in (2049, 111)]
    if not services:
        pytest.skip("the lab exports nothing over the storage network")
    for server_node, ip, port in services:
        clients = client_nodes(lab, server_node)
        if not clients:
            pytest.skip("the lab has no client node on the storage network")
        client, server = runners[clients[0]], runners[server_node]
        assert tcp_connects(client, ip, port), f"control: {clients[0]} cannot reach {ip}:{port} from inside the CIDR"
        with outside_source(
            client,
            server,
            lab=lab,
            client_node=clients[0],
            server_node=server_node,
            server_ip=ip,
            outside_ip=OUTSIDE_IP,
        ):
            route = client.run(["ip", "route", "get", ip], timeout=30.0).stdout
            assert f"src {OUTSIDE_IP}" in route, (
                f"test setup: traffic to {ip} does not leave from {OUTSIDE_IP}: {route}"
            )
            assert not tcp_connects(client, ip, port), f"{ip}:{port} accepted a connection from {OUTSIDE_IP}"


# --- Ceph / RBD ---------------------------------------------------------------------------------------------


def test_ceph_monitors_are_enabled_units_on_the_storage_network(
    lab: LabContext, ceph: CephLab, hosts: dict[str, Any], evidence: Evidence
) -> None:
    for mon in ceph.mons:
        host = hosts[mon]
        unit = host.service(f"ceph-mon@{mon}")
        assert unit.is_running and unit.is_enabled, f"{mon}: {unit} running={unit.is_running} enabled={unit.is_enabled}"
        ip = lab.address(mon, "storage").partition("/")[0]
        for port in (3300, 6789):  # msgr2 and msgr1
            assert host.socket(f"tcp://{ip}:{port}").is_listening, f"{mon}: the monitor does not serve {ip}:{port}"
        evidence(f"mon {mon}", f"{unit} serves {ip}:3300 and {ip}:6789")


def test_ceph_is_healthy_with_every_osd_up(ceph: CephLab, runners: dict[str, Runner]) -> None:
    wait_health_ok(runners[ceph.admin_node], budget=60.0)
    status = json.loads(runners[ceph.admin_node].run(["ceph", "status", "--format", "json"], timeout=60.0).stdout)
    osdmap = status["osdmap"].get("osdmap", status["osdmap"])
    assert osdmap["num_up_osds"] == osdmap["num_osds"] > 0, f"OSDs: {osdmap}"
    assert sorted(status["quorum_names"]) == sorted(ceph.mons), f"quorum {status['quorum_names']} != {ceph.mons}"


def test_rbd_roundtrip_as_a_client_lands_in_the_cluster(
    lab: LabContext, ceph: CephLab, runners: dict[str, Runner], scratch_image: tuple[str, str], evidence: Evidence
) -> None:
    if ceph.client_node is None or "cinder" not in ceph.clients:
        pytest.skip("the lab has no Ceph client node with the cinder key")
    pool, image = scratch_image
    client = runners[ceph.client_node]
    pattern = Pattern.random(offset=4 * MIB, size=4 * MIB)
    src = upload_pattern(client, pattern, "rbd")
    before = traffic(lab, client, ceph.client_node)
    wrote = rbd_tool(client, "cinder", pool, image, "write", str(pattern.offset), src).strip()
    after = traffic(lab, client, ceph.client_node)
    assert wrote == pattern.sha256
    delta = assert_carried_by_storage(before, after, len(pattern.data), "RBD")
    evidence("written", f"{len(pattern.data)} random bytes (sha256 {pattern.sha256}) at offset {pattern.offset} of "
                        f"{pool}/{image} by {ceph.client_node} as client.cinder (librbd)")  # fmt: skip
    evidence("nic bytes", f"{ceph.client_node}: " + ", ".join(f"{net} +{n}" for net, n in sorted(delta.items())))
    qemu_opts = f"driver=rbd,pool={pool},image={image},conf={CEPH_CONF},user=cinder"
    assert read_range_sha(client, qemu_opts, pattern) == pattern.sha256, "QEMU rbd: read differs"
    admin_view = rbd_tool(runners[ceph.admin_node], "admin", pool, image, "read", str(pattern.offset), str(4 * MIB))
    assert admin_view.strip() == pattern.sha256, f"the cluster holds {admin_view.strip()}, wrote {pattern.sha256}"
    evidence("read back", f"by QEMU's rbd driver on {ceph.client_node}, and as client.admin on {ceph.admin_node}")


def test_cephx_keeps_a_client_out_of_other_pools(ceph: CephLab, runners: dict[str, Runner]) -> None:
    if ceph.client_node is None or "cinder" not in ceph.clients or "images" not in ceph.pools:
        pytest.skip("needs the cinder client key and an images pool (read-only for cinder)")
    name = f"suite-{uuid.uuid4().hex[:8]}"
    argv = ["python3", RBD_TOOL, CEPH_CONF, "cinder", "images", name, "create", str(MIB)]
    result = runners[ceph.client_node].run(argv, timeout=120.0, check=False)
    if result.ok:
        rbd_tool(runners[ceph.admin_node], "admin", "images", name, "remove")
    assert not result.ok, "client.cinder created an image in the read-only images pool"
    assert "Operation not permitted" in result.stderr or "PermissionError" in result.stderr, result.stderr


def _osd_of(admin: Runner) -> tuple[int, str]:
    tree = json.loads(admin.run(["ceph", "osd", "tree", "--format", "json"], timeout=60.0).stdout)
    for node in tree["nodes"]:
        if node["type"] == "host" and node.get("children"):
            return int(sorted(node["children"])[0]), str(node["name"])
    raise AssertionError(f"no OSD host in the crush tree: {tree}")


def _writer(lab: LabContext, node: str, *, pool: str, image: str, chunks: int, size: int, out: dict[str, Any]) -> None:
    own = lab.runner(node)
    argv = ["python3", RBD_TOOL, CEPH_CONF, "admin", pool, image, "writer", str(chunks), str(size), "0.2"]
    out["result"] = own.run(argv, timeout=300.0, check=False)


def _assert_acked_chunks_intact(admin: Runner, pool: str, image: str, out: Mapping[str, Any], size: int) -> int:
    lines = [line.split() for line in out["result"].stdout.splitlines()]
    acked = {int(parts[1]): parts[2] for parts in lines if parts and parts[0] == "acked"}
    assert acked, f"no write was acknowledged: {out['result'].stderr}"
    hashes = rbd_tool(admin, "admin", pool, image, "hashes", str(max(acked) + 1), str(size))
    held = {int(i): sha for i, sha in (line.split() for line in hashes.splitlines())}
    lost = [i for i, sha in acked.items() if held.get(i) != sha]
    assert not lost, f"acknowledged writes lost: chunks {lost}"
    return len(acked)


def test_killed_osd_loses_no_acknowledged_write_and_the_cluster_heals(
    lab: LabContext, ceph: CephLab, runners: dict[str, Runner], scratch_image: tuple[str, str]
) -> None:
    admin = runners[ceph.admin_node]
    pool, image = scratch_image
    osd, host = _osd_of(admin)
    chunks, size = 40, 512 * 1024
    out: dict[str, Any] = {}
    thread = threading.Thread(
        target=_writer,
        args=(lab, ceph.admin_node),
        kwargs={"pool": pool, "image": image, "chunks": chunks, "size": size, "out": out},
    )
    thread.start()
    try:
        time.sleep(2.0)
        runners[host].run(["systemctl", "kill", "--signal=SIGKILL", f"ceph-osd@{osd}.service"], timeout=60.0)
        # The monitors would mark it down after the heartbeat grace (20 s); do it now to keep the suite short.
        admin.run(["ceph", "osd", "down", str(osd)], timeout=60.0, check=False)
        thread.join(300.0)
        assert _assert_acked_chunks_intact(admin, pool, image, out, size) == chunks, "the writer stalled while degraded"
    finally:
        thread.join(300.0)
        runners[host].run(["systemctl", "reset-failed", f"ceph-osd@{osd}.service"], timeout=60.0, check=False)
        runners[host].run(["systemctl", "start", f"ceph-osd@{osd}.service"], timeout=120.0)
    wait_health_ok(admin)


def test_killed_monitor_loses_no_acknowledged_write_and_the_cluster_heals(
    lab: LabContext, ceph: CephLab, runners: dict[str, Runner], scratch_image: tuple[str, str]
) -> None:
    admin = runners[ceph.admin_node]
    pool, image = scratch_image
    chunks, size = 10, 512 * 1024
    out: dict[str, Any] = {}
    _writer(lab, ceph.admin_node, pool=pool, image=image, chunks=chunks, size=size, out=out)  # acked before the fault
    victim = ceph.mons[-1]
    unit = f"ceph-mon@{victim}.service"
    runners[victim].run(["systemctl", "kill", "--signal=SIGKILL", unit], timeout=60.0)
    # ceph-mon@.service restarts on failure after 10 s, before the others notice; keep it dead while we look
    runners[victim].run(["systemctl", "stop", unit], timeout=60.0, check=False)
    try:
        if len(ceph.mons) >= 3:
            # the remaining majority re-elects (lease and election timeouts: ~15-20 s) and keeps serving
            deadline, quorum = time.monotonic() + 90.0, list[str]()
            while time.monotonic() < deadline:
                alive = admin.run(["ceph", "--connect-timeout", "30", "quorum_status"], timeout=90.0, check=False)
                quorum = json.loads(alive.stdout)["quorum_names"] if alive.ok else []
                if alive.ok and victim not in quorum:
                    break
                time.sleep(2.0)
            want = sorted(set(ceph.mons) - {victim})
            assert sorted(quorum) == want, f"expected a quorum of {want} without {victim}, saw {quorum}"
        else:
            dead = admin.run(["ceph", "--connect-timeout", "5", "health"], timeout=30.0, check=False)
            assert not dead.ok, "the only monitor was killed but the cluster still answered"
    finally:
        runners[victim].run(["systemctl", "reset-failed", unit], timeout=60.0, check=False)
        runners[victim].run(["systemctl", "start", unit], timeout=120.0)
    wait_health_ok(admin)
    _assert_acked_chunks_intact(admin, pool, image, out, size)
