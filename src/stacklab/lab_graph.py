"""A picture of a lab for people: bridges, nodes, storage targets and services in Graphviz DOT.

Built from the expanded plan (what `up` will create), not from the host: a trainer can draw a lab before it
exists. `stacklab graph` renders it with Graphviz's `dot` for svg/png; the DOT text itself needs nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Resource

FORMATS = ("dot", "svg", "png")
DOT_TIMEOUT = 60.0
_STORAGE_KINDS = ("ceph", "iscsi", "nfs", "lvm")
_STYLE = {
    "bridge": 'shape=ellipse, style=filled, fillcolor="#dbe9f6"',
    "node": 'shape=box, style="rounded,filled", fillcolor="#f2f2f2"',
    "storage": 'shape=cylinder, style=filled, fillcolor="#fde9c9"',
    "service": 'shape=component, style=filled, fillcolor="#dcf0dc"',
}


class GraphvizMissing(StackLabError):
    """`dot` is not installed (svg/png need it; `--format dot` does not)."""

    exit_code = 2


def _q(text: str) -> str:
    """A DOT string literal (JSON escaping is valid DOT escaping for quotes, backslashes and newlines)."""
    return json.dumps(text, ensure_ascii=False)  # DOT reads UTF-8 and has no \u escapes


def _label(*lines: str) -> str:
    return _q("\n".join(line for line in lines if line))


def _bridge(resource: Resource) -> str:
    spec = resource.spec
    mtu = f"mtu {spec['mtu']}" if spec.get("mtu") and spec.get("mtu") != 1500 else ""
    vlan = f"vlan {spec['vlan']}" if spec.get("vlan") else ""
    extra = ", ".join(x for x in (mtu, vlan) if x)
    return _label(f"network {resource.name}", f"{spec.get('ifname', '')} {spec.get('cidr', '')}".strip(), extra)


def _node(resource: Resource) -> str:
    spec = resource.spec
    roles = ", ".join(spec.get("roles") or ())
    size = f"{spec.get('cpus', '?')} CPU, {spec.get('memory_mib', '?')} MiB"
    return _label(resource.name, f"{spec.get('kind', '')} · image {spec.get('image', '')}", size, roles)


def _storage(resource: Resource) -> str:
    spec = resource.spec
    impl = str(spec.get("implementation", ""))
    title = f"{resource.kind} {resource.name}" + (f" ({impl})" if impl else "")
    details: list[str] = []
    if resource.kind == "iscsi":
        details.append(f"portal {spec.get('portal', '')}")
        details.extend(f"LUN {t['name']}: {t['backing']}, {t['size_mib']} MiB" for t in spec.get("targets", ()))
    elif resource.kind == "nfs":
        details.append(f"{spec.get('address', '')} → {spec.get('clients', '')}")
        details.extend(f"{e['path']} ({e['size_mib']} MiB)" for e in spec.get("exports", ()))
    elif resource.kind == "ceph":
        details.append(f"pools {', '.join(spec.get('pools', ()))}, {spec.get('replicas', '?')} replicas")
        details.append(f"public {spec.get('public_network', '')}")
    elif resource.kind == "lvm":
        details.append(f"VG {spec.get('vg', '')}")
    return _label(title, *details)


def _service(resource: Resource) -> str:
    address = resource.spec.get("address")
    return _label(resource.name, f"on {resource.spec.get('controller', '')}" + (f" ({address})" if address else ""))


def _nodes_of(spec: Mapping[str, Any], deps: Sequence[str]) -> list[str]:
    """The lab nodes a storage or service resource runs on: its hosts, a Ceph cluster's mons, mgrs and OSD
    nodes, else every node it depends on."""
    hosts = spec.get("hosts")
    if hosts:
        return [str(h) for h in hosts]
    if "mons" in spec:
        daemons = [*spec.get("mons", {}), *spec.get("mgrs", ()), *(o["node"] for o in spec.get("osds", ()))]
        return list(dict.fromkeys(str(n) for n in daemons))
    return [dep.split("/", 1)[1] for dep in deps if dep.startswith("node/")]


# Words in a service's config that name a storage kind: cinder `backends: [rbd, nfs, lvm]`, glance `store: rbd`,
# nova `images_type: rbd` / `instances_on: nfs`. Deps alone only order the steps (glance waits for every store).
_USES = {"rbd": "ceph", "ceph": "ceph", "nfs": "nfs", "iscsi": "iscsi", "lvm": "iscsi"}


def _words(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _words(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _words(item)
    elif isinstance(value, str):
        yield value


def _storage_used(resource: Resource) -> list[str]:
    kinds = {_USES[w] for w in _words(resource.spec.get("config", {})) if w in _USES}
    return [d for d in resource.deps if d.split("/", 1)[0] in kinds]


def lab_dot(lab_name: str, resources: Iterable[Resource]) -> str:
    """The DOT text: networks left, nodes in the middle, storage and services on the nodes that run them."""
    all_resources = list(resources)
    ids = {r.id for r in all_resources}
    lines = [
        f"graph {_q(lab_name)} {{",
        "  rankdir=LR; newrank=true;",
        f"  label={_q(f'stacklab lab {lab_name}')}; labelloc=t; fontname=Helvetica;",
        "  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];",
    ]
    for r in all_resources:
        if r.kind == "bridge":
            lines.append(f"  {_q(r.id)} [label={_bridge(r)}, {_STYLE['bridge']}];")
        elif r.kind == "node":
            lines.append(f"  {_q(r.id)} [label={_node(r)}, {_STYLE['node']}];")
            for nic in r.spec.get("nics", ()):
                bridge = f"bridge/{nic.get('network')}"
                if bridge in ids:
                    lines.append(f"  {_q(bridge)} -- {_q(r.id)} [label={_q(str(nic.get('address') or ''))}];")
        elif r.kind in _STORAGE_KINDS:
            lines.append(f"  {_q(r.id)} [label={_storage(r)}, {_STYLE['storage']}];")
            serving = [r.name] if f"node/{r.name}" in ids else _nodes_of(r.spec, r.deps)
            lines.extend(f"  {_q('node/' + n)} -- {_q(r.id)} [style=bold];" for n in serving)
            clients = [d for d in r.deps if d.startswith("node/") and d.split("/", 1)[1] not in serving]
            lines.extend(f"  {_q(r.id)} -- {_q(c)} [style=dashed, label=client];" for c in clients)
        elif r.kind == "service":
            lines.append(f"  {_q(r.id)} [label={_service(r)}, {_STYLE['service']}];")
            lines.extend(f"  {_q('node/' + n)} -- {_q(r.id)};" for n in _nodes_of(r.spec, r.deps))
            used = _storage_used(r)
            lines.extend(f"  {_q(r.id)} -- {_q(u)} [style=dashed, color=gray40, label=uses];" for u in used)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str, output: Path, runner: Runner) -> None:
    """Write `output` as svg or png with Graphviz's `dot` (`-o`: png is binary, the runner's output is text)."""
    if shutil.which("dot") is None:
        raise GraphvizMissing(
            f"--format {fmt} needs Graphviz's `dot`, which is not installed",
            hint="apt-get install graphviz (scripts/setup.sh installs it), or use --format dot",
        )
    runner.run(["dot", f"-T{fmt}", "-o", str(output)], input=dot_text, timeout=DOT_TIMEOUT, check=True)
