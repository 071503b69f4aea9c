"""Suite `tempest`: OpenStack's own integration tests (Debian's tempest 33, for Zed) against the lab's cloud.

Tempest runs on the host, as an operator's workstation or a refstack-style external tester would: the host has an
address on br-mgmt and reaches the APIs the lab publishes there, while lab nodes have no route outside and carry
only their images' packages (installing tempest into an image would rebuild it and make every running lab plan a
replace). The suite skips, with the reason, when tempest is not installed (scripts/setup.sh installs it).

The suite uploads the suites' test guest (suites/guest.py, a bootable kernel + initramfs) and makes two flavors
and, when the lab has neutron, a shared VXLAN network with a DHCP subnet that tempest's servers get their port on
(the lab has no L3 agent, so tempest cannot make a network and router per project: tempest_conf.py), reads
neutron's extension list, writes tempest.conf (suites/tempest_conf.py: the lab's services, credentials and
features; 0600, the admin password never on argv) into a tempest workspace under the lab's state
(verify/tempest/), runs the subset (suites/tempest/include-<subset>.txt minus exclude.txt, concurrency 1) and
deletes the image, flavors and network (it fails when neutron still has a port on that network other than the
DHCP agent's: something tempest booted was left). Tempest deletes what it made itself (dynamic credentials); the
lab-baseline plugin checks that.

A lab with an external network (service/neutron's `external_network` output; openstack.neutron.external) gets
more (run on labs/tempest.yml at stop 24): the uploaded guest is the `--ssh` one (dropbear, root let in with the
instance's keypair), the suite plugs a router between its shared network and the external network (removed before the
network is deleted), and tempest.conf names the external network and turns floating IPs and SSH validation on
(tempest_conf.py): tempest logs into its servers from the host through their floating IPs.

STACKLAB_TEMPEST_SUBSET picks the subset: `ci` (default, the smoke API tests: a few minutes), `scenario` (the
storage scenarios that log into their servers: a lab with an external network) or `full` (every API test of the six
areas: the nightly run). The results, converted by subunit2junitxml, are kept beside verify's
report as verify/tempest-<time>.xml, and folded into one test per service area that fails naming the failed
tempest tests, with the counts as evidence.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from stacklab.exec.atomic import write_atomic
from stacklab.exec.runner import LocalRunner, Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import guest_image
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import admin_auth, service
from stacklab.suites.os_client import call, login_catalog
from stacklab.suites.tempest_conf import AREAS, SERVICES, AreaResult, TempestCloud, by_area, parse_junit, render

SUBSET_ENV = "STACKLAB_TEMPEST_SUBSET"
SUBSETS = {"ci": 1800, "scenario": 2 * 3600, "full": 4 * 3600}  # subset -> tempest run timeout, seconds
COMPUTE_API = {"Content-Type": "application/json", "OpenStack-API-Version": "compute 2.1"}
FLAVORS = ({"ram": 128, "vcpus": 1, "disk": 1}, {"ram": 192, "vcpus": 1, "disk": 1})
NETWORK_API = {"Content-Type": "application/json"}
# tempest's servers' subnet: it lives only on the VXLAN network inside the lab's nodes (the network suite uses .77)
TEMPEST_CIDR = "192.168.78.0/24"
NETWORK_GONE_BUDGET = 120.0  # nova unbinds and neutron deletes a deleted server's port asynchronously
# The tempest run happens in the module fixture, i.e. in the first test's setup: the suites' per-test timeout
# (900 s) would cut it short (the CI subset took 20 min for 37 tests at load 45-68 on 2 cores). The subset's own
# timeout, plus the guest's build and upload, the flavors, the network and the JUnit conversion.
SETUP_BUDGET = 900
pytestmark = pytest.mark.timeout(SUBSETS.get(os.environ.get(SUBSET_ENV, "ci"), max(SUBSETS.values())) + SETUP_BUDGET)


@dataclass(frozen=True)
class TempestRun:
    subset: str
    areas: Mapping[str, AreaResult]
    seconds: float
    junit: Path
    returncode: int
    tail: str  # the end of tempest's output, for a failure message


@contextmanager
def flavors(auth: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Two small flavors for tempest's flavor_ref and flavor_ref_alt, made over the compute API; deleted after."""
    token, urls = login_catalog(dict(auth))
    made: list[str] = []
    try:
        for spec in FLAVORS:
            body = {"flavor": {"name": f"stacklab-tempest-{uuid.uuid4().hex[:8]}", **spec}}
            status, _, data = call("POST", f"{urls['compute']}/flavors", token, json.dumps(body).encode(), COMPUTE_API)
            assert status == 200, f"nova refused the flavor {body}: HTTP {status} {data[:300]!r}"
            made.append(str(json.loads(data)["flavor"]["id"]))
        yield made[0], made[1]
    finally:
        token, _ = login_catalog(dict(auth))  # the first token may have expired during a full run
        for flavor in made:
            call("DELETE", f"{urls['compute']}/flavors/{flavor}", token, headers=COMPUTE_API)


@contextmanager
def compute_refs(
    controller: Runner, auth: Mapping[str, str], has: frozenset[str], *, ssh: bool = False
) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """The image and the two flavors compute tests boot with, and the properties that boot a raw root disk as the
    same guest (scenarios upload their own image); made only when the lab has nova and glance. `ssh`: the guest with
    sshd, which tempest's validation logs into."""
    if not {"nova", "glance"} <= has:
        yield "", "", "", {}
        return
    with guest_image(controller, auth, ssh=ssh) as image, flavors(auth) as (flavor, flavor_alt):
        yield image.image_id, flavor, flavor_alt, image.boot_properties()


def network_extensions(auth: Mapping[str, str]) -> tuple[str, ...]:
    """The aliases of neutron's API extensions, as it lists them (tempest skips tests of the others)."""
    token, urls = login_catalog(dict(auth))
    status, _, data = call("GET", f"{urls['network']}/v2.0/extensions", token)
    assert status == 200, f"neutron's extension list answered HTTP {status}"
    return tuple(sorted(str(e["alias"]) for e in json.loads(data)["extensions"]))


def _network_ports(url: str, token: str, network_id: str) -> list[str]:
    status, _, data = call("GET", f"{url}/v2.0/ports?network_id={network_id}", token)
    assert status == 200, f"neutron's port list answered HTTP {status}"
    return [f"{p['id']} ({p['device_owner'] or 'no owner'})" for p in json.loads(data)["ports"]]


# the ports the suite's own network keeps until the suite deletes it: the DHCP agent's and its router's
OWN_PORTS = ("network:dhcp", "network:router_interface")


def external_network_id(auth: Mapping[str, str], name: str) -> str:
    """The id of the lab's external network (`router:external`, made by `up`) named `name`."""
    token, urls = login_catalog(dict(auth))
    status, _, data = call("GET", f"{urls['network']}/v2.0/networks?name={name}", token)
    assert status == 200, f"neutron's network list answered HTTP {status}"
    found = [n for n in json.loads(data)["networks"] if n.get("router:external")]
    assert len(found) == 1, f"the lab's external network {name}: neutron lists {len(found)} external networks so named"
    return str(found[0]["id"])


@contextmanager
def router_to(url: str, token: str, name: str, subnet_id: str, external_id: str) -> Iterator[None]:
    """A router from the subnet to the external network (its gateway takes an address of the external pool):
    floating IPs of the subnet's ports come through it. Removed afterwards (interface, then router)."""
    body = {"router": {"name": name, "external_gateway_info": {"network_id": external_id}}}
    status, _, data = call("POST", f"{url}/routers", token, json.dumps(body).encode(), NETWORK_API)
    assert status == 201, f"neutron refused tempest's router: HTTP {status} {data[:300]!r}"
    router_id = str(json.loads(data)["router"]["id"])
    plugged = False
    try:
        interface = json.dumps({"subnet_id": subnet_id}).encode()
        status, _, data = call("PUT", f"{url}/routers/{router_id}/add_router_interface", token, interface, NETWORK_API)
        assert status == 200, (
            f"neutron refused the router's interface on tempest's subnet: HTTP {status} {data[:300]!r}"
        )
        plugged = True
        yield
    finally:
        if plugged:
            status, _, data = call("PUT", f"{url}/routers/{router_id}/remove_router_interface", token,
                                   json.dumps({"subnet_id": subnet_id}).encode(), NETWORK_API)  # fmt: skip
            assert status == 200, f"tempest's router {name} kept its interface: HTTP {status} {data[:300]!r}"
        status, _, data = call("DELETE", f"{url}/routers/{router_id}", token)
        assert status == 204, f"tempest's router {name} could not be deleted: HTTP {status} {data[:300]!r}"


@contextmanager
def tenant_network(auth: Mapping[str, str], external_id: str = "") -> Iterator[str]:
    """A shared VXLAN network with a DHCP subnet (made by the admin), the network every server tempest boots gets
    its port on; its name is yielded. With `external_id` (the lab's external network), a router joins the two.
    Deleted afterwards, once only its DHCP (and router) port is left on it; a port of a server tempest left behind
    fails the suite, naming it."""
    token, urls = login_catalog(dict(auth))
    url = f"{urls['network']}/v2.0"
    name = f"stacklab-tempest-{uuid.uuid4().hex[:8]}"
    body = {"network": {"name": name, "shared": True, "admin_state_up": True}}
    status, _, data = call("POST", f"{url}/networks", token, json.dumps(body).encode(), NETWORK_API)
    assert status == 201, f"neutron refused tempest's network: HTTP {status} {data[:300]!r}"
    network_id = str(json.loads(data)["network"]["id"])
    try:
        subnet = {"subnet": {"name": name, "network_id": network_id, "ip_version": 4, "cidr": TEMPEST_CIDR,
                             "enable_dhcp": True}}  # fmt: skip
        status, _, data = call("POST", f"{url}/subnets", token, json.dumps(subnet).encode(), NETWORK_API)
        assert status == 201, f"neutron refused tempest's subnet: HTTP {status} {data[:300]!r}"
        if not external_id:
            yield name
            return
        subnet_id = str(json.loads(data)["subnet"]["id"])
        with router_to(url, token, name, subnet_id, external_id):
            yield name
            token, _ = login_catalog(dict(auth))  # the router goes once tempest's servers (and their ports) are gone
            _wait_for_own_ports(urls["network"], token, network_id)
    finally:
        token, _ = login_catalog(dict(auth))  # the first token may have expired during a full run
        left = _wait_for_own_ports(urls["network"], token, network_id)
        status, _, data = call("DELETE", f"{url}/networks/{network_id}", token)
        assert status == 204, f"tempest's network {name} could not be deleted (HTTP {status}); ports on it: {left}"


def _wait_for_own_ports(url: str, token: str, network_id: str) -> list[str]:
    """Until only the suite's own ports (OWN_PORTS) are left on the network (nova unbinds and neutron deletes a
    deleted server's port asynchronously), at most NETWORK_GONE_BUDGET; the ports left."""
    deadline = time.monotonic() + NETWORK_GONE_BUDGET
    left = _network_ports(url, token, network_id)
    while any(not any(owner in p for owner in OWN_PORTS) for p in left) and time.monotonic() < deadline:
        time.sleep(5.0)
        left = _network_ports(url, token, network_id)
    return left


@contextmanager
def network_refs(
    auth: Mapping[str, str], has: frozenset[str], external_id: str = ""
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(the shared network's name, neutron's extensions); ("", ()) when the lab has no neutron or no nova. With
    `external_id`, the shared network is routed to the lab's external network."""
    if not {"nova", "neutron"} <= has:
        yield "", network_extensions(auth) if "neutron" in has else ()
        return
    with tenant_network(auth, external_id) as name:
        extensions = network_extensions(auth)
        assert not external_id or "router" in extensions, f"an external network, and no router API: {extensions}"
        yield name, extensions


def swift_apis(swift_url: str) -> tuple[str, ...]:
    """The middlewares Swift's proxy announces on /info (tempest skips tests of the others)."""
    status, _, data = call("GET", swift_url.rstrip("/") + "/info")
    assert status == 200, f"Swift's /info answered HTTP {status}"
    return tuple(sorted(key for key in json.loads(data) if key != "swift"))


def list_path(name: str) -> Path:
    return Path(str(resources.files("stacklab.suites").joinpath("tempest", name)))


def _workspace(runner: LocalRunner, workspace: Path) -> None:
    """`tempest init` once per lab (its workspace registry beside it, not in the user's home)."""
    if (workspace / ".stestr.conf").exists():
        return
    workspace.parent.mkdir(parents=True, exist_ok=True)
    registry = workspace.parent / "tempest-workspaces.yaml"
    # in the lab's verify dir: `tempest init` logs to ./tempest.log of wherever it runs
    runner.run(
        ["tempest", "init", "--workspace-path", str(registry), str(workspace)], timeout=120, cwd=workspace.parent
    )


# stestr's stream of the last run, as JUnit: a pipe of two binary streams the Runner (text) never carries. The
# path is the script's $1, not part of the script; nothing secret is in either command.
TO_JUNIT = 'stestr last --subunit | subunit2junitxml --no-passthrough -o "$1"'


def run_tempest(lab: LabContext, cloud: TempestCloud, subset: str) -> TempestRun:
    runner = LocalRunner()
    workspace = Path(cloud.workspace)
    _workspace(runner, workspace)
    if cloud.scenario_img_file:
        write_scenario_root(Path(cloud.scenario_img_file))
    write_atomic(workspace / "etc" / "tempest.conf", render(cloud), mode=0o600)
    argv = ["tempest", "run", "--concurrency", "1", "--include-list", str(list_path(f"include-{subset}.txt")),
            "--exclude-list", str(list_path("exclude.txt"))]  # fmt: skip
    started = time.monotonic()
    result = runner.run(argv, timeout=SUBSETS[subset], check=False, cwd=workspace)
    seconds = time.monotonic() - started
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    junit = lab.state_dir / "verify" / f"tempest-{stamp}.xml"
    converted = runner.run(["sh", "-c", TO_JUNIT, "sh", str(junit)], timeout=120, check=False, cwd=workspace)
    # subunit2junitxml exits 1 when the stream holds a failed test, having written the file all the same
    written = junit.exists() and junit.stat().st_size > 0
    assert converted.returncode in (0, 1) and written, f"no JUnit from tempest's results: {converted.stderr[-800:]}"
    junit.chmod(0o600)
    areas = by_area(parse_junit(junit.read_text()))
    return TempestRun(subset, areas, seconds, junit, result.returncode, (result.stdout + result.stderr)[-3000:])


def write_scenario_root(path: Path) -> None:
    """The guest's root disk as a host file a scenario test uploads (1 MiB of zeros: the guest marks it itself);
    in the workspace, after `tempest init` (which refuses a directory with files)."""
    with path.open("wb") as disk:
        disk.truncate(1 << 20)


@pytest.fixture(scope="module")
def tempest(lab: LabContext) -> TempestRun:
    if shutil.which("tempest") is None or shutil.which("subunit2junitxml") is None:
        pytest.skip("tempest is not installed on the host (apt-get install tempest; scripts/setup.sh installs it)")
    subset = os.environ.get(SUBSET_ENV, "ci")
    assert subset in SUBSETS, f"{SUBSET_ENV}={subset!r}: expected one of {', '.join(SUBSETS)}"
    keystone = service(lab, "keystone")
    auth = admin_auth(lab)
    has = frozenset(name for name in SERVICES if lab.outputs.get(f"service/{name}"))
    swift = lab.outputs.get("service/swift") or {}
    cinder = lab.outputs.get("service/cinder") or {}
    controller = lab.runner(str((lab.outputs.get("service/nova") or keystone)["node"]))
    # the lab's external network (floating IPs from the host): neutron's output, when the lab asks for one
    external = (lab.outputs.get("service/neutron") or {}).get("external_network") or {}
    external_name = str(external.get("name") or "") if "neutron" in has else ""
    external_id = external_network_id(auth, external_name) if external_name else ""
    workspace = lab.state_dir / "verify" / "tempest"
    try:
        with (
            compute_refs(controller, auth, has, ssh=bool(external_id)) as (image_ref, flavor, flavor_alt, boot),
            network_refs(auth, has, external_id) as (network_name, extensions),
        ):
            cloud = TempestCloud(
                auth_url=str(keystone["auth_url"]),
                region=str(keystone.get("region", "RegionOne")),
                admin_password=auth["password"],
                services=has,
                image_ref=image_ref,
                flavor_ref=flavor,
                flavor_ref_alt=flavor_alt,
                volume_backends=tuple(str(b) for b in cinder.get("backends", [])),
                swift_apis=swift_apis(str(swift["url"])) if swift else (),
                workspace=str(workspace),
                network_name=network_name,
                network_extensions=extensions,
                external_network_id=external_id,
                external_network_name=external_name,
                scenario_img_file=str(workspace / "scenario-root.raw") if boot else "",
                scenario_img_properties=boot,
            )
            return run_tempest(lab, cloud, subset)
    finally:
        controller.close()


@pytest.mark.parametrize("area", list(AREAS))
def test_tempest_area_passes(area: str, tempest: TempestRun, evidence: Evidence) -> None:
    result = tempest.areas.get(area, AreaResult())
    evidence("subset", tempest.subset)
    evidence("passed", result.passed)
    evidence("skipped", result.skipped)
    evidence("failed", len(result.failed))
    evidence("seconds", round(result.seconds, 1))
    evidence("tempest_seconds", round(tempest.seconds, 1))
    evidence("junit", str(tempest.junit))
    assert tempest.areas, f"tempest ran no test (exit {tempest.returncode}): {tempest.tail}"
    assert not result.failed, f"{len(result.failed)} tempest {area} tests failed: " + ", ".join(result.failed)
    if result.ran == 0:
        pytest.skip(f"the {tempest.subset} subset has no {area} test for this lab")
    assert result.passed > 0, f"every tempest {area} test was skipped ({result.skipped}): nothing was proven"


def test_tempest_scenarios_pass(tempest: TempestRun, evidence: Evidence) -> None:
    """The scenario tests the subset ran (the storage flows that log into their servers): none failed, and at least
    one passed rather than skipped (without an external network tempest skips every one that logs in)."""
    result = tempest.areas.get("scenario", AreaResult())
    if result.ran == 0:
        pytest.skip(f"the {tempest.subset} subset has no scenario test")
    evidence("passed", result.passed)
    evidence("skipped", result.skipped)
    evidence("failed", len(result.failed))
    evidence("seconds", round(result.seconds, 1))
    assert not result.failed, f"{len(result.failed)} tempest scenario tests failed: " + ", ".join(result.failed)
    assert result.passed > 0, f"every tempest scenario test was skipped ({result.skipped}): nothing was proven"


def test_tempest_run_is_complete(tempest: TempestRun, evidence: Evidence) -> None:
    """tempest's own verdict: a failure outside the six areas (a scenario) fails here, and a non-zero exit with
    no failed test (a crash, a timeout, an import error) too."""
    summary: dict[str, Any] = {a: [r.passed, r.skipped, len(r.failed)] for a, r in tempest.areas.items()}
    evidence("tempest_exit", tempest.returncode)
    evidence("areas_passed_skipped_failed", json.dumps(summary))
    elsewhere = [case for area, r in tempest.areas.items() if area not in AREAS for case in r.failed]
    assert not elsewhere, f"{len(elsewhere)} tempest tests failed: " + ", ".join(elsewhere)
    in_areas = any(r.failed for r in tempest.areas.values())
    assert tempest.returncode == 0 or in_areas, (
        f"tempest exited {tempest.returncode} with no failed test: {tempest.tail}"
    )
