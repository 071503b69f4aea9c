"""The external network (openstack.neutron.external): the model's refusals (file:line:column, field), what the
server and the controller's agents are told, neutron_external_tool.py against an in-memory neutron API, the
driver's up/observe with the L3 agent, and tempest.conf with floating IPs and SSH validation."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import neutron, neutron_external
from stacklab.drivers.openstack import neutron_agents as agents
from stacklab.drivers.openstack import neutron_external_tool as tool
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.exec.runner import CommandResult
from stacklab.model.errors import LabError
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from stacklab.suites import tempest_conf
from tests.golden_util import check_golden
from tests.unit.lab_util import service_resource
from tests.unit.test_neutron_agents import LAB as NO_EXTERNAL_LAB
from tests.unit.test_neutron_agents import AgentNode
from tests.unit.test_services import ok
from tests.unit.test_tempest import CLOUD

LAB = """\
name: extlab
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.250.0.0/24}
  storage: {bridge: br-storage, cidr: 10.251.0.0/24}
  ext: {bridge: br-ext, cidr: 10.252.0.0/24}
images:
  os: {recipe: openstack-zed}
nodes:
  ctl1: {image: os, nics: {mgmt: {address: 10.250.0.10}, ext: {}}, roles: [controller]}
  cmp1: {image: os, nics: {mgmt: {address: 10.250.0.31}}, roles: [compute]}
  cmp2: {image: os, nics: {mgmt: {address: 10.250.0.32}}, roles: [compute]}
openstack:
  services: [mariadb, rabbitmq, memcached, keystone, glance, placement, neutron, nova]
  neutron:
    external: {network: ext, pool: 10.252.0.100-10.252.0.150}
"""
POOL_LINE = "    external: {network: ext, pool: 10.252.0.100-10.252.0.150}\n"


def refusals(text: str) -> list[str]:
    with pytest.raises(LabError) as info:
        load_lab_text(text, "ext.yml")
    return [str(issue) for issue in info.value.issues]


def test_a_lab_with_an_external_network_is_valid_and_neutron_is_told() -> None:
    lab = load_lab_text(LAB, "ext.yml")
    assert lab.openstack is not None and lab.openstack.neutron is not None
    resource = service_resource(lab, "neutron")
    assert resource.spec["config"] == {"external": {"network": "ext", "pool": "10.252.0.100-10.252.0.150"}}


def test_a_lab_without_one_keeps_neutrons_spec() -> None:
    resource = service_resource(load_lab_text(NO_EXTERNAL_LAB, "netlab.yml"), "neutron")
    assert "config" not in resource.spec


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("network: ext,", "network: wan,"),
            ["ext.yml:15:16: openstack.neutron.external.network: unknown network 'wan' (hint: defined: ext, mgmt, "
             "storage)"],
        ),
        (
            ("pool: 10.252.0.100-10.252.0.150", "pool: 10.252.0.200-10.252.1.10"),
            ["ext.yml:15:30: openstack.neutron.external.pool: 10.252.0.200-10.252.1.10 is not inside ext "
             "(10.252.0.0/24)"],
        ),
        (
            ("pool: 10.252.0.100-10.252.0.150", "pool: 10.252.0.0-10.252.0.5"),
            ["ext.yml:15:30: openstack.neutron.external.pool: 10.252.0.0-10.252.0.5 holds the network or broadcast "
             "address of 10.252.0.0/24",
             "ext.yml:15:30: openstack.neutron.external.pool: 10.252.0.0-10.252.0.5 holds the host's address on ext "
             "(10.252.0.1), the subnet's gateway (hint: start the pool above it)"],
        ),
        (
            ("pool: 10.252.0.100-10.252.0.150", "pool: 10.252.0.5-10.252.0.20"),
            ["ext.yml:15:30: openstack.neutron.external.pool: 10.252.0.5-10.252.0.20 holds ctl1's address on ext "
             "(10.252.0.10) (hint: `auto` addresses are handed out from .10 up: start the pool above the nodes' "
             "addresses)"],
        ),
        (
            ("pool: 10.252.0.100-10.252.0.150", "pool: 10.252.0.150-10.252.0.100"),
            ["ext.yml:15:30: openstack.neutron.external.pool: the range 10.252.0.150-10.252.0.100 ends before it "
             "starts"],
        ),
        (
            ("pool: 10.252.0.100-10.252.0.150", "pool: 10.252.0.100"),
            ["ext.yml:15:30: openstack.neutron.external.pool: '10.252.0.100' is not a range of two IPv4 addresses: "
             "write first-last, e.g. 10.0.3.100-10.0.3.150"],
        ),
        (
            ("ctl1: {image: os, nics: {mgmt: {address: 10.250.0.10}, ext: {}}", "ctl1: {image: os, nics: {mgmt: "
             "{address: 10.250.0.10}}"),
            ["ext.yml:15:16: openstack.neutron.external.network: the controller (ctl1) has no NIC on ext: neutron's "
             "L3 agent there plugs routers into it (hint: add ext to ctl1's nics)"],
        ),
        (
            ("placement, neutron, nova]", "placement]"),
            ["ext.yml:14:3: openstack.neutron: an external network is neutron's: neutron is not in "
             "openstack.services (hint: add neutron to openstack.services, or drop openstack.neutron)"],
        ),
    ],
)  # fmt: skip
def test_each_refusal_names_the_field_with_its_line_and_column(change: tuple[str, str], expected: list[str]) -> None:
    assert change[0] in LAB
    assert refusals(LAB.replace(*change)) == expected


def test_mgmt_or_storage_cannot_be_the_external_network() -> None:
    mgmt = LAB.replace(
        "network: ext, pool: 10.252.0.100-10.252.0.150", "network: mgmt, pool: 10.250.0.100-10.250.0.150"
    )
    assert refusals(mgmt) == [
        "ext.yml:15:16: openstack.neutron.external.network: the external network needs a lab network of its own, not "
        "mgmt: neutron's linuxbridge agent takes the controller's NIC on it into a bridge of neutron's (hint: add a "
        "network, e.g. ext: {bridge: br-ext, cidr: 10.244.30.0/24}, and give the controller a NIC on it)"
    ]
    storage = LAB.replace("network: ext, pool: 10.252.0.100-10.252.0.150", "network: storage, pool: "
                          "10.251.0.100-10.251.0.150").replace("ext: {}}", "storage: {}}")  # fmt: skip
    assert [p for p in refusals(storage) if "of its own" in p] == [
        "ext.yml:15:16: openstack.neutron.external.network: the external network needs a lab network of its own, not "
        "storage: neutron's linuxbridge agent takes the controller's NIC on it into a bridge of neutron's (hint: add "
        "a network, e.g. ext: {bridge: br-ext, cidr: 10.244.30.0/24}, and give the controller a NIC on it)"
    ]


# -- what the server and the agents are told ---------------------------------------------------------------------


def layout(text: str = LAB) -> ServiceLayout:
    return service_layout(service_resource(load_lab_text(text, "ext.yml"), "neutron"), "extlab")


def test_the_server_gets_routers_and_the_flat_physnet_only_with_an_external_network() -> None:
    with_external = neutron.render_conf(layout(), "DB", "RABBIT", "USER")
    assert "service_plugins = router\n" in with_external
    assert with_external.endswith("[ml2_type_flat]\nflat_networks = external\n")
    without = neutron.render_conf(layout(NO_EXTERNAL_LAB), "DB", "RABBIT", "USER")
    assert "service_plugins =\n" in without and "ml2_type_flat" not in without


def test_the_controller_runs_the_l3_agent_on_its_nic_of_the_external_network(tmp_path: Path) -> None:
    plan = layout()
    ctx = DriverContext(lab=load_lab_text(LAB, "ext.yml"), runner=AgentNode(), state_dir=tmp_path)
    external = neutron_external.resolve(ctx, plan)
    assert external is not None
    # ctl1's NICs: mgmt (eth0), ext (eth1); the subnet's gateway is the host's address on br-ext
    assert (external.interface, external.cidr, external.gateway) == ("eth1", "10.252.0.0/24", "10.252.0.1")
    assert external.pool == ("10.252.0.100", "10.252.0.150")
    # the NIC name is the one the node's plan gives cloud-init for that network (plan/expand.py)
    node = next(r for r in expand(ctx.lab, USERSPACE_CHOICES) if r.id == "node/ctl1")
    assert [n["device"] for n in node.spec["nics"] if n["network"] == "ext"] == [external.interface]
    assert agents.agents_of(plan, "ctl1") == (*agents.CONTROLLER_AGENTS, "neutron-l3-agent")
    assert agents.agents_of(plan, "cmp1") == agents.COMPUTE_AGENTS
    controller = agents.render_agent_conf(plan, "ctl1", "RABBIT", "META", external.interface)
    assert "physical_interface_mappings = external:eth1\n" in controller
    assert "force_metadata = true\n" in controller and "enable_metadata_proxy = false\n" in controller
    compute = agents.render_agent_conf(plan, "cmp1", "RABBIT", "META", external.interface)
    assert "physical_interface_mappings =\n" in compute and "force_metadata" not in compute
    # a lab without one: the controller's file as before, no L3 agent
    plain = layout(NO_EXTERNAL_LAB)
    assert agents.agents_of(plain, "ctl1") == agents.CONTROLLER_AGENTS
    before = agents.render_agent_conf(plain, "ctl1", "RABBIT", "META")
    assert "physical_interface_mappings =\n" in before and "force_metadata" not in before
    assert neutron_external.outputs(plain) == {} and neutron_external.resolve(ctx, plain) is None
    assert neutron_external.outputs(plan) == {"external_network": {
        "name": "stacklab-external", "physnet": "external", "lab_network": "ext",
        "pool": ["10.252.0.100", "10.252.0.150"]}}  # fmt: skip


# -- neutron_external_tool.py against an in-memory neutron ---------------------------------------------------------


class FakeNeutronApi:
    """Networks, subnets and ports as neutron's API keeps them (the calls the tool makes, nothing more)."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Any]] = {}
        self.subnets: dict[str, dict[str, Any]] = {}
        self.ports: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str]] = []

    def __call__(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        route, _, query = path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        parts = route.strip("/").split("/")[1:]  # without v2.0
        if method != "GET":
            self.writes.append((method, route))
        if method == "GET":
            items = {"networks": self.networks, "subnets": self.subnets}.get(parts[0])
            listed = list(items.values()) if items is not None else self.ports
            return 200, {parts[0]: [i for i in listed if all(str(i.get(k)) == v for k, v in params.items())]}
        if method == "POST" and parts == ["networks"]:
            network = {"id": str(uuid.uuid4()), **body["network"]}
            self.networks[network["id"]] = network
            return 201, {"network": network}
        if method == "POST" and parts == ["subnets"]:
            subnet = {"id": str(uuid.uuid4()), **body["subnet"]}
            self.subnets[subnet["id"]] = subnet
            return 201, {"subnet": subnet}
        if method == "PUT":
            store = self.networks if parts[0] == "networks" else self.subnets
            store[parts[1]].update(body[parts[0][:-1]])
            return 200, {parts[0][:-1]: store[parts[1]]}
        if method == "DELETE" and parts[0] == "networks":
            if any(p["network_id"] == parts[1] for p in self.ports):
                return 409, {"NeutronError": {"type": "NetworkInUse"}}
            del self.networks[parts[1]]
            self.subnets = {k: s for k, s in self.subnets.items() if s["network_id"] != parts[1]}
            return 204, {}
        raise AssertionError(f"unexpected {method} {path}")


MARKER = "stacklab:extlab:external-network:stacklab-external"
SPEC = {"name": "stacklab-external", "physnet": "external", "cidr": "10.252.0.0/24", "gateway": "10.252.0.1",
        "pool": ["10.252.0.100", "10.252.0.150"], "marker": MARKER}  # fmt: skip


def run(api: FakeNeutronApi, action: str) -> dict[str, list[str]]:
    return tool.handle({"action": action, "network": SPEC}, api)


def test_the_tool_makes_the_network_once_and_corrects_what_neutron_can_change() -> None:
    api = FakeNeutronApi()
    assert run(api, "check") == {"problems": ["the external network stacklab-external is missing"]}
    assert run(api, "ensure") == {"changed": ["network stacklab-external", "subnet 10.252.0.0/24"]}
    (network,) = api.networks.values()
    assert (network["router:external"], network["provider:network_type"], network["provider:physical_network"]) == (
        True, "flat", "external")  # fmt: skip
    (subnet,) = api.subnets.values()
    assert subnet["allocation_pools"] == [{"start": "10.252.0.100", "end": "10.252.0.150"}]
    assert (subnet["gateway_ip"], subnet["enable_dhcp"], subnet["cidr"]) == ("10.252.0.1", False, "10.252.0.0/24")
    writes = len(api.writes)
    assert run(api, "ensure") == {"changed": []} and len(api.writes) == writes, "a second ensure wrote something"
    assert run(api, "check") == {"problems": []}
    subnet["allocation_pools"] = [{"start": "10.252.0.100", "end": "10.252.0.200"}]
    network["router:external"] = False
    problems = run(api, "check")["problems"]
    assert problems == [
        "the external network stacklab-external: router:external is off",
        "the external network stacklab-external: its subnet's allocation_pools is [{'start': '10.252.0.100', "
        "'end': '10.252.0.200'}], not [{'start': '10.252.0.100', 'end': '10.252.0.150'}]",
    ]
    assert len(api.writes) == writes, "check wrote something"
    run(api, "ensure")
    assert run(api, "check") == {"problems": []}


def test_the_tool_refuses_what_neutron_cannot_change_and_a_network_that_is_not_the_labs() -> None:
    api = FakeNeutronApi()
    run(api, "ensure")
    (network,) = api.networks.values()
    network["provider:physical_network"] = "physnet1"
    with pytest.raises(tool.Refused, match=r"provider:physical_network is 'physnet1', not 'external'.*delete"):
        run(api, "ensure")
    network["provider:physical_network"], network["description"] = "external", "made by hand"
    with pytest.raises(tool.Refused, match="is not this lab's"):
        run(api, "ensure")
    with pytest.raises(tool.Refused, match="is not this lab's"):
        run(api, "remove")
    assert len(api.networks) == 1


def test_the_tool_removes_only_an_unused_network() -> None:
    api = FakeNeutronApi()
    run(api, "ensure")
    (network,) = api.networks.values()
    api.ports.append({"id": "p1", "network_id": network["id"], "device_owner": "network:router_gateway"})
    with pytest.raises(tool.Refused, match=r"in use: p1 \(network:router_gateway\)"):
        run(api, "remove")
    api.ports.clear()
    assert run(api, "remove") == {"changed": ["deleted network stacklab-external"]}
    assert not api.networks and not api.subnets
    assert run(api, "remove") == {"changed": []}


# -- the driver: the L3 agent and the network on `up`, read back by observe --------------------------------------


class ExternalNode(AgentNode):
    """A lab node; on the controller the tool runs against `api` (its request arrives on stdin, as on a node)."""

    api: FakeNeutronApi | None = None
    tool_requests: list[dict[str, Any]]

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        if argv[:2] == ("python3", neutron_external.TOOL):
            assert self.api is not None and stdin is not None and neutron_external.TOOL in self.files
            request = json.loads(stdin)
            self.tool_requests.append(request)
            try:
                return ok(json.dumps(tool.handle(request, self.api)) + "\n")
            except tool.Refused as exc:
                return ok(rc=1, stderr=str(exc))
        return super().respond(argv, stdin)


def nodes_and_ctx(tmp_path: Path) -> tuple[dict[str, ExternalNode], DriverContext]:
    nodes = {name: ExternalNode() for name in ("ctl1", "cmp1", "cmp2")}
    for node in nodes.values():
        node.peers, node.tool_requests = dict(nodes), []
    nodes["ctl1"].api = FakeNeutronApi()
    ctx = DriverContext(lab=load_lab_text(LAB, "ext.yml"), runner=nodes["ctl1"], state_dir=tmp_path / "state",
                        node_runner=nodes.__getitem__)  # fmt: skip
    (tmp_path / "state/secrets").mkdir(parents=True)
    (tmp_path / "state/secrets/keystone-admin").write_text("ADMIN-PASSWORD\n")
    return nodes, ctx


def test_up_starts_the_l3_agent_makes_the_network_and_a_second_up_changes_nothing(tmp_path: Path) -> None:
    nodes, ctx = nodes_and_ctx(tmp_path)
    controller, plan = nodes["ctl1"], layout()
    agents.ensure(ctx, controller, plan)
    assert "neutron-l3-agent" in controller.running & controller.enabled
    assert all("neutron-l3-agent" not in nodes[n].running for n in ("cmp1", "cmp2"))
    assert "physical_interface_mappings = external:eth1\n" in controller.files[agents.AGENT_CONF]
    assert "--config-file /etc/neutron/agent.conf.d/50-stacklab.conf" in controller.files[
        agents.dropin_path("neutron-l3-agent")]  # fmt: skip
    api = controller.api
    assert api is not None and len(api.networks) == 1 and len(api.subnets) == 1
    (request,) = controller.tool_requests
    assert request["admin_password"] == "ADMIN-PASSWORD" and request["action"] == "ensure"
    assert not any("ADMIN-PASSWORD" in " ".join(call) for call in controller.calls), "the password on argv"
    assert agents.problems(ctx, controller, plan) == []
    restarts, writes = list(controller.restarts), len(api.writes)
    agents.ensure(ctx, controller, plan)
    assert controller.restarts == restarts and len(api.writes) == writes
    api.networks.clear()
    api.subnets.clear()
    assert agents.problems(ctx, controller, plan) == ["the external network stacklab-external is missing"]
    agents.ensure(ctx, controller, plan)
    assert agents.problems(ctx, controller, plan) == []
    # the lab file drops its external network: the next up stops the L3 agent and removes its drop-in
    ctx.lab = load_lab_text(LAB.replace(POOL_LINE, "").replace("  neutron:\n", ""), "ext.yml")
    plain = layout(LAB.replace(POOL_LINE, "").replace("  neutron:\n", ""))
    agents.ensure(ctx, controller, plain)
    assert "neutron-l3-agent" not in controller.running | controller.enabled
    assert agents.dropin_path("neutron-l3-agent") not in controller.files
    assert agents.problems(ctx, controller, plain) == []
    agents.ensure(ctx, controller, layout())
    agents.remove(ctx, controller, layout())
    assert "neutron-l3-agent" not in controller.running
    assert agents.dropin_path("neutron-l3-agent") not in controller.files


def test_an_l3_agent_that_never_reports_fails_up_naming_it(tmp_path: Path) -> None:
    nodes, ctx = nodes_and_ctx(tmp_path)
    controller = nodes["ctl1"]
    controller.running.update({*agents.CONTROLLER_AGENTS})
    for name in ("cmp1", "cmp2"):
        nodes[name].running.add(agents.L2_AGENT)
    with pytest.raises(Exception, match="missing L3 agent on ctl1"):
        agents.wait_for_agents(ctx, controller, layout(), budget=0.01)


def test_a_refusal_of_the_tool_fails_up_with_its_reason(tmp_path: Path) -> None:
    nodes, ctx = nodes_and_ctx(tmp_path)
    controller = nodes["ctl1"]
    api = controller.api
    assert api is not None
    api.networks["x"] = {"id": "x", "name": "stacklab-external", "description": ""}
    with pytest.raises(Exception, match=r"neutron's external network \(ensure\): network stacklab-external \(x\) "
                       r"exists and is not this lab's"):  # fmt: skip
        agents.ensure(ctx, controller, layout())
    assert agents.problems(ctx, controller, layout())[-1].startswith("the external network could not be read")


# -- tempest.conf --------------------------------------------------------------------------------------------------

EXTERNAL_CLOUD = dataclasses.replace(
    CLOUD,
    external_network_id="9b3c0e4a-0000-4000-8000-000000000004",
    external_network_name="stacklab-external",
    network_extensions=(*CLOUD.network_extensions, "ext-gw-mode", "extraroute", "router"),
)


def test_tempest_conf_with_an_external_network() -> None:
    check_golden("tempest/external.conf", tempest_conf.render(EXTERNAL_CLOUD))
    conf = tempest_conf.sections(EXTERNAL_CLOUD)
    assert conf["network"]["public_network_id"] == "9b3c0e4a-0000-4000-8000-000000000004"
    assert conf["network"]["floating_network_name"] == "stacklab-external"
    assert conf["network-feature-enabled"]["floating_ips"] == "true"
    assert "router" in conf["network-feature-enabled"]["api_extensions"].split(",")
    validation = conf["validation"]
    assert (validation["run_validation"], validation["connect_method"]) == ("true", "floating")
    assert (validation["image_ssh_user"], validation["auth_method"]) == ("root", "keypair")
    assert "network_for_ssh" not in validation
    # one router for the suite's shared network, not a network and router per test class
    assert conf["auth"]["create_isolated_networks"] == "false"
    assert conf["compute"]["fixed_network_name"] == CLOUD.network_name


def test_tempest_conf_without_one_is_unchanged() -> None:
    conf = tempest_conf.sections(CLOUD)
    assert conf["validation"] == {"run_validation": "false"}
    assert conf["network-feature-enabled"]["floating_ips"] == "false"
    assert "public_network_id" not in conf["network"]
    # no neutron: the external network means nothing
    no_neutron = dataclasses.replace(EXTERNAL_CLOUD, services=frozenset({"glance", "nova"}))
    assert tempest_conf.sections(no_neutron)["validation"] == {"run_validation": "false"}


# -- the tempest suite's router between its shared network and the external network -------------------------------


class FakeNetworkHttp:
    """neutron's HTTP API as the suite calls it (os_client.call's signature), with the calls in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.ports: list[dict[str, str]] = []
        self.external = {"id": "EXT-ID", "name": "stacklab-external", "router:external": True}
        self.sent: dict[str, Any] = {}  # path -> the last body POSTed there

    def __call__(self, method: str, url: str, token: str | None = None, body: bytes | None = None,
                 headers: dict[str, str] | None = None, **_: Any) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        path = url.removeprefix("http://ctl:9696/v2.0/")
        self.calls.append((method, path))
        sent = json.loads(body) if body else {}
        if method == "POST":
            self.sent[path] = sent
        answers: dict[tuple[str, str], tuple[int, Any]] = {
            ("POST", "networks"): (201, {"network": {"id": "NET"}}),
            ("POST", "subnets"): (201, {"subnet": {"id": "SUB"}}),
            ("POST", "routers"): (201, {"router": {"id": "RTR", **sent.get("router", {})}}),
            ("GET", "extensions"): (200, {"extensions": [{"alias": a} for a in ("external-net", "router")]}),
            ("GET", "networks?name=stacklab-external"): (200, {"networks": [self.external]}),
            ("GET", "ports?network_id=NET"): (200, {"ports": self.ports}),
            ("DELETE", "routers/RTR"): (204, {}),
            ("DELETE", "networks/NET"): (204, {}),
        }
        if method == "PUT" and path == "routers/RTR/add_router_interface":
            assert sent == {"subnet_id": "SUB"}
            self.ports.append({"id": "P-RTR", "device_owner": "network:router_interface"})
            return 200, {}, b"{}"
        if method == "PUT" and path == "routers/RTR/remove_router_interface":
            self.ports[:] = [p for p in self.ports if p["id"] != "P-RTR"]
            return 200, {}, b"{}"
        status, data = answers[(method, path)]
        return status, {}, json.dumps(data).encode()


def test_the_tempest_suite_routes_its_shared_network_to_the_external_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from stacklab.suites import test_tempest as suite

    http = FakeNetworkHttp()
    monkeypatch.setattr(suite, "call", http)
    monkeypatch.setattr(suite, "login_catalog", lambda _auth: ("TOKEN", {"network": "http://ctl:9696"}))
    has = frozenset({"nova", "neutron"})
    assert suite.external_network_id({}, "stacklab-external") == "EXT-ID"
    with suite.network_refs({}, has, "EXT-ID") as (name, extensions):
        assert name.startswith("stacklab-tempest-") and "router" in extensions
        made = list(http.calls)
    router = next(i for i, c in enumerate(http.calls) if c == ("POST", "routers"))
    assert made[router + 1] == ("PUT", "routers/RTR/add_router_interface")
    assert http.sent["routers"]["router"]["external_gateway_info"] == {"network_id": "EXT-ID"}
    after = http.calls[len(made) :]
    # the router's interface, then the router, then the network (a router port would keep the network)
    order = [after.index(c) for c in [("PUT", "routers/RTR/remove_router_interface"), ("DELETE", "routers/RTR"),
                                      ("DELETE", "networks/NET")]]  # fmt: skip
    assert order == sorted(order)
    # without an external network: no router at all
    plain = FakeNetworkHttp()
    monkeypatch.setattr(suite, "call", plain)
    with suite.network_refs({}, has) as (name, _):
        pass
    assert not any("routers" in path for _, path in plain.calls)
    http.external["router:external"] = False
    monkeypatch.setattr(suite, "call", http)
    with pytest.raises(AssertionError, match="neutron lists 0 external networks"):
        suite.external_network_id({}, "stacklab-external")
