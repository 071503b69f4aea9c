"""`up --copies N` makes its copies side by side: every copy's make runs at once (bounded), each in its own thread
(setns is per thread), and a failing copy does not stop the others; its error is raised after all finished."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from stacklab.engine.copies import CopyPlace, make_at_once


def places(n: int) -> list[CopyPlace]:
    return [CopyPlace(Path("/nowhere"), "lab", k) for k in range(2, n + 2)]


def test_copies_are_made_side_by_side_each_in_its_own_thread() -> None:
    barrier = threading.Barrier(3, timeout=10)  # passes only when the three makes run at the same time
    threads: dict[int, int] = {}

    def make(place: CopyPlace) -> None:
        threads[place.index] = threading.get_ident()
        barrier.wait()

    make_at_once(make, places(3))
    assert sorted(threads) == [2, 3, 4] and len(set(threads.values())) == 3


def test_no_more_than_the_bound_at_once() -> None:
    running, most, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def make(_place: CopyPlace) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == 2:
                release.set()
        release.wait(10)
        with lock:
            running -= 1

    make_at_once(make, places(5), at_once=2)
    assert most == 2


def test_a_failing_copy_is_reported_after_the_others_finished() -> None:
    made: list[int] = []

    def make(place: CopyPlace) -> None:
        if place.index == 2:
            raise RuntimeError("copy 2 failed")
        made.append(place.index)

    with pytest.raises(RuntimeError, match="copy 2 failed"):
        make_at_once(make, places(3))
    assert sorted(made) == [3, 4]
