"""Error types shared by every layer, and the exit codes the CLI maps them to."""

from __future__ import annotations

EXIT_APPLY_FAILED = 1
EXIT_INVALID_LAB = 2
EXIT_VERIFY_FAILED = 3
# Another up/verify/down of the lab holds its lock: nothing was tried, so neither "apply failed" nor "invalid lab".
EXIT_LAB_BUSY = 4


class StackLabError(Exception):
    """An error a user can act on: what failed, why, and (optionally) what to do."""

    exit_code = EXIT_APPLY_FAILED

    def __init__(self, message: str, *, hint: str | None = None, resource: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.resource = resource

    def __str__(self) -> str:
        text = f"{self.resource}: {self.message}" if self.resource else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class PlanError(StackLabError):
    """The lab cannot be planned on this host (name clash, missing capability); nothing was touched."""

    exit_code = EXIT_INVALID_LAB


class LockedError(StackLabError):
    """Another stacklab process holds the lab's lock."""

    exit_code = EXIT_LAB_BUSY


class VerifyError(StackLabError):
    exit_code = EXIT_VERIFY_FAILED
