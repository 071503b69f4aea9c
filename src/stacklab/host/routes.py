"""Read-only host probes the planner needs to judge a lab against this host: IPv4 routes, interface owners
(ifalias marks), memory and filesystem sizes. Commands go through the Runner; nothing is changed."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacklab.errors import PlanError
from stacklab.exec.runner import Runner

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class HostRoute:
    dst: ipaddress.IPv4Network
    dev: str | None
    table: str
    type: str
    text: str  # as `ip route` would show it, for messages


def _route_text(entry: dict[str, Any]) -> str:
    parts = [] if entry.get("type", "unicast") == "unicast" else [str(entry["type"])]
    parts.append(str(entry.get("dst")))
    for key in ("gateway", "dev"):
        if entry.get(key):
            parts += ["via" if key == "gateway" else "dev", str(entry[key])]
    if entry.get("table") not in (None, "main"):
        parts += ["table", str(entry["table"])]
    return " ".join(parts)


def parse_routes(text: str) -> list[HostRoute]:
    """Pure: `ip -j -4 route show table all` -> routes (the default route is left out: it is not a subnet)."""
    routes = []
    for entry in json.loads(text or "[]"):
        dst = str(entry.get("dst", ""))
        if dst in ("", "default"):
            continue
        try:
            network = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue  # not IPv4 (we asked for -4); never fail the plan on a route we cannot read
        routes.append(
            HostRoute(
                dst=network,
                dev=entry.get("dev"),
                table=str(entry.get("table", "main")),
                type=str(entry.get("type", "unicast")),
                text=_route_text(entry),
            )
        )
    return routes


def read_routes(runner: Runner) -> list[HostRoute]:
    result = runner.run(["ip", "-j", "-4", "route", "show", "table", "all"], timeout=PROBE_TIMEOUT, check=False)
    if not result.ok:
        raise PlanError(f"cannot read the host's routes: {result.stderr.strip()[-300:]}", hint="is iproute2 installed?")
    return parse_routes(result.stdout)


def parse_ifaliases(text: str) -> dict[str, str]:
    """Pure: `ip -j link show` -> {ifname: ifalias} for interfaces that carry one (our ownership marks)."""
    return {str(link["ifname"]): str(link["ifalias"]) for link in json.loads(text or "[]") if link.get("ifalias")}


def read_ifaliases(runner: Runner) -> dict[str, str]:
    result = runner.run(["ip", "-j", "link", "show"], timeout=PROBE_TIMEOUT, check=False)
    return parse_ifaliases(result.stdout) if result.ok else {}


def mem_total_mib(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def filesystem_mib(path: Path) -> tuple[Path, int] | None:
    """(the existing directory looked at, total size in MiB) of the filesystem that holds `path`."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                stat = os.statvfs(folder)
            except OSError:
                return None
            return folder, stat.f_blocks * stat.f_frsize // (1024 * 1024)
    return None
