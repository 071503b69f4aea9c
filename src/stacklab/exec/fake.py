"""A Runner for tests: answers scripted commands and fails loudly on anything unexpected."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stacklab.exec.runner import CommandResult, checked

Responder = Callable[[tuple[str, ...]], CommandResult]


class UnexpectedCommand(AssertionError):
    pass


@dataclass
class _Rule:
    prefix: tuple[str, ...]
    result: CommandResult | Responder
    times: int | None  # None = any number of times


@dataclass
class FakeRunner:
    """Scripted runner: `expect(argv_prefix, stdout=..., rc=...)`; every call is recorded in `calls`."""

    rules: list[_Rule] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def expect(
        self,
        prefix: Sequence[str],
        *,
        stdout: str = "",
        stderr: str = "",
        rc: int = 0,
        times: int | None = None,
        responder: Responder | None = None,
    ) -> FakeRunner:
        key = tuple(prefix)
        result: CommandResult | Responder = responder or CommandResult(key, rc, stdout, stderr, 0.0)
        self.rules.append(_Rule(key, result, times))
        return self

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
        assert timeout > 0, "every command needs a positive timeout"
        self.calls.append(args)
        for rule in self.rules:
            if args[: len(rule.prefix)] == rule.prefix and rule.times != 0:
                if rule.times is not None:
                    rule.times -= 1
                found = rule.result(args) if callable(rule.result) else rule.result
                return checked(CommandResult(args, found.returncode, found.stdout, found.stderr, 0.0), check)
        raise UnexpectedCommand(f"unexpected command: {shlex.join(args)}")
