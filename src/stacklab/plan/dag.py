"""The dependency graph of resources (graphlib), with a cycle error that names the edge to remove."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

from stacklab.errors import PlanError
from stacklab.plan.resource import Resource


def build_graph(resources: Iterable[Resource]) -> dict[str, tuple[str, ...]]:
    """{id: deps}; a dependency on a resource not in the set is a plan error."""
    graph = {r.id: r.deps for r in resources}
    for rid, deps in graph.items():
        for dep in deps:
            if dep not in graph:
                raise PlanError(f"depends on {dep}, which the lab does not define", resource=rid)
    return graph


def topological_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    sorter = graphlib.TopologicalSorter(graph)
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        edges = " -> ".join(cycle)
        raise PlanError(
            f"dependency cycle: {edges}", hint=f"remove the dependency of {cycle[-2]} on {cycle[-1]}"
        ) from None


def dependents(graph: Mapping[str, Iterable[str]], root: str) -> set[str]:
    """Every resource that (transitively) depends on root."""
    reverse: dict[str, set[str]] = {}
    for rid, deps in graph.items():
        for dep in deps:
            reverse.setdefault(dep, set()).add(rid)
    out: set[str] = set()
    stack = [root]
    while stack:
        for child in reverse.get(stack.pop(), ()):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out
