"""VM readiness: SSH answers with the lab key, then cloud-init says done; the console log's tail when it does not."""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stacklab.errors import StackLabError
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import CommandTimeout, Runner

LOG = logging.getLogger(__name__)

_SSH_PROBE_INTERVAL = 3.0
_SSH_CONNECT_TIMEOUT = 5
_CONSOLE_TAIL_LINES = 25
_SSH_FAILED = 255  # ssh's own exit status when the connection fails


@dataclass(frozen=True)
class ReadyTarget:
    node: str
    host: str
    user: str
    port: int
    key_file: str
    console_log: Path
    is_alive: Callable[[], bool]


class ReadyWaiter(Protocol):
    def __call__(self, target: ReadyTarget, *, budget: float, runner: Runner) -> None: ...


def ssh_argv(target: ReadyTarget, command: Sequence[str]) -> list[str]:
    """OpenSSH client argv running `command` (an argv list) on the node.

    Host keys are not recorded: a recreated VM has new ones.
    """
    return [
        "ssh",
        "-i",
        target.key_file,
        "-p",
        str(target.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"ConnectTimeout={_SSH_CONNECT_TIMEOUT}",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        f"{target.user}@{target.host}",
        # ssh hands the remote shell one string: quote so that argv means argv
        shlex.join(command),
    ]


def console_tail(path: Path, lines: int = _CONSOLE_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:]) or "(no console output)"


def require_alive(target: ReadyTarget, phase: str) -> None:
    """Fail at once, quoting the console, when the domain stopped (a crashed guest never answers SSH)."""
    if not target.is_alive():
        raise StackLabError(
            f"VM {target.node} stopped while {phase}; console ({target.console_log}):\n"
            + console_tail(target.console_log),
            resource=f"node/{target.node}",
        )


def wait_ready(target: ReadyTarget, *, budget: float, runner: Runner) -> None:
    """SSH answers with the lab key, then `cloud-init status --wait` says done; all within `budget` seconds.

    Fails at once if the domain stops, quoting the end of the console log.
    """
    deadline = time.monotonic() + budget
    probe = ssh_argv(target, ["true"])
    last_error = ""

    def answers() -> bool:
        nonlocal last_error
        require_alive(target, "booting")  # a stopped domain ends the wait at once
        try:
            result = runner.run(probe, timeout=_SSH_CONNECT_TIMEOUT + 10, check=False)
            if result.ok:
                return True
            last_error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"rc {result.returncode}"
        except CommandTimeout as exc:
            last_error = str(exc)
        return False

    try:
        # time.sleep looked up now, so a test that replaces it speeds this wait up too
        wait_until(answers, budget=budget, interval=_SSH_PROBE_INTERVAL, what="SSH", sleep=time.sleep)
    except ReadinessTimeout:
        raise StackLabError(
            f"VM {target.node}: SSH on {target.host} did not answer within {budget:g}s "
            f"(last error: {last_error}); console ({target.console_log}):\n" + console_tail(target.console_log),
            resource=f"node/{target.node}",
            hint="TCG guests boot slowly on a busy host; check the console log for the stuck step, and on a loaded "
            "host raise the budget with STACKLAB_VM_READY_SECONDS (then `up` again: it resumes)",
        ) from None
    wait_cloud_init(target, deadline=deadline, budget=budget, runner=runner)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def wait_cloud_init(target: ReadyTarget, *, deadline: float, budget: float, runner: Runner) -> None:
    """`cloud-init status --wait` over SSH until it answers done (0) or degraded (2), by `deadline`.

    ssh exits 255 when the connection itself fails or drops (sshd restarting while cloud-init configures it, a
    NIC being brought up again): that is retried, not taken for cloud-init's verdict.
    """
    while True:
        require_alive(target, "cloud-init ran")
        try:
            status = runner.run(
                ssh_argv(target, ["cloud-init", "status", "--wait"]),
                timeout=max(10.0, deadline - time.monotonic()),
                check=False,
            )
        except CommandTimeout as exc:
            raise StackLabError(
                f"VM {target.node}: cloud-init did not finish within {budget:g}s of boot",
                resource=f"node/{target.node}",
                hint=f"see {target.console_log}",
            ) from exc
        if status.returncode == _SSH_FAILED:
            reason = _last_line(status.stderr) or "connection closed"
            if time.monotonic() + _SSH_PROBE_INTERVAL > deadline:
                raise StackLabError(
                    f"VM {target.node}: SSH kept failing while waiting for cloud-init ({reason})",
                    resource=f"node/{target.node}",
                    hint=f"see {target.console_log}",
                )
            LOG.info("VM %s: SSH dropped while waiting for cloud-init (%s); retrying", target.node, reason)
            time.sleep(_SSH_PROBE_INTERVAL)
            continue
        if status.returncode == 2:
            LOG.warning("VM %s: cloud-init finished degraded: %s", target.node, status.stdout.strip())
            return
        if status.ok:
            return
        detail = runner.run(ssh_argv(target, ["cloud-init", "status", "--long"]), timeout=30, check=False)
        text = detail.stdout.strip() if detail.ok or detail.returncode in (1, 2) else ""
        raise StackLabError(
            f"VM {target.node}: cloud-init failed (status rc {status.returncode}):\n"
            + (text or status.stdout.strip() or _last_line(status.stderr) or "(no output)"),
            resource=f"node/{target.node}",
            hint=f"see /var/log/cloud-init.log in the guest and {target.console_log}",
        )
