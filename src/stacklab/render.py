"""Human-readable renderings of doctor and status (the --json forms are the machine ones)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out.append((prefix, "-" if value is None else str(value)))


# The kernel paths a storage lab uses -> the HostReport capability that says whether this host's kernel has it.
KERNEL_PATHS = (
    ("LVM (device-mapper)", "device_mapper"),
    ("LIO iSCSI target", "lio_target"),
    ("knfsd NFS server", "nfsd"),
    ("open-iscsi initiator", "iscsi_initiator"),
    ("kernel NFS client", "nfs_client"),
    ("krbd", "rbd"),
)


def render_doctor(report: Any, choices: Mapping[str, Any]) -> str:
    facts: list[tuple[str, str]] = []
    data = report.to_json()
    tools = data.pop("tools", {})
    _flatten("", data, facts)
    width = max(len(k) for k, _ in facts)
    lines = ["Host capabilities:"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in facts]
    missing = sorted(t for t, path in tools.items() if not path)
    present = sorted(t for t, path in tools.items() if path)
    lines.append(f"  tools found:    {', '.join(present) or 'none'}")
    lines.append(f"  tools missing:  {', '.join(missing) or 'none'}")
    lines.append("")
    lines.append("Implementations chosen for this host:")
    role_width = max((len(r) for r in choices), default=4)
    for role, choice in choices.items():
        alt = f" [alternatives: {', '.join(choice.alternatives)}]" if choice.alternatives else ""
        lines.append(f"  {role.ljust(role_width)}  {choice.implementation:10} {choice.reason}{alt}")
    lines.append("")
    lines.append("Kernel paths per node kind (a container shares this host's kernel; a VM node boots its own):")
    path_width = max(len(name) for name, _ in KERNEL_PATHS)
    accel = getattr(choices.get("accel"), "implementation", "tcg")
    for name, field in KERNEL_PATHS:
        capability = getattr(report, field)
        here = "yes" if capability.available else f"no ({capability.detail})"
        lines.append(f"  {name.ljust(path_width)}  container: {here}; vm: yes ({accel})")
    lines.append(
        "  (vm: Debian's cloud kernel in the node images has them all; `kind: auto` makes a node that needs one"
    )
    lines.append("  the host lacks a VM node, and `stacklab plan` says which and why)")
    return "\n".join(lines)


def render_status(lab: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"lab {lab}: nothing recorded (not up)"
    lines = [f"lab {lab}:"]
    width = max(len(r["id"]) for r in rows)
    for row in rows:
        extra = ""
        outputs = row.get("outputs", {})
        if "addresses" in outputs:
            extra = "  " + " ".join(f"{net}={ip}" for net, ip in outputs["addresses"].items())
        elif "ifname" in outputs:
            extra = f"  {outputs['ifname']} {outputs.get('address', '')}"
        if "accel" in outputs:
            extra += f"  accel={outputs['accel']}"
        lines.append(f"  {row['id'].ljust(width)}  {row['state']}{extra}")
        if row.get("error"):
            lines.append(f"    error: {row['error']}")
    return "\n".join(lines)
