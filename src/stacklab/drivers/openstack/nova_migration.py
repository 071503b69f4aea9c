"""Live migration between the lab's nova computes: libvirt over SSH with a per-lab key, QEMU's stream on br-mgmt.

Why qemu+ssh and not libvirt's TCP listener with SASL: the plain TCP listener accepts only SASL mechanisms that
also encrypt (DIGEST-MD5, deprecated and weak; SCRAM gives no encryption and libvirt refuses it without TLS), so a
secure TCP listener means a per-lab CA and TLS certificates on every compute. SSH gives an encrypted,
mutually-authenticated control channel with one key pair: the source checks the destination's host key
(pinned in a known_hosts file, StrictHostKeyChecking yes) and the destination admits only that key, only from
the other computes' br-mgmt addresses, and only to run `virt-ssh-helper qemu:///system` (no shell, no pty, no
forwarding). libvirtd itself keeps no network listener (Debian's libvirtd-tcp/tls sockets stay disabled).

Who connects: nova asks libvirt for a peer-to-peer migration, so the *source libvirtd* (root) opens
`qemu+ssh://<destination's live_migration_inbound_addr>/system`; the client settings are a system-wide
ssh_config drop-in for the other computes' addresses only (user `nova`, the lab key, the pinned host keys). The
destination's sshd runs the forced command as `nova` (in the `libvirt` group, so it reaches the local socket).

Which network: br-mgmt. nova-compute's own traffic (RPC, the APIs) is there; the instance disks are on Ceph and
do not move, only the guest's memory does, which is small next to the storage traffic br-storage carries. QEMU's
migration stream is plain TCP from the source QEMU to the destination's `migration_address` (the compute's
br-mgmt address, so the destination QEMU listens there only) on a port of `migration_port_min..max`.

Files (the key is the lab's secret `nova-migration-ssh`, 0600 under the state dir and 0600 root on the nodes;
it travels on stdin, never on argv): the key and the pinned host keys under /etc/stacklab/nova/migration/, the
ssh_config drop-in, nova's authorized_keys, and libvirt's qemu.conf and libvirtd.conf (Debian ships both as
comments only; the shipped copy is kept beside them and put back by `down`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_ssh_private_key,
)

from stacklab.errors import StackLabError
from stacklab.exec.node_files import (
    FILE_TIMEOUT,
    node_path_exists,
    read_node_file,
    remove_node_files,
    write_node_file,
)
from stacklab.exec.runner import Runner
from stacklab.secrets import read_secret, store_secret

KEY_SECRET = "nova-migration-ssh"
MIGRATION_DIR = "/etc/stacklab/nova/migration"
KEY_PATH = f"{MIGRATION_DIR}/id_ed25519"
KNOWN_HOSTS = f"{MIGRATION_DIR}/known_hosts"
SSH_CLIENT_CONF = "/etc/ssh/ssh_config.d/50-stacklab-nova-migration.conf"
AUTHORIZED_KEYS = "/var/lib/nova/.ssh/authorized_keys"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
QEMU_CONF = "/etc/libvirt/qemu.conf"
LIBVIRTD_CONF = "/etc/libvirt/libvirtd.conf"
SHIPPED_SUFFIX = ".stacklab-shipped"
HELPER = "/usr/bin/virt-ssh-helper"
SCHEME = "ssh"
PORT_MIN, PORT_MAX = 49152, 49161  # ten concurrent incoming migrations per compute: more than a lab runs


def nova_conf_lines(address: str) -> str:
    """nova's `[libvirt]` settings for live migration on a compute whose br-mgmt address is `address`: nova builds
    `qemu+ssh://<address>/system` for the libvirt connection and `tcp://<address>` for QEMU's stream from the
    destination's inbound address (live_migration_uri is deprecated in favour of these two)."""
    return f"live_migration_scheme = {SCHEME}\nlive_migration_inbound_addr = {address}\n"


def render_authorized_keys(lab: str, public_key: str, peers: Sequence[str]) -> str:
    """nova's authorized_keys: the lab key, from the other computes only, running virt-ssh-helper only."""
    header = f"# stacklab lab={lab}: libvirt live migration from the other computes (generated)\n"
    if not peers:  # a lone compute: nobody may come in
        return header
    return f'{header}from="{",".join(peers)}",restrict,command="{HELPER} qemu:///system" {public_key}\n'


def render_ssh_client_conf(lab: str, peers: Sequence[str]) -> str:
    """The ssh client settings the source libvirtd uses towards the other computes (and nothing else)."""
    header = f"# stacklab lab={lab}: libvirt live migration to the other computes (generated)\n"
    if not peers:
        return header
    return (
        f"{header}Host {' '.join(peers)}\n"
        "    User nova\n"
        f"    IdentityFile {KEY_PATH}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {KNOWN_HOSTS}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        "    ConnectTimeout 10\n"
    )


def render_known_hosts(host_keys: Mapping[str, str]) -> str:
    """address -> the host's `type base64` key; the comment (root@node) is dropped."""
    return "".join(f"{address} {' '.join(key.split()[:2])}\n" for address, key in sorted(host_keys.items()))


def render_qemu_conf(lab: str, address: str) -> str:
    """QEMU's incoming migrations listen on the br-mgmt address only, on the lab's port range."""
    return (
        f"# stacklab lab={lab}: libvirt's QEMU driver (generated; the shipped file, all comments, is beside it)\n"
        f'migration_address = "{address}"\n'
        f'migration_host = "{address}"\n'
        f"migration_port_min = {PORT_MIN}\n"
        f"migration_port_max = {PORT_MAX}\n"
    )


def render_libvirtd_conf(lab: str) -> str:
    """The host UUID from /etc/machine-id: the computes are containers without DMI tables, and libvirt refuses a
    migration between two hosts with the same UUID (with no DMI it would make up a new one at every start)."""
    return (
        f"# stacklab lab={lab}: libvirtd (generated; the shipped file, all comments, is beside it)\n"
        'host_uuid_source = "machine-id"\n'
    )


def lab_key(state_dir: Path, *, create: bool) -> tuple[str, str] | None:
    """The lab's migration key pair (private in OpenSSH format, public `ssh-ed25519 ...`), made once and kept as
    the secret KEY_SECRET (0600); None when it does not exist and `create` is false (observe never makes
    secrets). Made in-process with `cryptography` (paramiko's own dependency): no key on any command line."""
    stored = read_secret(state_dir, KEY_SECRET)
    if stored is None:
        if not create:
            return None
        made = ed25519.Ed25519PrivateKey.generate()
        text = made.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
        store_secret(state_dir, KEY_SECRET, text)
        stored = str(read_secret(state_dir, KEY_SECRET))
    key = load_ssh_private_key(stored.encode(), password=None)
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return stored + "\n", f"{public} stacklab-nova-migration"


def host_key(runner: Runner, node: str) -> str:
    found = read_node_file(runner, HOST_KEY)
    if not found or len(found.split()) < 2:
        raise StackLabError(f"{node} has no SSH host key {HOST_KEY}", hint="the node image must include openssh-server")
    return found.strip()


def node_files(lab: str, address: str, *, key: str, public: str, peers: Mapping[str, str]) -> dict[str, str]:
    """path -> content of every migration file on the compute at `address`; `peers` maps the other computes'
    br-mgmt addresses to their SSH host keys."""
    return {
        KEY_PATH: key,
        KNOWN_HOSTS: render_known_hosts(peers),
        SSH_CLIENT_CONF: render_ssh_client_conf(lab, sorted(peers)),
        AUTHORIZED_KEYS: render_authorized_keys(lab, public, sorted(peers)),
        QEMU_CONF: render_qemu_conf(lab, address),
        LIBVIRTD_CONF: render_libvirtd_conf(lab),
    }


def write_files(runner: Runner, files: Mapping[str, str]) -> bool:
    """Write the node's migration files (modes and owners as sshd and libvirt want them); True when libvirt's
    configuration changed (libvirtd must restart to read it; running guests survive that)."""
    for conf in (QEMU_CONF, LIBVIRTD_CONF):
        # keep the package's copy once, before the first write, for `down`
        runner.run(["cp", "-n", conf, conf + SHIPPED_SUFFIX], timeout=FILE_TIMEOUT, check=False)
    write_node_file(runner, KEY_PATH, files[KEY_PATH], mode="0600")
    write_node_file(runner, KNOWN_HOSTS, files[KNOWN_HOSTS])
    write_node_file(runner, SSH_CLIENT_CONF, files[SSH_CLIENT_CONF])
    runner.run(["install", "-d", "-m", "0700", "-o", "nova", "-g", "nova", AUTHORIZED_KEYS.rsplit("/", 1)[0]],
               timeout=FILE_TIMEOUT)  # fmt: skip
    write_node_file(runner, AUTHORIZED_KEYS, files[AUTHORIZED_KEYS], mode="0600", owner="nova", group="nova")
    changed = [write_node_file(runner, conf, files[conf]) for conf in (QEMU_CONF, LIBVIRTD_CONF)]
    return any(changed)


def remove(runner: Runner) -> None:
    """Take the migration files away and put the package's libvirt files back (libvirtd is stopped by the caller)."""
    for conf in (QEMU_CONF, LIBVIRTD_CONF):
        if node_path_exists(runner, conf + SHIPPED_SUFFIX):
            runner.run(["mv", "-f", conf + SHIPPED_SUFFIX, conf], timeout=FILE_TIMEOUT, check=False)
    remove_node_files(runner, KEY_PATH, KNOWN_HOSTS, SSH_CLIENT_CONF, AUTHORIZED_KEYS)
