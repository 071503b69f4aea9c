"""cloud-init NoCloud seeds for lab nodes: one renderer for VMs (a `cidata` ISO) and containers (a seed directory).

The three documents come from the Jinja2 templates in a `cloud-init/` directory (`meta-data`, `user-data`,
`network-config`): the lab tree's, the user's or the built-in ones (model.paths); every rendered document is
parsed back as YAML before anything is written.
The instance-id is derived from the rendered user-data and network-config, so any change to a node's spec, the
lab key, the hosts list or the templates makes cloud-init run its per-instance modules again on the next boot.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from stacklab.exec.atomic import write_atomic

if TYPE_CHECKING:
    from stacklab.drivers.base import DriverContext
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner
from stacklab.model.paths import CLOUD_INIT, search_dirs

LOG = logging.getLogger(__name__)

SEED_FILES = ("meta-data", "user-data", "network-config")
SEED_MODE = 0o644
# Where a container's NoCloud seed goes, relative to its root (or overlay upper dir).
NOCLOUD_SEED_DIR = Path("var/lib/cloud/seed/nocloud")
VOLUME_ID = "cidata"
MGMT_NETWORK = "mgmt"
_ISO_TIMEOUT = 60.0


class SeedError(StackLabError):
    """A seed could not be rendered or written."""


def _is_templates_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in SEED_FILES)


def find_templates_dir(start: Path | None = None) -> Path:
    """The first `cloud-init/` holding all three templates: above `start` (the lab's directory), the user's
    (~/.config/stacklab/cloud-init/), else the built-in templates shipped in the package (model.paths).
    Without `start` the lab tree is searched from the current directory (the node drivers pass no lab dir)."""
    candidates = search_dirs(CLOUD_INIT, start or Path.cwd())
    for candidate in candidates:
        if _is_templates_dir(candidate.path):
            return candidate.path
    looked = ", ".join(str(c.path) for c in candidates) or "nowhere"
    raise SeedError(
        f"no cloud-init/ directory with {', '.join(SEED_FILES)} templates (looked in {looked})",
        hint="reinstall stacklab (the built-in templates are missing) or add the three templates to one of these",
    )


def _yaml_scalar(value: Any) -> str:
    """Jinja filter: a value as a YAML flow scalar (JSON is YAML), so names and keys cannot break documents."""
    return json.dumps(value)


def _environment(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(  # YAML, not HTML: values are quoted by the `yaml` filter
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["yaml"] = _yaml_scalar
    return env


def _mgmt_index(nics: Sequence[Mapping[str, Any]]) -> int:
    """The NIC that carries the default route: the one on the `mgmt` network, else the first."""
    for index, nic in enumerate(nics):
        if nic.get("network") == MGMT_NETWORK:
            return index
    return 0


def _nic_context(nics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    mgmt = _mgmt_index(nics)
    out = []
    for index, nic in enumerate(nics):
        for key in ("device", "mac", "address"):
            if not nic.get(key):
                raise SeedError(f"NIC {index} ({nic.get('network', '?')}) has no {key}")
        out.append(
            {
                "device": str(nic["device"]),
                "mac": str(nic["mac"]).lower(),
                "address": str(nic["address"]),
                "ip": str(ipaddress.ip_interface(str(nic["address"])).ip),  # sshd's ListenAddress (no prefix)
                "mtu": int(nic["mtu"]) if nic.get("mtu") else None,
                "gateway": str(nic["gateway"]) if nic.get("gateway") else None,
                "default_route": index == mgmt,
            }
        )
    return out


def render_nocloud(
    *,
    lab_name: str,
    node_name: str,
    node_spec: Mapping[str, Any],
    public_key: str,
    hosts: Mapping[str, str],
    templates_dir: Path | None = None,
) -> dict[str, str]:
    """{"meta-data", "user-data", "network-config"} for one node, validated (pure apart from reading templates).

    `node_spec` is the node resource's spec (hostname, nics with device/mac/address/gateway/mtu/network);
    `hosts` maps every lab node's name to its management address for /etc/hosts.
    """
    env = _environment(templates_dir or find_templates_dir())
    hostname = str(node_spec.get("hostname") or node_name)
    nics = [dict(n) for n in node_spec.get("nics", [])]
    context: dict[str, Any] = {
        "lab": lab_name,
        "node": node_name,
        "hostname": hostname,
        "public_key": public_key.strip(),
        "hosts": sorted((str(k), str(v)) for k, v in hosts.items()),
        "self_in_hosts": hostname in hosts or node_name in hosts,
        "nics": _nic_context(nics),
    }
    try:
        user_data = env.get_template("user-data").render(context)
        network_config = env.get_template("network-config").render(context)
        digest = hashlib.sha256("\0".join([lab_name, node_name, user_data, network_config]).encode()).hexdigest()[:12]
        context["instance_id"] = f"{lab_name}-{node_name}-{digest}"
        meta_data = env.get_template("meta-data").render(context)
    except jinja2.TemplateError as exc:
        raise SeedError(f"cloud-init template error for node {node_name}: {exc}") from exc
    files = {"meta-data": meta_data, "user-data": user_data, "network-config": network_config}
    validate_seed(files)
    return files


def validate_seed(files: Mapping[str, str]) -> None:
    """Raise SeedError unless the three documents parse as YAML and have the shape cloud-init needs."""
    missing = [name for name in SEED_FILES if name not in files]
    if missing:
        raise SeedError(f"seed lacks {', '.join(missing)}")
    parsed: dict[str, Any] = {}
    for name in SEED_FILES:
        try:
            parsed[name] = yaml.safe_load(files[name])
        except yaml.YAMLError as exc:
            raise SeedError(f"rendered {name} is not valid YAML: {exc}") from exc
        if not isinstance(parsed[name], dict):
            raise SeedError(f"rendered {name} is not a YAML mapping")
    if not files["user-data"].startswith("#cloud-config\n"):
        raise SeedError("rendered user-data does not start with '#cloud-config'")
    if not parsed["meta-data"].get("instance-id"):
        raise SeedError("rendered meta-data has no instance-id")
    if parsed["network-config"].get("version") != 2:
        raise SeedError("rendered network-config is not version 2")


def write_seed_dir(files: Mapping[str, str], dest: Path) -> None:
    """Write the seed files into `dest` (created with its parents), each atomically with mode 0644.

    For containers: dest = <overlay upper dir> / NOCLOUD_SEED_DIR.
    """
    validate_seed(files)
    dest.mkdir(parents=True, exist_ok=True)
    for name in SEED_FILES:
        write_atomic(dest / name, files[name], mode=SEED_MODE)


def iso_tool() -> str | None:
    """genisoimage (package genisoimage) or xorriso (package xorriso), whichever is installed."""
    for tool in ("genisoimage", "xorriso"):
        if shutil.which(tool):
            return tool
    return None


def iso_argv(tool: str, output: Path, sources: list[Path]) -> list[str]:
    if tool == "genisoimage":
        return [
            "genisoimage",
            "-quiet",
            "-output",
            str(output),
            "-volid",
            VOLUME_ID,
            "-joliet",
            "-rock",
            *map(str, sources),
        ]
    return ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(output), "-V", VOLUME_ID, "-J", "-r", *map(str, sources)]


def make_seed_iso(files: Mapping[str, str], dest: Path, runner: Runner) -> None:
    """Write a `cidata` ISO 9660 image (Joliet + Rock Ridge) holding the seed files to `dest`, atomically.

    On failure nothing is left at `dest` (a previous seed there stays as it was) and the temp files are removed.
    """
    validate_seed(files)
    tool = iso_tool()
    if tool is None:
        raise SeedError(
            "neither genisoimage nor xorriso is installed; VM seeds need one of them",
            hint="apt-get install genisoimage",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        sources = []
        for name in SEED_FILES:
            path = work / name
            path.write_text(files[name])
            path.chmod(SEED_MODE)
            sources.append(path)
        output = work / "seed.iso"
        runner.run(iso_argv(tool, output, sources), timeout=_ISO_TIMEOUT)
        output.chmod(SEED_MODE)
        output.replace(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    LOG.debug("wrote NoCloud seed ISO %s with %s", dest, tool)


def public_key_text(value: str) -> str:
    """The sshkey output may be the key text or a path to the .pub file."""
    if value.startswith(("ssh-", "ecdsa-", "sk-")):
        return value.strip()
    return Path(value).read_text().strip()


def lab_hosts(ctx: DriverContext) -> dict[str, str]:
    """Every lab node's management address (the `mgmt` network, else its first NIC), for /etc/hosts."""
    from stacklab.model.addressing import node_addresses

    addresses = node_addresses(ctx.lab)
    out = {}
    for name, node in ctx.lab.nodes.items():
        nets = list(node.nics)
        net = MGMT_NETWORK if MGMT_NETWORK in nets else (nets[0] if nets else None)
        if net is not None and net in addresses[name]:
            out[name] = str(addresses[name][net])
    return out
