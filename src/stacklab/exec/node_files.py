"""Files and systemd units on lab nodes, through a node runner (SSH): the small steps every role driver shares.

Every command is an argv list with a timeout; file contents travel on stdin, never in argv (they may hold secrets).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from stacklab.errors import PlanError
from stacklab.exec.runner import Runner

FILE_TIMEOUT = 30.0
# `systemctl enable --now` waits for its start job, queued behind the boot's own jobs: on a TCG VM node just up
# beside four other booting VMs (2 cores) rpcbind's took over 120 s (the reference lab, stop 23)
SYSTEMCTL_TIMEOUT = 300.0


def write_node_file(
    runner: Runner, path: str, content: str, *, mode: str = "0644", owner: str | None = None, group: str | None = None
) -> bool:
    """Write `content` to `path` on the node unless it is already there; returns True when it was written.

    The content travels on stdin (`install -D ... /dev/stdin PATH`), never in argv, so secrets in it are not
    logged with the command line. `owner`/`group` are set when given (install's default is the caller, root).
    """
    want = hashlib.sha256(content.encode()).hexdigest()
    have = runner.run(["sha256sum", path], timeout=FILE_TIMEOUT, check=False)
    if have.ok and have.stdout.split()[:1] == [want]:
        return False
    argv = ["install", "-D", "-m", mode]
    argv += ["-o", owner] if owner is not None else []
    argv += ["-g", group] if group is not None else []
    runner.run([*argv, "/dev/stdin", path], timeout=FILE_TIMEOUT, input=content)
    return True


def read_node_file(runner: Runner, path: str) -> str | None:
    """The content of `path` on the node, or None when it cannot be read (absent)."""
    result = runner.run(["cat", path], timeout=FILE_TIMEOUT, check=False)
    return result.stdout if result.ok else None


def node_path_exists(runner: Runner, path: str) -> bool:
    return runner.run(["test", "-e", path], timeout=FILE_TIMEOUT, check=False).ok


def node_has_systemd(runner: Runner) -> bool:
    """True when systemd is PID 1 on the node (the test systemd itself documents: /run/systemd/system exists)."""
    return runner.run(["test", "-d", "/run/systemd/system"], timeout=FILE_TIMEOUT, check=False).ok


def require_node(runner: Runner, node: str, resource_id: str, *, files: Mapping[str, str], unit: str) -> None:
    """PlanError unless the node has every file (path -> package hint) and runs systemd (which manages `unit`)."""
    for path, package in files.items():
        if not node_path_exists(runner, path):
            raise PlanError(
                f"{node} has no {path}", resource=resource_id, hint=f"the node's image must include {package}"
            )
    if not node_has_systemd(runner):
        raise PlanError(
            f"{node} does not run systemd; stacklab manages {unit} there",
            resource=resource_id,
            hint="use a node image with systemd (every stacklab node kind has it)",
        )


def systemctl(runner: Runner, *args: str, check: bool = True) -> bool:
    """Run `systemctl ARGS` on the node; returns whether it succeeded."""
    return runner.run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT, check=check).ok


def unit_active(runner: Runner, unit: str) -> bool:
    return runner.run(["systemctl", "is-active", "--quiet", unit], timeout=SYSTEMCTL_TIMEOUT, check=False).ok


def write_unit_files(runner: Runner, files: Mapping[str, str]) -> bool:
    """Write systemd unit files or drop-ins (path -> text); one `daemon-reload` when any changed, and True then."""
    changed = [write_node_file(runner, path, text) for path, text in files.items()]
    if any(changed):
        systemctl(runner, "daemon-reload")
    return any(changed)


def enable_and_restart(runner: Runner, unit: str, *, changed: bool) -> None:
    """Enable the unit; (re)start it when its configuration changed or it is not running. A unit that hit its start
    limit stays down through a plain restart, so its failed state is reset first."""
    systemctl(runner, "enable", unit)
    if changed or not unit_active(runner, unit):
        systemctl(runner, "reset-failed", unit, check=False)
        systemctl(runner, "restart", unit)


def remove_node_files(runner: Runner, *paths: str) -> None:
    """Remove files on the node (absent ones are fine)."""
    if paths:
        runner.run(["rm", "-f", "--", *paths], timeout=FILE_TIMEOUT)
