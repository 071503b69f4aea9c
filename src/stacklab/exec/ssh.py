"""A Runner that executes on a lab node over SSH (paramiko), with the lab key and the lab's known_hosts file.

The argv list is quoted with `shlex.join` for the remote shell (which always parses the command line), so argv
means argv on the node exactly as it does locally. `env` is passed as `env K=V ...` (sshd refuses most
`setenv` requests) and `cwd` as `cd DIR && ...`.

Host keys: the lab's `known_hosts` (under the lab's state dir) is read at connect; a host that is not in it is
accepted and appended (OpenSSH's `StrictHostKeyChecking=accept-new`); a host whose key differs is refused.
A driver that recreates a node calls `forget_host_key` first, because the new node has new host keys.

A command that exceeds its timeout has its channel closed and raises CommandTimeout; the remote process gets
EOF/SIGPIPE on its output, but is not killed otherwise (there is no pty).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shlex
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from stacklab.errors import StackLabError
from stacklab.exec.readiness import wait_until
from stacklab.exec.runner import CommandError, CommandResult, CommandTimeout, checked

LOG = logging.getLogger(__name__)

_READ_CHUNK = 65536
_POLL_CAP = 0.5  # seconds between checks for the exit status when no data arrives
_KEEPALIVE = 30

# One lock per known_hosts path (threads of this process) plus flock (other processes): nodes boot in parallel.
_known_hosts_locks: dict[str, threading.Lock] = {}
_known_hosts_locks_guard = threading.Lock()


class SSHError(StackLabError):
    """Could not connect or authenticate to a node (yet): worth retrying while a node boots."""


class HostKeyMismatch(StackLabError):
    """The node's host key differs from the lab's known_hosts: never retried, never accepted."""


def remote_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> str:
    """The command line the remote shell parses: argv quoted so every word arrives as one argument."""
    words = [str(a) for a in argv]
    if not words:
        raise ValueError("empty argv")
    if env:
        for key in env:
            if not key or "=" in key or not key.replace("_", "a").isalnum():
                raise ValueError(f"invalid environment variable name {key!r}")
        words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
    command = shlex.join(words)
    if cwd is not None:
        command = f"cd {shlex.quote(str(cwd))} && {command}"
    return command


def host_key_name(host: str, port: int) -> str:
    """How OpenSSH (and paramiko) name a host in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    key = str(path.resolve())
    with _known_hosts_locks_guard:
        lock = _known_hosts_locks.setdefault(key, threading.Lock())
    with lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _entry_matches(field: str, name: str) -> bool:
    for pattern in field.split(","):
        if pattern.startswith("|1|"):
            try:
                if paramiko.HostKeys.hash_host(name, pattern) == pattern:
                    return True
            except Exception:  # a malformed hashed entry is simply not ours
                LOG.debug("unreadable hashed known_hosts entry %r", pattern)
        elif pattern == name:
            return True
    return False


def forget_host_key(known_hosts: Path, host: str, port: int = 22) -> bool:
    """Remove every known_hosts line for host[:port]; True if any was removed. Safe against parallel writers."""
    if not known_hosts.exists():
        return False
    name = host_key_name(host, port)
    with _locked(known_hosts):
        lines = known_hosts.read_text().splitlines(keepends=True)
        kept = [
            line
            for line in lines
            if not line.strip() or line.lstrip().startswith("#") or not _entry_matches(line.split()[0], name)
        ]
        if len(kept) == len(lines):
            return False
        tmp = known_hosts.with_name(f".{known_hosts.name}.tmp")
        tmp.write_text("".join(kept))
        tmp.chmod(0o600)
        tmp.replace(known_hosts)
    LOG.debug("forgot host key of %s in %s", name, known_hosts)
    return True


class _AcceptNew(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko ships no types
    """Accept a host not yet known and append its key to the lab's known_hosts (accept-new)."""

    def __init__(self, known_hosts: Path | None) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self._known_hosts is None:
            return
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _locked(self._known_hosts):
            # Another thread may have added it meanwhile: append only if still absent.
            known = paramiko.HostKeys()
            if self._known_hosts.exists():
                known.load(str(self._known_hosts))
            entry = known.lookup(hostname)
            if entry is not None and key.get_name() in entry:
                if entry[key.get_name()] != key:
                    raise paramiko.BadHostKeyException(hostname, key, entry[key.get_name()])
                return
            fd = os.open(self._known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)
        LOG.info("accepted new host key %s %s for %s", key.get_name(), key.fingerprint, hostname)


MAX_SESSIONS = 6
SESSION_RETRY = 0.3


class _RetriedChannelOpen(logging.Filter):
    """paramiko logs every refused channel open as an ERROR; SSHRunner retries those, and reports what lasts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_RetriedChannelOpen())


class SSHRunner:
    """Runs argv lists on one node over one SSH connection (opened on first use, reopened when it drops).

    Thread-safe: commands from several threads share the connection, each on its own channel.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str = "root",
        key_file: Path,
        port: int = 22,
        connect_timeout: float = 10.0,
        known_hosts: Path | None = None,
    ) -> None:
        self.host = host
        self.user = user
        self.key_file = Path(key_file)
        self.port = port
        self.connect_timeout = connect_timeout
        self.known_hosts = known_hosts
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        # sshd allows MaxSessions (10 by default) channels per connection: threads sharing this runner queue here
        self._sessions = threading.BoundedSemaphore(MAX_SESSIONS)

    def __repr__(self) -> str:
        return f"SSHRunner({self.user}@{self.host}:{self.port})"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    # -- connection ---------------------------------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts is not None and self.known_hosts.exists():
            with _locked(self.known_hosts):
                client.get_host_keys().load(str(self.known_hosts))
        client.set_missing_host_key_policy(_AcceptNew(self.known_hosts))
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file),
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"host key of {self.target} differs from the one in {self.known_hosts}",
                hint="the node was recreated outside stacklab, or another host answers on its address",
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHError(
                f"{self.target} refused the key {self.key_file}: {exc}",
                hint="has cloud-init installed the lab key yet? see the node's console log",
            ) from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise SSHError(f"cannot connect to {self.target}: {type(exc).__name__}: {exc}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(_KEEPALIVE)
        LOG.debug("connected to %s", self.target)
        return client

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                self._client = client = self._connect()
                transport = client.get_transport()
            assert transport is not None
            return transport

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> SSHRunner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- Runner protocol ----------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> CommandResult:
        args = tuple(str(a) for a in argv)
        command = remote_command(args, env=env, cwd=cwd)
        LOG.debug("run on %s: %s (timeout %ss)", self.target, command, timeout)
        start = time.monotonic()
        deadline = start + timeout
        if not self._sessions.acquire(timeout=max(0.1, deadline - time.monotonic())):
            raise CommandTimeout(args, timeout, f"all {MAX_SESSIONS} sessions to {self.target} stayed busy")
        try:
            channel = self._open_session(deadline)
            try:
                returncode, stdout, stderr = self._exchange(
                    channel, command, input=input, deadline=deadline, args=args, timeout=timeout
                )
            finally:
                channel.close()
        finally:
            self._sessions.release()
        result = CommandResult(args, returncode, stdout, stderr, time.monotonic() - start)
        LOG.debug("rc=%s in %.2fs on %s: %s", result.returncode, result.duration, self.target, result.command)
        return checked(result, check)

    def _open_session(self, deadline: float) -> paramiko.Channel:
        """A new channel. sshd refuses one past its MaxSessions while closed ones are still being reaped (paramiko
        says "Connect failed" or "Unable to open channel"), and a dropped connection is reopened: retry both until
        the command's deadline. An open is given what is left of the command's time, not the connect timeout: on a
        TCG VM node whose vCPU a nested guest keeps busy, sshd took over 10 s to answer one (the reference lab's
        attach suite failed on "Timeout opening channel" with most of the command's 30 s unused)."""
        while True:
            try:
                return self._transport().open_session(timeout=max(0.1, deadline - time.monotonic()))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if time.monotonic() + SESSION_RETRY > deadline:
                    raise SSHError(f"cannot open a session on {self.target}: {exc}") from exc
                LOG.debug("session on %s refused (%s); retrying", self.target, exc)
                time.sleep(SESSION_RETRY)

    def _exchange(
        self,
        channel: paramiko.Channel,
        command: str,
        *,
        input: str | None,
        deadline: float,
        args: tuple[str, ...],
        timeout: float,
    ) -> tuple[int, str, str]:
        out = bytearray()
        err = bytearray()
        channel.exec_command(command)
        if input is not None:
            channel.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                channel.sendall(input.encode())
            except TimeoutError as exc:
                raise CommandTimeout(args, timeout, "(timed out writing stdin)") from exc
        channel.shutdown_write()
        channel.setblocking(False)
        while True:
            drained = self._drain(channel, out, err)
            if channel.exit_status_ready() and not drained and (channel.eof_received or channel.closed):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(args, timeout, err.decode(errors="replace") or out.decode(errors="replace"))
            if channel.eof_received:
                # All output is in; the exit status follows right after.
                channel.status_event.wait(min(remaining, _POLL_CAP))
            elif not drained:
                select.select([channel], [], [], min(remaining, _POLL_CAP))
        self._drain(channel, out, err)
        return channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")

    @staticmethod
    def _drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
        got = False
        while channel.recv_ready():
            chunk = channel.recv(_READ_CHUNK)
            if not chunk:
                break
            out += chunk
            got = True
        while channel.recv_stderr_ready():
            chunk = channel.recv_stderr(_READ_CHUNK)
            if not chunk:
                break
            err += chunk
            got = True
        return got


def wait_for_ssh(
    host: str,
    key_file: Path,
    budget: float,
    *,
    user: str = "root",
    port: int = 22,
    known_hosts: Path | None = None,
    interval: float = 0.25,
    connect_timeout: float = 5.0,
    resource: str | None = None,
) -> float:
    """Wait until `user@host` accepts `key_file` and runs `true`; return the seconds it took.

    Raises ReadinessTimeout (a StackLabError) naming the target, the budget and the last error seen.
    """

    def probe() -> bool:
        with SSHRunner(
            host,
            user=user,
            key_file=key_file,
            port=port,
            connect_timeout=min(connect_timeout, budget),
            known_hosts=known_hosts,
        ) as runner:
            runner.run(["true"], timeout=max(connect_timeout, 1.0))
        return True

    retry: tuple[type[BaseException], ...] = (SSHError, CommandError, CommandTimeout, OSError)
    return wait_until(
        probe,
        budget=budget,
        interval=interval,
        what=f"SSH as {user}@{host}:{port} with key {key_file}",
        retry_on=retry,
        hint="check that the node booted (console log) and that its address is on the lab bridge",
        resource=resource,
    )


def lab_ssh_runner(lab_dir: Path, ssh: Mapping[str, Any]) -> SSHRunner:
    """A runner to a lab node from the `ssh` outputs its node driver recorded (host, user, key, port), trusting
    the host keys the lab keeps in `<lab_dir>/known_hosts`. Shared by the engine and the suites' lab context."""
    return SSHRunner(
        str(ssh["host"]),
        user=str(ssh.get("user", "root")),
        key_file=Path(str(ssh["key"])),
        port=int(ssh.get("port", 22)),
        known_hosts=lab_dir / "known_hosts",
    )
