"""One action on several items at once, a thread each: for steps that wait on different nodes (each with its own
SSH connection), where doing them in turn only adds up the waits."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def each_at_once(action: Callable[[T], object], items: Iterable[T], *, at_most: int | None = None) -> None:
    """Run `action` on every item at once (`at_most` of them side by side when given, the rest queued); the first
    error (in the items' order) is raised after all finished."""
    todo = list(items)
    workers = len(todo) if at_most is None else min(at_most, len(todo))
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(action, item) for item in todo]
    errors = [error for future in futures if (error := future.exception()) is not None]
    if errors:
        raise errors[0]
