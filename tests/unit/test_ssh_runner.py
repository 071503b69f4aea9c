"""SSHRunner: argv quoting for the remote shell, known_hosts handling, readiness waits, and the Runner contract
against an in-process paramiko SSH server on 127.0.0.1 that runs each command with `/bin/sh -c` (so the quoting
is checked by a real shell, as sshd would do).
"""

from __future__ import annotations

import io
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import paramiko
import pytest

from stacklab.errors import StackLabError
from stacklab.exec.readiness import NotReady, ReadinessTimeout, wait_until
from stacklab.exec.runner import CommandError, CommandTimeout
from stacklab.exec.ssh import (
    HostKeyMismatch,
    SSHRunner,
    forget_host_key,
    host_key_name,
    remote_command,
    wait_for_ssh,
)

NASTY = ["printf", "%s|", "two words", "it's", '"dq"', "$HOME", "`id`", "a;b", "*", "new\nline", "", "-n", "\\"]


# ----------------------------------------------------------------------------------------------------
# Quoting (pure)


def test_remote_command_round_trips_through_a_shell_parser() -> None:
    command = remote_command(NASTY)
    assert shlex.split(command) == NASTY


def test_remote_command_env_and_cwd() -> None:
    command = remote_command(["ls", "-l"], env={"LANG": "C", "X": "a b"}, cwd="/tmp/my dir")
    assert command == "cd '/tmp/my dir' && env LANG=C 'X=a b' ls -l"
    with pytest.raises(ValueError, match="empty argv"):
        remote_command([])
    with pytest.raises(ValueError, match="invalid environment variable"):
        remote_command(["true"], env={"A=B": "x"})


def test_host_key_name() -> None:
    assert host_key_name("10.0.0.1", 22) == "10.0.0.1"
    assert host_key_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_forget_host_key(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("10.0.0.3")
    known.write_text(
        "# comment\n"
        "10.0.0.1 ssh-ed25519 AAAA1\n"
        "10.0.0.10 ssh-ed25519 AAAA10\n"
        "[10.0.0.1]:2222 ssh-ed25519 AAAA2\n"
        f"{hashed} ssh-ed25519 AAAA3\n"
    )
    assert forget_host_key(known, "10.0.0.1")
    assert known.read_text().splitlines() == [
        "# comment",
        "10.0.0.10 ssh-ed25519 AAAA10",
        "[10.0.0.1]:2222 ssh-ed25519 AAAA2",
        f"{hashed} ssh-ed25519 AAAA3",
    ]
    assert forget_host_key(known, "10.0.0.3")
    assert forget_host_key(known, "10.0.0.1", 2222)
    assert not forget_host_key(known, "10.0.0.1")
    assert known.read_text().splitlines() == ["# comment", "10.0.0.10 ssh-ed25519 AAAA10"]
    assert not forget_host_key(tmp_path / "missing", "10.0.0.1")


# ----------------------------------------------------------------------------------------------------
# wait_until (fake clock)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_until_returns_elapsed() -> None:
    clock = FakeClock()
    answers = iter([False, False, True])
    took = wait_until(lambda: next(answers), budget=10, interval=1, what="x", clock=clock, sleep=clock.sleep)
    assert took == 2.0 and clock.sleeps == [1, 1]


def test_wait_until_times_out_with_last_error() -> None:
    clock = FakeClock()

    def probe() -> bool:
        raise NotReady(f"state STARTING at {clock.now:g}")

    with pytest.raises(ReadinessTimeout) as caught:
        wait_until(probe, budget=2.5, interval=1, what="the thing", clock=clock, sleep=clock.sleep)
    assert str(caught.value) == "timed out after 2.5s waiting for the thing; last: state STARTING at 102.5 (4 attempts)"
    assert clock.sleeps == [1, 1, 0.5]  # the last try is at the deadline, not after it
    assert isinstance(caught.value, StackLabError)


def test_wait_until_stops_at_once_on_other_errors() -> None:
    clock = FakeClock()

    def probe() -> bool:
        raise StackLabError("container stopped")

    with pytest.raises(StackLabError, match="container stopped"):
        wait_until(probe, budget=10, interval=1, what="x", clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


# ----------------------------------------------------------------------------------------------------
# A loopback SSH server


class _Server(paramiko.ServerInterface):  # type: ignore[misc]
    def __init__(self, authorized: paramiko.PKey) -> None:
        self.authorized = authorized

    def check_channel_request(self, kind: str, chanid: int) -> int:
        code: int = paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return code

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key == self.authorized
        code: int = paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED
        return code

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_execute, args=(channel, command.decode()), daemon=True).start()
        return True


def _execute(channel: paramiko.Channel, command: str) -> None:
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin
    stdout = cast("io.BufferedReader", proc.stdout)
    stderr = cast("io.BufferedReader", proc.stderr)

    def feed() -> None:
        try:
            while data := channel.recv(65536):
                stdin.write(data)
                stdin.flush()
        except (OSError, EOFError):
            pass
        finally:
            stdin.close()

    def pump_stderr() -> None:
        try:
            while chunk := stderr.read1(65536):
                channel.sendall_stderr(chunk)
        except (OSError, EOFError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    # This thread starts inside check_channel_exec_request, before paramiko has sent the exec reply: output, exit
    # status or a close sent now can overtake that reply, and the client sees "Channel closed". The runner sends EOF
    # only after the reply, so reply on the channel after the client's EOF.
    feeder.join()
    err = threading.Thread(target=pump_stderr, daemon=True)
    err.start()
    try:
        while chunk := stdout.read1(65536):
            channel.sendall(chunk)
        err.join()
        channel.send_exit_status(proc.wait())
        channel.shutdown_write()
    except (OSError, EOFError):
        proc.kill()
    finally:
        channel.close()


@dataclass
class Endpoint:
    port: int
    key_file: Path
    host_key: paramiko.PKey


def _start_server(host_key: paramiko.PKey, authorized: paramiko.PKey) -> tuple[socket.socket, int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            try:
                transport.start_server(server=_Server(authorized))
            except (paramiko.SSHException, EOFError, OSError):
                # a client that rejects the host key hangs up during the key exchange; keep accepting others
                transport.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener, int(listener.getsockname()[1])


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, paramiko.PKey]:
    key = paramiko.ECDSAKey.generate()
    path = tmp_path_factory.mktemp("keys") / "id_ecdsa"
    key.write_private_key_file(str(path))
    return path, key


@pytest.fixture
def server(client_key: tuple[Path, paramiko.PKey]) -> Iterator[Endpoint]:
    host_key = paramiko.ECDSAKey.generate()
    listener, port = _start_server(host_key, client_key[1])
    yield Endpoint(port, client_key[0], host_key)
    listener.close()


def runner_for(server: Endpoint, known_hosts: Path | None) -> SSHRunner:
    return SSHRunner("127.0.0.1", key_file=server.key_file, port=server.port, known_hosts=known_hosts)


def test_run_contract(server: Endpoint, tmp_path: Path) -> None:
    with runner_for(server, tmp_path / "known_hosts") as runner:
        result = runner.run(NASTY, timeout=20)
        assert result.ok and result.argv == tuple(NASTY)
        assert result.stdout == 'two words|it\'s|"dq"|$HOME|`id`|a;b|*|new\nline||-n|\\|'
        assert result.duration > 0
        failed = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20, check=False)
        assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
        with pytest.raises(CommandError, match="exit code 3"):
            runner.run(["sh", "-c", "exit 3"], timeout=20)
        assert runner.run(["cat"], timeout=20, input="hello\n").stdout == "hello\n"
        assert runner.run(["pwd"], timeout=20, cwd="/").stdout == "/\n"
        assert runner.run(["sh", "-c", 'echo "$GREETING"'], timeout=20, env={"GREETING": "hi there"}).stdout == (
            "hi there\n"
        )
        big = runner.run(["head", "-c", "300000", "/dev/zero"], timeout=20)
        assert len(big.stdout) == 300000


def test_timeout_is_enforced(server: Endpoint, tmp_path: Path) -> None:
    with runner_for(server, tmp_path / "known_hosts") as runner:
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"timed out after 0\.5s: sleep 5"):
            runner.run(["sleep", "5"], timeout=0.5)
        assert time.monotonic() - start < 3
        assert runner.run(["true"], timeout=20).ok  # the connection still works


def test_parallel_commands_share_a_connection(server: Endpoint, tmp_path: Path) -> None:
    with runner_for(server, tmp_path / "known_hosts") as runner:
        results: list[str] = []

        def work(i: int) -> None:
            results.append(runner.run(["echo", str(i)], timeout=20).stdout.strip())

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=int) == [str(i) for i in range(8)]


def test_known_hosts_accept_new_then_strict(server: Endpoint, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with runner_for(server, known) as runner:
        runner.run(["true"], timeout=20)
    name = f"[127.0.0.1]:{server.port}"
    assert known.read_text() == f"{name} {server.host_key.get_name()} {server.host_key.get_base64()}\n"
    with runner_for(server, known) as runner:  # known and matching: nothing appended
        runner.run(["true"], timeout=20)
    assert len(known.read_text().splitlines()) == 1
    other = paramiko.ECDSAKey.generate()
    known.write_text(f"{name} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(HostKeyMismatch, match="differs"), runner_for(server, known) as runner:
        runner.run(["true"], timeout=20)
    assert forget_host_key(known, "127.0.0.1", server.port)
    with runner_for(server, known) as runner:
        runner.run(["true"], timeout=20)
    assert server.host_key.get_base64() in known.read_text()


def test_wait_for_ssh(server: Endpoint, tmp_path: Path) -> None:
    took = wait_for_ssh("127.0.0.1", server.key_file, 10, port=server.port, known_hosts=tmp_path / "kh")
    assert 0 <= took < 10


def test_wait_for_ssh_names_target_and_last_error(client_key: tuple[Path, Any]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused
    with pytest.raises(ReadinessTimeout) as caught:
        wait_for_ssh("127.0.0.1", client_key[0], 0.6, port=port, interval=0.1)
    message = str(caught.value)
    assert message.startswith(f"timed out after 0.6s waiting for SSH as root@127.0.0.1:{port} with key ")
    assert "last: SSHError: cannot connect to root@127.0.0.1" in message


def test_sessions_are_capped_and_refused_opens_are_retried(
    server: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sshd refuses channels past MaxSessions: the runner keeps at most MAX_SESSIONS open and retries refusals."""
    from stacklab.exec.ssh import MAX_SESSIONS

    with runner_for(server, tmp_path / "known_hosts") as runner:
        transport = runner._transport()
        real_open = transport.open_session
        state = {"open": 0, "most": 0, "refused": 0}
        lock = threading.Lock()

        def open_session(*args: Any, **kwargs: Any) -> paramiko.Channel:
            with lock:
                if state["refused"] < 2:
                    state["refused"] += 1
                    raise paramiko.ChannelException(2, "Connect failed")
                state["open"] += 1
                state["most"] = max(state["most"], state["open"])
            channel = real_open(*args, **kwargs)
            real_close = channel.close

            def close() -> None:
                with lock:
                    state["open"] -= 1
                real_close()

            channel.close = close
            return channel

        monkeypatch.setattr(transport, "open_session", open_session)
        results: list[str] = []

        def work(i: int) -> None:
            results.append(runner.run(["sh", "-c", f"sleep 0.2; echo {i}"], timeout=30).stdout.strip())

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3 * MAX_SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=int) == [str(i) for i in range(3 * MAX_SESSIONS)]
        assert state["refused"] == 2 and 1 < state["most"] <= MAX_SESSIONS, state


def test_a_slow_channel_open_gets_the_commands_time(
    server: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sshd on a busy TCG VM answered a channel open after more than the connect timeout: the open waits for what
    is left of the command's time (a 10 s cap failed the attach suite with most of its 30 s unused)."""
    with runner_for(server, tmp_path / "known_hosts") as runner:
        transport = runner._transport()
        real_open = transport.open_session
        asked: list[float] = []

        def open_session(*args: Any, timeout: float | None = None, **kwargs: Any) -> paramiko.Channel:
            asked.append(float(timeout or 0))
            if timeout is None or timeout <= runner.connect_timeout:
                raise paramiko.SSHException("Timeout opening channel.")
            return real_open(*args, timeout=timeout, **kwargs)

        monkeypatch.setattr(transport, "open_session", open_session)
        assert runner.run(["echo", "ok"], timeout=60).stdout.strip() == "ok"
        assert len(asked) == 1 and asked[0] > runner.connect_timeout, asked
