"""A lab file is untrusted input: it cannot crash or hang stacklab, nor make it write outside the lab.

The broken labs in labs/broken/ (golden messages in tests/golden/errors/) cover each refusal with file, line,
column and field; these tests add what a golden file cannot show: time and memory bounds, devices, directories
and FIFOs, the CLI's bug-report line, the renderers' own checks and the plan-time host checks.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from stacklab.cli import EXIT_BUG, main
from stacklab.drivers.storage.nfs.ganesha import render_ganesha_conf
from stacklab.drivers.storage.nfs.knfsd import render_exports
from stacklab.drivers.storage.nfs.types import ExportLayout, NfsLayout
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.host.routes import parse_ifaliases, parse_routes, read_routes
from stacklab.model import LabError, load_lab, load_lab_text
from stacklab.model.load import MAX_BYTES
from stacklab.plan.expand import expand
from stacklab.plan.host_fit import LabNeeds, lab_needs, route_problems, size_problems

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "labs" / "broken"

BASE = """name: hard
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.253.10.0/24}
  storage: {bridge: br-storage, cidr: 10.253.20.0/24}
images:
  base: {recipe: storage}
nodes:
  storage1: {image: base, nics: [mgmt, storage], roles: [storage]}
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def issues(text: str) -> list[str]:
    with pytest.raises(LabError) as info:
        load_lab_text(text, "hard.yml")
    return [f"{i.field}: {i.message}" for i in info.value.issues]


# -- bounded time and memory -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["yaml-billion-laughs", "yaml-deep-nesting", "yaml-recursive-alias"])
def test_alias_bombs_and_deep_nesting_end_fast_in_little_memory(name: str) -> None:
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(LabError):
            load_lab(BROKEN / f"{name}.yml")
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Before: the 344-byte billion laughs took 4 GB in 39 s; 20,000 nested lists and a recursive alias crashed.
    assert elapsed < 10.0 and peak < 100 * 1024 * 1024, (elapsed, peak)  # tracemalloc itself slows it ~5x


def test_dev_zero_is_read_no_further_than_the_cap() -> None:
    start = time.monotonic()
    code, _, err = invoke("validate", "/dev/zero")
    assert code == 2 and "/dev/zero:1:1: (file): larger than" in err
    assert time.monotonic() - start < 5.0
    assert MAX_BYTES == 256 * 1024


@pytest.mark.parametrize(
    "body",
    [
        "networks: [" + "1," * (MAX_BYTES // 2 - 20) + "]\n",
        "networks:\n" + "".join(f"  k{i}: 1\n" for i in range(20_000)),
    ],
    ids=["flow", "block"],
)
def test_a_file_of_many_values_is_refused_before_it_is_all_read(tmp_path: Path, body: str) -> None:
    path = tmp_path / "many.yml"
    path.write_text("name: many\n" + body)
    start = time.monotonic()
    code, _, err = invoke("validate", str(path))
    # Before: a 1 MiB file of this took 42 s and 370 MB; now composing stops at MAX_VALUES.
    assert code == 2 and "the file holds more than 20000 values" in err
    assert time.monotonic() - start < 15.0  # generous: CI shares 2 cores; a dense 1 MiB file took 42 s


def test_a_fifo_nobody_writes_to_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "lab.yml"
    os.mkfifo(fifo)
    code, _, err = invoke("validate", str(fifo))
    assert code == 2 and "the lab file is empty" in err


@pytest.mark.parametrize("command", ["validate", "plan", "graph"])
def test_a_directory_gets_its_name_and_exit_2_not_a_usage_error(tmp_path: Path, command: str) -> None:
    code, _, err = invoke(command, str(tmp_path))
    assert code == 2 and f"{tmp_path}:1:1: (file): is a directory" in err and "Usage:" not in err


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yml"
    path.write_bytes(b"\xef\xbb\xbf" + (ROOT / "labs" / "net-only.yml").read_bytes())
    assert load_lab(path).name == "net-only"


# -- every input: exit 0 or 2, never a traceback -------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.yml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("command", ["validate", "graph"])
def test_every_broken_lab_is_exit_2_without_traceback(path: Path, command: str) -> None:
    code, out, err = invoke(command, str(path))
    assert code == 2, (out, err)
    assert "Traceback" not in out + err and err.startswith("error: invalid lab file")


def test_an_unexpected_exception_is_one_bug_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import stacklab.model

    def boom(_path: object) -> None:
        raise KeyError("proxy")

    monkeypatch.setattr(stacklab.model, "load_lab", boom)
    code, out, err = invoke("validate", str(ROOT / "labs" / "aio.yml"))
    assert code == EXIT_BUG == 70
    assert err.startswith("bug: ") and "KeyError" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_swift_proxy_must_be_a_node_and_graph_no_longer_crashes(tmp_path: Path) -> None:
    text = (ROOT / "labs" / "aio.yml").read_text().replace("\nopenstack:\n", "\nopenstack:\n  swift: {proxy: nosuch}\n")
    assert "openstack.swift.proxy: unknown node 'nosuch'" in issues(text)
    path = tmp_path / "aio.yml"
    path.write_text(text)
    code, _, err = invoke("graph", str(path))
    assert code == 2 and "openstack.swift.proxy" in err


def test_schema_errors_do_not_hide_the_cross_reference_problems() -> None:
    found = issues(
        BASE
        + """  client1: {image: base, nics: [mgmt, storage], memory: lots}
storage:
  iscsi: {node: nosuch, initiators: [client1, ghost]}
"""
    )
    # Before, the schema error alone was reported; now the references are checked too (all problems at once).
    assert "nodes.client1.memory: cannot read 'lots' as a size; write e.g. 512MiB, 4GiB or a number of MiB" in found
    assert "storage.iscsi.node: unknown node 'nosuch'" in found
    assert "storage.iscsi.initiators[1]: unknown node 'ghost'" in found
    # client1 itself was only pruned for its bad size: it is still a known node.
    assert not any("'client1'" in f for f in found)


def test_a_pruned_node_is_not_reported_again_as_unknown() -> None:
    found = issues(
        BASE + "  client1: {image: base, nics: [mgmt, storage], kind: vmm}\nstorage:\n  iscsi: {node: client1}\n"
    )
    assert found == ["nodes.client1.kind: Input should be 'auto', 'vm' or 'container'"]


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("a 400-digit size", "    memory: " + "9" * 400),
        ("a 400-digit quoted size", '    memory: "' + "9" * 400 + '"'),
        ("a 5000-digit integer", "    cpus: " + "9" * 5000),
        ("a NUL escape", '    memory: "1\\0"'),
        ("an unknown tag", "    memory: !foo 1"),
    ],
)
def test_values_that_crashed_the_loader_are_lab_errors(field: str, text: str) -> None:
    lab = BASE.replace("  storage1: {image: base, nics: [mgmt, storage], roles: [storage]}\n", "  storage1:\n")
    lab += "    image: base\n    nics: [mgmt, storage]\n" + text + "\n"
    assert issues(lab), field


# -- the lab file must not write outside the lab -----------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["/", "/etc", "/srv/../etc", "/srv/nfs/../../etc", "/srv/nfs/", "/srv/nfs//x", '/srv/nfs/x"', "/srv/nfs/a\nb",
     "/srv/nfs/a b", "srv/nfs/x", "/srv/nfs/.hidden", "/srv/nfs/x;y"],
)  # fmt: skip
def test_export_paths_are_plain_paths_under_the_export_root(path: str) -> None:
    text = BASE + f"storage:\n  nfs: {{node: storage1, exports: [{{name: e, path: {json.dumps(path)}}}]}}\n"
    assert any(f.startswith("storage.nfs.exports[0].path: ") for f in issues(text))


def test_a_plain_export_path_is_accepted() -> None:
    text = BASE + "storage:\n  nfs: {node: storage1, exports: [{name: e, path: /srv/nfs/lab-1/images_2}]}\n"
    assert load_lab_text(text, "ok.yml").storage.nfs is not None


def _nfs_plan(path: str) -> NfsLayout:
    return NfsLayout("hard", "storage1", "ganesha", "10.0.0.10", (3, 4), "10.0.0.0/24", (ExportLayout("e", path, 1),))


@pytest.mark.parametrize("path", ['/srv/nfs/x";\nEXPORT { Path = "/', "/srv/nfs/a b", "/srv/../etc", "relative"])
def test_renderers_refuse_a_path_that_would_escape_their_file(path: str) -> None:
    # Defence in depth: a spec that never went through the loader (an old state file) still cannot inject.
    with pytest.raises(StackLabError, match="not a plain absolute path"):
        render_ganesha_conf(_nfs_plan(path))
    with pytest.raises(PlanError, match="not a plain absolute path"):
        render_exports(_nfs_plan(path))
    assert 'Path = "/srv/nfs/images";' in render_ganesha_conf(_nfs_plan("/srv/nfs/images"))


@pytest.mark.parametrize("vg", ["../../../../etc/cron.d/x", "vg\nx", "--force", "-vg", ".", "..", "a..b", "vg+1", ""])
def test_lvm_vg_names_follow_lvm_rules(vg: str) -> None:
    text = BASE + f"storage:\n  lvm: {{node: storage1, vg: {json.dumps(vg)}}}\n"
    assert any(f.startswith("storage.lvm.vg: ") for f in issues(text))


@pytest.mark.parametrize("recipe", ["/etc/passwd", "../x", "a/b", "..", "x\ny", ""])
def test_recipes_are_plain_names(recipe: str) -> None:
    text = BASE.replace("recipe: storage", f"recipe: {json.dumps(recipe)}")
    assert any(f.startswith("images.base.recipe: ") for f in issues(text))


@pytest.mark.parametrize("bridge", ["..", ".", "br\tx", "br\nx", "br/x", "br x", "br:x", "-br", "b" * 16])
def test_bridge_names_follow_kernel_ifname_rules(bridge: str) -> None:
    text = BASE.replace("bridge: br-mgmt", f"bridge: {json.dumps(bridge)}, pin_name: true")
    assert any(f.startswith("networks.mgmt.bridge: ") for f in issues(text))


@pytest.mark.parametrize("name", ["node-", "Node", "a_b", "a.b", "a" * 33])
def test_node_names_are_dns_labels(name: str) -> None:
    text = BASE.replace("  storage1: {", f"  {name}: {{")
    assert any(f.startswith(f"nodes.{name}") for f in issues(text))


def test_reserved_ranges_are_refused_and_public_ones_need_allow_public() -> None:
    found = issues(BASE.replace("10.253.20.0/24", "8.8.8.0/24"))
    assert any("8.8.8.0/24 is a public range" in f for f in found)
    lab = load_lab_text(BASE.replace("10.253.20.0/24}", "8.8.8.0/24, allow_public: true}"), "pub.yml")
    assert str(lab.networks["storage"].cidr) == "8.8.8.0/24"
    for cidr in ("0.0.0.0/24", "127.1.0.0/24", "169.254.0.0/24", "224.1.0.0/24", "240.0.0.0/24"):
        assert any("reserved range" in f for f in issues(BASE.replace("10.253.20.0/24", cidr))), cidr


def test_hints_never_recommend_an_option_that_is_refused() -> None:
    # what validate still refuses as unsupported (store rbd/nfs, cinder lvm/nfs and instances_on nfs are built now)
    refused = ("instances_on: rbd",)
    for golden in (ROOT / "tests" / "golden" / "errors").glob("*.txt"):
        hints = [line.partition("(hint: ")[2] for line in golden.read_text().splitlines()]
        assert not [h for h in hints if any(r in h for r in refused)], golden.name


# -- plan-time host checks ----------------------------------------------------------------------------------
IP_ROUTES = json.dumps(
    [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []},
        {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "flags": []},
        {"dst": "10.253.20.0/24", "dev": "OWNBRIDGE", "protocol": "kernel", "scope": "link", "flags": []},
        {"type": "local", "dst": "10.253.20.1", "dev": "OWNBRIDGE", "table": "local", "flags": []},
        {"dst": "10.99.0.0/16", "gateway": "192.0.2.9", "dev": "eth0", "table": "vpn", "flags": []},
    ]
)


def _lab(text: str = BASE) -> object:
    return load_lab_text(text, "hard.yml")


def test_a_cidr_inside_a_host_route_is_refused_with_the_route_named() -> None:
    lab = load_lab_text(BASE.replace("10.253.10.0/24", "192.0.2.128/25, allow_public: true"), "hard.yml")
    routes = parse_routes(IP_ROUTES.replace("OWNBRIDGE", lab.bridge_ifname("storage")))
    problems = route_problems(lab, routes, {})
    assert problems[0].startswith("networks.mgmt.cidr: 192.0.2.128/25 overlaps the host route `192.0.2.0/24 dev eth0`")
    # storage's bridge exists but carries no mark of this lab: its route is someone else's.
    assert any(p.startswith("networks.storage.cidr: 10.253.20.0/24 overlaps") for p in problems)
    vpn = load_lab_text(BASE.replace("10.253.10.0/24", "10.99.3.0/24"), "vpn.yml")
    assert "`10.99.0.0/16 via 192.0.2.9 dev eth0 table vpn`" in route_problems(vpn, routes, {})[0]


def test_the_labs_own_bridge_route_is_not_a_clash_on_a_replan() -> None:
    lab = load_lab_text(BASE, "hard.yml")
    own = lab.bridge_ifname("storage")
    routes = parse_routes(IP_ROUTES.replace("OWNBRIDGE", own))
    links = json.dumps([{"ifname": own, "ifalias": "stacklab:hard:bridge:storage"}, {"ifname": "eth0"}])
    assert route_problems(lab, routes, parse_ifaliases(links)) == []
    other = json.dumps([{"ifname": own, "ifalias": "stacklab:other:bridge:storage"}])
    assert len(route_problems(lab, routes, parse_ifaliases(other))) == 1


def test_routes_are_read_through_the_runner() -> None:
    runner = FakeRunner().expect(["ip", "-j", "-4", "route", "show", "table", "all"], stdout=IP_ROUTES)
    routes = read_routes(runner)
    assert [str(r.dst) for r in routes] == ["192.0.2.0/24", "10.253.20.0/24", "10.253.20.1/32", "10.99.0.0/16"]
    assert runner.calls == [("ip", "-j", "-4", "route", "show", "table", "all")]


def test_absurd_sizes_are_refused_with_the_figures(tmp_path: Path) -> None:
    text = BASE.replace("roles: [storage]}", "roles: [storage], memory: 1000000TiB, disks: [{name: d, size: 1000TiB}]}")
    needs = lab_needs(load_lab_text(text, "big.yml"))
    assert needs == LabNeeds(memory_mib=1000000 * 1024**2, disk_mib=1000 * 1024**2)
    problems = size_problems(needs, 24 * 1024, (tmp_path, 250 * 1024))
    assert problems == [
        "nodes: the lab's nodes ask for 1,024,000,000.0 GiB of memory; this host has 24.0 GiB",
        f"storage/disks: the lab's disks, OSDs, volumes and exports add up to 1,024,000.0 GiB; the filesystem of "
        f"{tmp_path} holds 250.0 GiB in all",
    ]
    assert size_problems(lab_needs(load_lab(ROOT / "labs" / "aio.yml")), 24 * 1024, (tmp_path, 250 * 1024)) == []


def test_every_shipped_lab_still_expands() -> None:
    for path in sorted((ROOT / "labs").glob("*.yml")):
        assert expand(load_lab(path)), path


def _no_host_routes(monkeypatch: pytest.MonkeyPatch, routes: str = "[]") -> None:
    from stacklab.plan import host_fit

    monkeypatch.setattr(host_fit, "read_routes", lambda _runner: parse_routes(routes))
    monkeypatch.setattr(host_fit, "read_ifaliases", lambda _runner: {})


def test_plan_refuses_absurd_memory_before_touching_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_host_routes(monkeypatch)
    path = tmp_path / "big.yml"
    path.write_text(BASE.replace("roles: [storage]}", "roles: [storage], memory: 1000000TiB}"))
    monkeypatch.setenv("STACKLAB_STATE", str(tmp_path / "state"))
    code, _, err = invoke("plan", str(path))
    assert code == 2 and "ask for 1,024,000,000.0 GiB of memory; this host has" in err
    assert not (tmp_path / "state").exists()


def test_plan_refuses_a_cidr_on_a_host_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_host_routes(monkeypatch, IP_ROUTES)
    path = tmp_path / "clash.yml"
    path.write_text(BASE.replace("10.253.10.0/24", "10.99.7.0/24"))
    monkeypatch.setenv("STACKLAB_STATE", str(tmp_path / "state"))
    code, _, err = invoke("plan", str(path))
    assert code == 2 and "networks.mgmt.cidr: 10.99.7.0/24 overlaps the host route `10.99.0.0/16 via" in err
    assert not (tmp_path / "state").exists()


def test_an_invalid_lab_name_does_not_hide_the_other_problems() -> None:
    found = issues(BASE.replace("name: hard", "name: Bad_Name") + "storage:\n  iscsi: {node: nosuch}\n")
    assert found[0].startswith("name: a name is 1-31 lowercase letters")
    assert "storage.iscsi.node: unknown node 'nosuch'" in found


def test_a_bad_list_item_is_dropped_alone_and_later_items_keep_their_place() -> None:
    text = BASE.replace("roles: [storage]}", "roles: [controller, bogus]}") + (
        "storage:\n  iscsi:\n    node: storage1\n    targets:\n      - {name: BAD}\n      - {name: ok, backing: lvm}\n"
    )
    found = issues(text)
    assert "nodes.storage1.roles[1]: Input should be 'controller', 'compute', 'storage', 'swift' or 'client'" in found
    assert any(f.startswith("storage.iscsi.targets[0].name: ") for f in found)
    # The second target keeps index 1 (the first was dropped), and the controller role still counts.
    assert "storage.iscsi.targets[1].backing: an lvm-backed LUN needs storage.lvm on the same node" in found
    assert not any("controller role" in f for f in found)
