"""Waiting with explicit budgets: the one place where stacklab polls (no bare sleeps anywhere else).

`wait_until(probe, budget=..., interval=..., what=...)` calls `probe` until it returns true, sleeping `interval`
between attempts, and gives up after `budget` seconds with an error that says what it waited for, for how long,
and the last thing it saw. A probe reports *why* it is not ready yet by raising `NotReady("...")` (or any
exception listed in `retry_on`); any other exception ends the wait at once (e.g. "the container stopped").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stacklab.errors import StackLabError

LOG = logging.getLogger(__name__)

Probe = Callable[[], bool]
Announcer = Callable[[str, float], None]  # (what is waited for, budget in seconds)

# Where a wait in this thread is shown: the engine's event bus binds it for the step the thread runs.
_ANNOUNCER = threading.local()


def set_wait_announcer(announce: Announcer | None) -> None:
    """Bind (or with None, unbind) where `announce_wait` calls in this thread are shown."""
    _ANNOUNCER.announce = announce


def announce_wait(what: str, budget: float) -> None:
    """Show what the step running in this thread now waits for, and its budget (a no-op outside a step)."""
    announce: Announcer | None = getattr(_ANNOUNCER, "announce", None)
    if announce is not None:
        announce(what, budget)


class NotReady(Exception):
    """Raised by a probe: not ready yet; the message becomes the `last` seen state."""


class ReadinessTimeout(StackLabError):
    """The budget ran out; `what`, `budget`, `last` and `attempts` say what was waited for and what was seen."""

    def __init__(
        self,
        what: str,
        budget: float,
        last: str,
        attempts: int,
        *,
        hint: str | None = None,
        resource: str | None = None,
    ) -> None:
        super().__init__(
            f"timed out after {budget:g}s waiting for {what}; last: {last} ({attempts} attempts)",
            hint=hint,
            resource=resource,
        )
        self.what = what
        self.budget = budget
        self.last = last
        self.attempts = attempts


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, NotReady):
        return first or "not ready"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def wait_until(
    probe: Probe,
    *,
    budget: float,
    interval: float,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (NotReady,),
    hint: str | None = None,
    resource: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Poll `probe` until it returns true; return the seconds it took.

    The probe is always tried at least once, and once more right at the deadline, so a budget is never lost
    to a long sleep. Raises ReadinessTimeout when the budget is spent.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget!r}")
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    start = clock()
    deadline = start + budget
    last = "not tried"
    attempts = 0
    while True:
        attempts += 1
        try:
            if probe():
                elapsed = clock() - start
                LOG.debug("ready after %.2fs (%d attempts): %s", elapsed, attempts, what)
                return elapsed
            last = "not ready"
        except retry_on as exc:
            last = _describe(exc)
        now = clock()
        if now >= deadline:
            raise ReadinessTimeout(what, budget, last, attempts, hint=hint, resource=resource)
        sleep(min(interval, deadline - now))
