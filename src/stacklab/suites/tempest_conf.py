"""tempest.conf for a lab, and tempest's results folded per service area. Pure: no I/O, no network.

`render` writes the configuration Debian's tempest 33 (Zed) reads: the admin login and keystone v3 URI, which
services the lab deploys (from its service outputs), the image and flavors the suite made, the Zed microversions,
the volume backends, and the features this lab's cloud has. Features the lab does not deploy are switched off
here, so tempest skips their tests with its own reason; what tempest cannot learn from its configuration is in
suites/tempest/exclude.txt with a reason per line.

Networks: guests get a port on a VXLAN project network (neutron's linuxbridge, DHCP and metadata agents), but a
lab without an external network runs no L3 agent, so there are no routers and no floating IPs. tempest's dynamic
credentials would make a network, a subnet *and a router* for each project (they come together), so
`create_isolated_networks = false` and every server tempest boots goes on the one shared network the suite makes
(`[compute] fixed_network_name`). The network extensions are neutron's own list (GET /v2.0/extensions), so
tempest skips what this neutron lacks.
`[validation] run_validation = false`: no test logs into a guest. tempest's validation is SSH (a login, then shell
commands) to a fixed address from where tempest runs, or to a floating IP; the suites' guest has an sshd only when
built with `--ssh` (`validation` holds the [validation] tempest would then need), and the host running tempest
has no route into a project network (it lives only in VXLAN between the lab's nodes), so the tests that need it
are skipped by tempest itself, with its reason.

A lab with an external network (`openstack.neutron.external`: neutron's L3 agent, routers and floating IPs on a
lab bridge the host has an address on) changes that (`TempestCloud.external_network_id`): the suite plugs a router
between its shared network and the external network, `[network] public_network_id`/`floating_network_name` name
the external network, `[network-feature-enabled] floating_ips = true`, and `[validation]` is `validation
("floating")`: tempest gives each server it validates a floating IP and logs into the suites' `--ssh` guest
through it from the host. `create_isolated_networks` stays false: with it tempest would make a network, a subnet
and a router for every test class's project, each router a namespace and NAT rules the L3 agent sets up through
its privsep helpers on a 2-core host; one router for the shared network gives every server the same way out.
(Not yet run in a lab.)

`parse_junit` reads the JUnit XML subunit2junitxml makes of a tempest run, and `by_area` groups it by the service
area (identity, image, volume, object-storage, network, compute) the suite reports one test for.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The API versions of Zed: the newest microversions tempest may ask for (nova 2.93, cinder 3.70).
COMPUTE_MAX_MICROVERSION = "2.93"
VOLUME_MAX_MICROVERSION = "3.70"

# The lab's service name -> tempest's [service_available] key.
SERVICES = {"glance": "glance", "cinder": "cinder", "swift": "swift", "nova": "nova", "neutron": "neutron"}
NOT_DEPLOYED = ("heat", "horizon", "ironic", "octavia", "designate", "manila", "barbican", "aodh", "ceilometer")

# tempest test id prefix -> the area the suite reports (the order is the report's).
AREAS = {
    "identity": "tempest.api.identity.",
    "image": "tempest.api.image.",
    "volume": "tempest.api.volume.",
    "object-storage": "tempest.api.object_storage.",
    "network": "tempest.api.network.",
    "compute": "tempest.api.compute.",
}
SCENARIO = "tempest.scenario."


@dataclass(frozen=True)
class TempestCloud:
    """What tempest.conf says about one lab's cloud."""

    auth_url: str  # keystone v3, e.g. http://172.29.236.10:5000/v3
    region: str
    admin_password: str
    services: frozenset[str]  # the lab's services among SERVICES
    image_ref: str
    flavor_ref: str
    flavor_ref_alt: str
    volume_backends: tuple[str, ...]
    swift_apis: tuple[str, ...]  # the middlewares Swift's /info announces (tempest skips the others)
    workspace: str  # the tempest workspace (lock and log paths)
    network_name: str = ""  # the shared project network tempest's servers boot on ("": the lab has no neutron)
    network_extensions: tuple[str, ...] = ()  # neutron's extension aliases, as its API lists them
    # the lab's external network (floating IPs; "": none): its id and name in neutron
    external_network_id: str = ""
    external_network_name: str = ""
    image_formats: tuple[str, ...] = ("raw", "qcow2", "aki", "ari", "ami")
    # The image scenario tests upload themselves (minimum basic): a host file of the guest's 1 MiB root disk, and
    # the properties that boot it (its kernel and ramdisk images, the command line); "": tempest's default (cirros)
    scenario_img_file: str = ""
    scenario_img_properties: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # section -> key -> value, last word


# Seconds tempest waits for a server or volume to reach its state, and for one API answer: a TCG guest's spawn
# under host load took over 300 s (tempest's default) on the tempest lab with a VM lab booting beside it.
BUILD_TIMEOUT = 600
HTTP_TIMEOUT = 180


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _common(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """Logging, locks and the admin credentials tempest makes its own projects with."""
    return {
        "DEFAULT": {"log_file": f"{cloud.workspace}/tempest.log", "use_stderr": "false"},
        # A TCG lab on 2 shared cores answers slowly under load: neutron took over 60 s (tempest's default) to add
        # a router interface while a VM lab booted beside it, and tempest's retry of the PUT then failed the test.
        "service-clients": {"http_timeout": str(HTTP_TIMEOUT)},
        "oslo_concurrency": {"lock_path": f"{cloud.workspace}/lock"},
        "auth": {
            # Every test class gets its own project and users, deleted after it: the lab baseline stays clean.
            "use_dynamic_credentials": "true",
            # No network, subnet and router per project: tempest makes the three together, and a lab without an
            # external network runs no L3 agent (no router API); one with it would pay a router namespace per test
            # class. Servers go on the shared network of [compute] fixed_network_name instead (routed to the
            # external network by the suite when the lab has one).
            "create_isolated_networks": "false",
            "admin_username": "admin",
            "admin_password": cloud.admin_password,
            "admin_project_name": "admin",
            "admin_domain_name": "Default",
            "default_credentials_domain_name": "Default",
        },
    }


def _identity(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """keystone: its v3 API and the features the lab's keystone has."""
    return {
        "identity": {
            "uri_v3": cloud.auth_url,
            "auth_version": "v3",
            "region": cloud.region,
            "v3_endpoint_type": "public",
        },
        "identity-feature-enabled": {
            "api_v2": "false",
            "trust": "true",
            "application_credentials": "true",
            "access_rules": "true",
            "project_tags": "true",
            # keystone runs with its defaults: no password rules, no per-domain drivers, no external IdP
            "security_compliance": "false",
            "domain_specific_drivers": "false",
        },
    }


def _availability(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """Which services tempest may test: the lab's, and those it does not deploy switched off."""
    has = cloud.services.__contains__
    return {
        "service_available": {
            **{key: _flag(has(name)) for name, key in SERVICES.items()},
            **{name: "false" for name in NOT_DEPLOYED},
        },
    }


def _compute(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """nova: image and flavors stacklab uploads, microversions, what the lab's guests can do."""
    networked = bool(cloud.network_name)
    network = {"fixed_network_name": cloud.network_name} if networked else {}
    return {
        "compute": {
            **network,
            "image_ref": cloud.image_ref,
            "image_ref_alt": cloud.image_ref,
            "flavor_ref": cloud.flavor_ref,
            "flavor_ref_alt": cloud.flavor_ref_alt,
            "region": cloud.region,
            "min_microversion": "2.1",
            "max_microversion": COMPUTE_MAX_MICROVERSION,
            "build_timeout": str(BUILD_TIMEOUT),
        },
        "compute-feature-enabled": {
            # With neutron, a guest has a port on the shared network (hot-plugged NICs too) and nova-api-metadata
            # answers through neutron's metadata agent. No graphical or serial console is deployed, no config
            # drive (no genisoimage on the computes), no guest agent to change a password.
            "interface_attach": _flag(networked),
            "metadata_service": _flag(networked),
            "console_output": "true",
            "vnc_console": "false",
            "spice_console": "false",
            "serial_console": "false",
            "config_drive": "false",
            "change_password": "false",
            # Moves between computes are proven by stacklab's evacuation suite; tempest's need shared SSH keys.
            "resize": "false",
            "cold_migration": "false",
            "live_migration": "false",
            "block_migration_for_live_migration": "false",
            "rescue": "false",
            "shelve": "false",
            "suspend": "false",
            "pause": "true",
            "snapshot": "true",
            "attach_encrypted_volume": "false",
            "personality": "false",
        },
    }


def _image(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """glance: the disk formats the lab's store accepts."""
    return {
        "image": {
            "region": cloud.region,
            "disk_formats": ",".join(cloud.image_formats),
            "container_formats": "bare,ami,aki,ari",
        },
        "image-feature-enabled": {"api_v2": "true", "api_v1": "false", "import_image": "false"},
    }


def _volume(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """cinder: the lab's backends and the features it deploys."""
    return {
        "volume": {
            "region": cloud.region,
            "catalog_type": "volumev3",
            "backend_names": ",".join(cloud.volume_backends),
            "min_microversion": "3.0",
            "max_microversion": VOLUME_MAX_MICROVERSION,
            "volume_size": "1",
            "build_timeout": str(BUILD_TIMEOUT),
        },
        "volume-feature-enabled": {
            "multi_backend": _flag(len(cloud.volume_backends) > 1),
            "backup": "false",  # the lab runs no cinder-backup
            "snapshot": "true",
            "clone": "true",
            "manage_volume": "false",
            "manage_snapshot": "false",
            "extend_attached_volume": "false",
        },
    }


def _object_storage(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """Swift: what its /info advertises."""
    return {
        "object-storage": {"region": cloud.region, "operator_role": "member"},
        "object-storage-feature-enabled": {
            "discoverable_apis": ",".join(cloud.swift_apis),
            "container_sync": _flag("container_sync" in cloud.swift_apis),
            # tempest 33's versioned-container test is the legacy X-Versions-Location mode: the proxy's
            # versioned_writes middleware, which /info announces only when allow_versioned_writes is on.
            "object_versioning": _flag("versioned_writes" in cloud.swift_apis),
            "discoverability": "true",
        },
    }


def _network(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """neutron: project networks that the host running tempest cannot reach, the extensions neutron lists; without
    an external network no floating IPs and no SSH validation, with one both (see the module's docstring)."""
    floating = "neutron" in cloud.services and bool(cloud.external_network_id)
    external = (
        {"public_network_id": cloud.external_network_id, "floating_network_name": cloud.external_network_name}
        if floating
        else {}
    )
    conf = {
        "network": {
            "region": cloud.region,
            "project_networks_reachable": "false",
            # VXLAN keeps projects apart: not a single flat provider network all projects share
            "shared_physical_network": "false",
            **external,
        },
        **(validation("floating") if floating else {"validation": {"run_validation": "false"}}),
    }
    if "neutron" in cloud.services:
        extensions = cloud.network_extensions
        conf["network-feature-enabled"] = {
            "api_extensions": ",".join(extensions),
            "floating_ips": _flag(floating),
            "port_security": _flag("port-security" in extensions),
        }
    return conf


# tempest's ways to reach a guest for validation: its fixed address on `network_for_ssh`, or a floating IP
CONNECT_METHODS = ("fixed", "floating")


def validation(connect_method: str, network_name: str = "") -> dict[str, dict[str, str]]:
    """[validation] for a lab whose guests tempest can reach over SSH: with method `floating` for a lab with an
    external network (its floating IPs are on a bridge the host has an address on); `fixed` is not used (no route
    leads from tempest's node into a project network). The guest
    is guest_initrd.py's `--ssh` one: root alone, let in with the keypair nova serves as metadata, bash as the
    shell, so tempest's `set -eu -o pipefail` prologue holds. `network_name` is the network whose fixed address
    tempest connects to (method fixed; floating IPs come from the external network instead)."""
    if connect_method not in CONNECT_METHODS:
        raise ValueError(f"connect_method {connect_method!r}: tempest knows {', '.join(CONNECT_METHODS)}")
    if connect_method == "fixed" and not network_name:
        raise ValueError("connect_method fixed needs the network whose fixed address tempest connects to")
    network = {"network_for_ssh": network_name} if connect_method == "fixed" else {}
    return {
        "validation": {
            "run_validation": "true",
            "connect_method": connect_method,
            **network,
            "auth_method": "keypair",
            "image_ssh_user": "root",
            "image_alt_ssh_user": "root",
            "ip_version_for_ssh": "4",
            # the guest's sshd listens ~20 s after QEMU starts under TCG on an idle host (test_guest_ssh.py); a
            # loaded compute booting several guests takes several times that
            "ssh_timeout": "300",
            "connect_timeout": "60",
            "ping_timeout": "120",
        },
    }


def _scenario(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """The image a scenario uploads itself (test_minimum_basic; tempest's default is devstack's cirros file): the
    suites' guest, a raw root disk booted with the kernel and ramdisk images its properties name."""
    if not cloud.scenario_img_file:
        return {}
    properties = ",".join(f"{key}:{value}" for key, value in cloud.scenario_img_properties.items())
    return {"scenario": {"img_file": cloud.scenario_img_file, "img_disk_format": "raw",
                         "img_container_format": "bare", "img_properties": properties}}  # fmt: skip


def sections(cloud: TempestCloud) -> dict[str, dict[str, str]]:
    """tempest.conf as sections of keys, in the order they are written; the lab's `extra` overrides last."""
    conf: dict[str, dict[str, str]] = {}
    for part in (_common, _identity, _availability, _compute, _image, _volume, _object_storage, _network, _scenario):
        conf.update(part(cloud))
    for section, values in cloud.extra.items():
        conf.setdefault(section, {}).update(values)
    return conf


def render(cloud: TempestCloud) -> str:
    lines: list[str] = []
    for section, values in sections(cloud).items():
        lines += [f"[{section}]", *(f"{key} = {value}" for key, value in values.items()), ""]
    return "\n".join(lines)


def list_file(entries: Iterable[str]) -> list[str]:
    """The regexes of an include/exclude list file: one a line, `#` comments and blank lines dropped."""
    out = []
    for line in entries:
        text = line.split("#", 1)[0].strip()
        if text:
            out.append(text)
    return out


@dataclass(frozen=True)
class Case:
    test_id: str  # tempest's id without the [attributes] suffix
    outcome: str  # passed, failed, skipped
    seconds: float
    message: str = ""


def _test_id(raw: str) -> str:
    """`tempest.api.x.T.test_y[id-...,smoke]` -> without the attributes; a class fixture's failure
    `setUpClass (tempest.api.x.T)` -> `tempest.api.x.T.setUpClass`, so it counts in its area."""
    fixture = re.fullmatch(r"(\w+) \((.+)\)", raw.strip())
    if fixture:
        return f"{fixture.group(2)}.{fixture.group(1)}"
    return raw.split("[", 1)[0]


def parse_junit(xml_text: str) -> list[Case]:
    """The cases of subunit2junitxml's XML. Its classname is the id up to the class; a name with `[...]` carries
    tempest's attributes (id-..., smoke), dropped here."""
    root = ET.fromstring(xml_text)
    cases = []
    for node in root.iter("testcase"):
        classname, name = node.get("classname", ""), node.get("name", "")
        test_id = _test_id(f"{classname}.{name}" if classname else name)
        outcome, message = "passed", ""
        for tag in ("failure", "error"):
            found = node.find(tag)
            if found is not None:
                outcome, message = "failed", (found.get("message") or found.text or "").strip()
        skipped = node.find("skipped")
        if outcome == "passed" and skipped is not None:
            outcome, message = "skipped", (skipped.get("message") or skipped.text or "").strip()
        cases.append(Case(test_id, outcome, float(node.get("time") or 0.0), message))
    return cases


def area_of(test_id: str) -> str | None:
    for area, prefix in AREAS.items():
        if test_id.startswith(prefix):
            return area
    if test_id.startswith(SCENARIO):
        return "scenario"
    return None


@dataclass
class AreaResult:
    passed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ran(self) -> int:
        return self.passed + self.skipped + len(self.failed)


def by_area(cases: Iterable[Case]) -> dict[str, AreaResult]:
    """Counts per area; class-level setUp/tearDown failures (ids without a test_ method) count as failures too."""
    results: dict[str, AreaResult] = {}
    for case in cases:
        area = area_of(case.test_id)
        if area is None:
            continue
        result = results.setdefault(area, AreaResult())
        result.seconds += case.seconds
        if case.outcome == "failed":
            result.failed.append(case.test_id)
        elif case.outcome == "skipped":
            result.skipped += 1
        else:
            result.passed += 1
    return results
