"""What suite `caching` reads from glance's and nova's own records, and what it concludes: pure functions over log
text and `stat` lines, so that each conclusion (and the message a broken cache gives) is unit-tested.

- glance-api's access log (eventlet's wsgi line: client address, request, status, bytes, wall seconds) says who
  fetched an image's bytes, from which address, how long it took; its cache loggers (raised to DEBUG by the lab's
  glance config) say whether the bytes came from the store and were teed into the cache, or were a cache hit;
- nova-compute keeps an image as `_base/<sha1 of the image id>` and logs its cache manager's verdicts ("too young
  to remove", "Removing base ... file").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# eventlet.wsgi's default log_format: '%(client_ip)s - - [%(date_time)s] "%(request_line)s" %(status_code)s
# %(body_length)s %(wall_seconds).6f'; client_ip may carry ",<X-Forwarded-For>"
_ACCESS = re.compile(
    r"(?P<client>\d{1,3}(?:\.\d{1,3}){3})(?:,\S*)? - - \[[^\]]*\] "
    r'"GET /v2/images/(?P<image>[0-9a-f-]{36})/file HTTP/1\.[01]" (?P<status>\d{3}) (?P<length>\d+) '
    r"(?P<seconds>\d+(?:\.\d+)?)"
)


@dataclass(frozen=True)
class ImageGet:
    """One download of an image's bytes as glance-api logged it."""

    client: str
    image_id: str
    status: int
    length: int
    seconds: float


def image_gets(log_text: str) -> list[ImageGet]:
    """Every `GET /v2/images/<id>/file` in glance-api's log text, in order."""
    found = []
    for match in _ACCESS.finditer(log_text):
        found.append(
            ImageGet(
                match["client"], match["image"], int(match["status"]), int(match["length"]), float(match["seconds"])
            )
        )
    return found


def cache_events(log_text: str, image_id: str) -> dict[str, int]:
    """How often glance's cache teed the image in from its store (`tee`) and served it itself (`hit`)."""
    return {
        "tee": log_text.count(f"Tee'ing image '{image_id}' into cache"),
        "hit": log_text.count(f"Cache hit for image '{image_id}'"),
    }


def base_name(image_id: str) -> str:
    """nova's base-image cache file name of an image: the sha1 of its id (nova/virt/libvirt/imagecache.py)."""
    return hashlib.sha1(image_id.encode()).hexdigest()


def whole(length: int, size: int) -> bool:
    """Whether a logged download of `length` bytes carried an image of `size` bytes: eventlet counts what it wrote
    on the socket, the status line, headers and chunk framing included (about 1.4 KiB for 8 MiB here)."""
    return size <= length <= size + 4096 + size // 1024


def fetch_problems(gets: Sequence[ImageGet], wanted: Mapping[str, int], client: str) -> list[str]:
    """What is wrong with "`client` downloaded each image of `wanted` (id -> size) from glance exactly once, whole,
    and nobody else downloaded it" (empty: nothing)."""
    problems = []
    for image_id, size in wanted.items():
        mine = [g for g in gets if g.image_id == image_id]
        if not mine:
            problems.append(f"glance logged no download of image {image_id}")
            continue
        ok = [g for g in mine if (g.client, g.status) == (client, 200) and whole(g.length, size)]
        if len(ok) != 1 or len(mine) != 1:
            seen = ", ".join(f"{g.client} HTTP {g.status} {g.length} bytes" for g in mine)
            problems.append(
                f"image {image_id}: expected one download of {size} bytes by {client}, glance logged {seen}"
            )
    return problems


def refetch_problems(gets: Sequence[ImageGet], image_ids: Iterable[str], what: str) -> list[str]:
    """Downloads of `image_ids` that must not have happened (`what`: why not); empty when there were none."""
    ids = set(image_ids)
    return [
        f"{what}, yet glance logged a download of image {g.image_id} by {g.client} (HTTP {g.status}, {g.length} bytes)"
        for g in gets
        if g.image_id in ids
    ]


@dataclass(frozen=True)
class FileStat:
    """`stat -c '%i %Y %s %n'` of one file: inode, mtime (s), size, path."""

    inode: int
    mtime: int
    size: int
    path: str


STAT_FORMAT = "%i %Y %s %n"


def parse_stat(line: str) -> FileStat:
    inode, mtime, size, path = line.strip().split(" ", 3)
    return FileStat(int(inode), int(mtime), int(size), path)


def same_base_problems(before: FileStat, after: FileStat, what: str) -> list[str]:
    """The base file `after` must be the file `before` (same inode and size: not fetched and written again)."""
    if (before.inode, before.size) == (after.inode, after.size):
        return []
    return [
        f"{what}: {after.path} is not the cached file any more (inode {before.inode} -> {after.inode}, size "
        f"{before.size} -> {after.size}): nova fetched and wrote the image again"
    ]


_BOOT = re.compile(r"stacklab-guest: booted (\S+)")
_DISK = re.compile(r"stacklab-guest: disk (written|kept) (stacklab-disk:\S+)")


def console_boots(console: str) -> list[tuple[str, str, str]]:
    """(boot id, written|kept, the disk's mark) of every boot of the suites' guest in its console log."""
    boots = []
    boot_id = ""
    for line in console.splitlines():
        if match := _BOOT.search(line):
            boot_id = match[1]
        elif (match := _DISK.search(line)) and boot_id:
            boots.append((boot_id, match[1], match[2]))
    return boots


def ageing_bound(image_cache: Mapping[str, Any], slack: float) -> float:
    """How long after its last use an unused base image may still be there: its minimum age, then up to two
    cache manager passes (the one that finds it just too young, the next), plus `slack` for a loaded lab."""
    age = float(image_cache.get("remove_unused_original_minimum_age_seconds", 86400))
    return age + 2 * float(image_cache.get("manager_interval", 2400)) + slack


def ageing_problems(
    removed_after: float | None,
    *,
    last_use_age: float,
    image_cache: Mapping[str, Any],
    bound: float,
    log: str,
    path: str,
) -> list[str]:
    """What is wrong with the cache manager's handling of an unused base image: `removed_after` is the seconds
    from the file's last use (its mtime) until it was gone (None: still there after `bound`), `last_use_age` how
    old it already was when its last instance went, `log` nova-compute's log meanwhile."""
    min_age = float(image_cache.get("remove_unused_original_minimum_age_seconds", 86400))
    problems = []
    if removed_after is None:
        problems.append(
            f"{path} was still there {bound:g} s after its last use (remove_unused_base_images with "
            f"remove_unused_original_minimum_age_seconds {min_age:g}, manager_interval "
            f"{image_cache.get('manager_interval')})"
        )
    elif removed_after < min_age - 2:  # the mtime has a 1 s resolution, the poll a few seconds
        problems.append(
            f"{path} was removed {removed_after:.0f} s after its last use, before its minimum age of "
            f"{min_age:g} s (it was {last_use_age:.0f} s old when its last instance went)"
        )
    if removed_after is not None and f"Removing base, swap or ephemeral file: {path}" not in log:
        problems.append(f"{path} is gone but nova-compute's cache manager did not log removing it")
    return problems
