"""Container nodes need inotify instances: a lab that would exhaust root's budget is refused at plan time."""

from __future__ import annotations

import os
from pathlib import Path

from stacklab.host.inotify import PER_CONTAINER, InotifyUse, inotify_problem, inotify_use


def fake_proc(tmp_path: Path, limit: int, processes: dict[str, tuple[int, str]]) -> Path:
    """A /proc with `limit` and, per pid, (inotify fds, cgroup text)."""
    proc = tmp_path / "proc"
    (proc / "sys/fs/inotify").mkdir(parents=True)
    (proc / "sys/fs/inotify/max_user_instances").write_text(f"{limit}\n")
    for pid, (count, cgroup) in processes.items():
        fd = proc / pid / "fd"
        fd.mkdir(parents=True)
        (proc / pid / "cgroup").write_text(cgroup)
        for i in range(count):
            os.symlink("anon_inode:inotify", fd / str(i))
        os.symlink("/dev/null", fd / "99")
    return proc


def test_root_instances_are_counted_and_the_labs_own_containers_left_out(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 128, {
        "1": (3, "0::/init.scope\n"),
        "200": (9, "0::/stacklab/aio-1a2b/storage1/payload\n"),
        "300": (12, "0::/stacklab/other-9f9f/infra1/payload\n"),
    })  # fmt: skip
    me = os.getuid()  # the fake /proc's entries are the test's own
    assert inotify_use(proc, uid=me) == InotifyUse(128, 24)
    assert inotify_use(proc, skip_cgroup="stacklab/aio-", uid=me) == InotifyUse(128, 15)
    assert inotify_use(proc, uid=me + 1) == InotifyUse(128, 0)  # another user's instances are not root's budget


def test_a_lab_beyond_the_budget_is_refused_with_the_setting_to_raise() -> None:
    assert inotify_problem(InotifyUse(128, 20), 6) is None  # 20 + 6 * 13 = 98
    problem = inotify_problem(InotifyUse(128, 100), 6)
    assert problem is not None
    assert f"need about {6 * PER_CONTAINER} inotify instances" in problem
    assert "root holds 100 of fs.inotify.max_user_instances = 128" in problem
    assert "sysctl -w fs.inotify.max_user_instances=1024" in problem
    assert inotify_problem(InotifyUse(128, 127), 0) is None  # VM-only labs spend none
    assert inotify_problem(None, 6) is None  # /proc could not say: no refusal on a guess


def test_this_host_reads() -> None:
    use = inotify_use()
    assert use is not None and use.limit > 0 and use.used >= 0
