"""exec.parallel.each_at_once: every item runs, at once, and the first error in the items' order is raised after
all of them finished."""

from __future__ import annotations

import threading

import pytest

from stacklab.exec.parallel import each_at_once


def test_every_item_runs_at_once_and_the_first_error_comes_after_all() -> None:
    barrier = threading.Barrier(3, timeout=10)  # only passes when the three run at the same time
    done: list[str] = []

    def action(item: str) -> None:
        barrier.wait()
        if item != "b":
            raise ValueError(item)
        done.append(item)

    with pytest.raises(ValueError, match=r"^a$"):
        each_at_once(action, ["a", "b", "c"])
    assert done == ["b"]
    each_at_once(action, [])  # nothing to do is no error
