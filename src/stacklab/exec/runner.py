"""The one way stacklab runs external commands: argv lists, explicit timeouts, captured output.

Every driver receives a Runner and never calls subprocess itself, so tests can hand it a FakeRunner and
the same driver code can run locally or, later, over SSH inside a node.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stacklab.errors import StackLabError

LOG = logging.getLogger(__name__)

# How much of stderr/stdout an error message quotes: enough to see the cause, not a whole log.
_ERROR_TAIL_LINES = 15


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-_ERROR_TAIL_LINES:])


class CommandError(StackLabError):
    """A command exited non-zero; the message quotes the command and the end of its stderr."""

    def __init__(self, result: CommandResult, *, hint: str | None = None) -> None:
        detail = _tail(result.stderr) or _tail(result.stdout) or "(no output)"
        super().__init__(f"command failed with exit code {result.returncode}: {result.command}\n{detail}", hint=hint)
        self.result = result


class CommandTimeout(StackLabError):
    def __init__(self, argv: Sequence[str], timeout: float, output: str = "") -> None:
        detail = f"\n{_tail(output)}" if output.strip() else ""
        super().__init__(f"command timed out after {timeout:g}s: {shlex.join(argv)}{detail}")
        self.argv = tuple(argv)
        self.timeout = timeout


def checked(result: CommandResult, check: bool) -> CommandResult:
    """Every Runner's last step: the result, or CommandError when the caller asked for success (`check`) and the
    command exited non-zero."""
    if check and not result.ok:
        raise CommandError(result)
    return result


class Runner(Protocol):
    """Runs one command and returns its result; raises CommandError when check is true and rc != 0."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> CommandResult: ...


class LocalRunner:
    """Runs commands on this host with subprocess (never through a shell)."""

    def __init__(self, *, extra_env: Mapping[str, str] | None = None) -> None:
        self._extra_env = dict(extra_env or {})

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
        args = [str(a) for a in argv]
        if not args:
            raise ValueError("empty argv")
        merged = {**os.environ, **self._extra_env, **(env or {})}
        LOG.debug("run: %s (timeout %ss)", shlex.join(args), timeout)
        start = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                input=input,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=merged,
                cwd=cwd,
                check=False,
                stdin=subprocess.DEVNULL if input is None else None,
            )
        except subprocess.TimeoutExpired as exc:
            partial = exc.stderr if isinstance(exc.stderr, str) else (exc.stderr or b"").decode(errors="replace")
            raise CommandTimeout(args, timeout, partial) from exc
        except FileNotFoundError as exc:
            raise StackLabError(
                f"command not found: {args[0]}",
                hint="run `stacklab doctor` to see which host tools are missing",
            ) from exc
        result = CommandResult(tuple(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        LOG.debug("rc=%s in %.2fs: %s", result.returncode, result.duration, result.command)
        return checked(result, check)
