"""Lab -> resources with dependencies. Pure: host choices (from doctor) come in as a mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stacklab.model.addressing import nic_device, node_addresses
from stacklab.model.cinder_backends import cinder_config, kernel_backends
from stacklab.model.glance_store import glance_config, glance_endpoint_node, glance_nodes
from stacklab.model.lab import Lab, Node
from stacklab.model.nova_instances import nova_instances_config
from stacklab.model.services import build_after
from stacklab.plan.naming import disk_device, owner_marker, stable_mac, veth_name
from stacklab.plan.node_kind import node_kind
from stacklab.plan.resource import Resource

# What the planner assumes when no host report is given (golden plans): our CI host type.
USERSPACE_CHOICES: Mapping[str, str] = {
    "node_kind": "container",
    "accel": "tcg",
    "iscsi_target": "tgt",
    "iscsi_initiator": "libiscsi",
    "nfs_server": "ganesha",
    "nfs_client": "libnfs",
    "ceph": "packages",
    "block_volumes": "file",
    "swift_devices": "tmpfs",
}


def _pick(pinned: str, role: str, choices: Mapping[str, str]) -> str:
    return choices[role] if pinned == "auto" else pinned


def expand(lab: Lab, choices: Mapping[str, str] = USERSPACE_CHOICES) -> list[Resource]:
    """Every resource the lab owns, in a stable order (networks, key, images, nodes, storage, services)."""
    resources: list[Resource] = []
    for net_name, net in lab.networks.items():
        spec: dict[str, Any] = {
            "ifname": lab.bridge_ifname(net_name),
            "cidr": str(net.cidr),
            "address": f"{net.gateway_address}/{net.cidr.prefixlen}",
            "mtu": net.mtu,
            "vlan": net.vlan,
            "marker": owner_marker(lab.name, "bridge", net_name),
        }
        if net.vlan is not None:
            spec["uplink"] = net.uplink
        resources.append(Resource("bridge", net_name, spec))

    if lab.nodes:
        resources.append(Resource("sshkey", lab.name, {"type": "ed25519", "comment": f"stacklab-{lab.name}"}))
    for image_name, image in lab.images.items():
        if any(node.image == image_name for node in lab.nodes.values()):
            resources.append(Resource("image", image_name, {"recipe": image.recipe}))

    addresses = node_addresses(lab)
    for node_name, node in lab.nodes.items():
        resources.append(_node(lab, node_name, node, choices, addresses))
    resources.extend(_storage(lab, choices, addresses))
    resources.extend(_services(lab, addresses, choices))
    return resources


def _node(
    lab: Lab, node_name: str, node: Node, choices: Mapping[str, str], addresses: Mapping[str, Mapping[str, Any]]
) -> Resource:
    """One node: its NICs on the lab bridges (veth names, MACs and addresses fixed here), kind, image and size."""
    prefix = lab.kernel_prefix
    nics = []
    for index, net_name in enumerate(node.nics):
        net = lab.networks[net_name]
        nics.append(
            {
                "network": net_name,
                "device": nic_device(index),
                "bridge": lab.bridge_ifname(net_name),
                "host_ifname": veth_name(prefix, node_name, index),
                "address": f"{addresses[node_name][net_name]}/{net.cidr.prefixlen}",
                "gateway": str(net.gateway_address),
                "mtu": net.mtu,
                "mac": stable_mac(lab.name, node_name, index),
            }
        )
    kind, _ = node_kind(lab, node_name, choices)
    node_spec: dict[str, Any] = {
        "kind": kind,
        "hostname": node_name,
        "image": node.image,
        "cpus": node.cpus,
        "memory_mib": node.memory,
        "disks": [{"name": d.name, "size_mib": d.size} for d in node.disks],
        "nics": nics,
        "roles": list(node.roles),
        "devices": list(node.devices),
        "marker": owner_marker(lab.name, "node", node_name),
    }
    if lab.storage.nfs and lab.storage.nfs.node == node_name:
        node_spec["features"] = ["file-handles"]  # NFS servers export files by handle
    if kind == "vm":
        node_spec["accel"] = choices["accel"]
    deps = (
        *(f"bridge/{n}" for n in node.nics),
        f"image/{node.image}",
        f"sshkey/{lab.name}",
    )
    return Resource("node", node_name, node_spec, tuple(dict.fromkeys(deps)))


def _storage(lab: Lab, choices: Mapping[str, str], addresses: Mapping[str, Mapping[str, Any]]) -> list[Resource]:
    st = lab.storage
    out: list[Resource] = []
    storage_cidr = str(lab.networks["storage"].cidr) if "storage" in lab.networks else None
    if st.ceph:
        mgrs = st.ceph.mgrs or st.ceph.mons[:1]
        nodes = sorted({*st.ceph.mons, *mgrs, *(o.node for o in st.ceph.osds)})
        # Every other node on the storage network is a Ceph client (hypervisors, API hosts, test clients).
        client_nodes = [n for n, node in lab.nodes.items() if n not in nodes and "storage" in node.nics]
        spec: dict[str, Any] = {
            "implementation": _pick(st.ceph.implementation, "ceph", choices),
            "mons": {m: str(addresses[m]["storage"]) for m in st.ceph.mons},
            "mgrs": mgrs,
            "osds": [{"node": o.node, "count": o.count, "size_mib": o.size} for o in st.ceph.osds],
            "pools": list(st.ceph.pools),
            "clients": list(st.ceph.clients),
            "replicas": st.ceph.replicas,
            "public_network": storage_cidr,
            "client_nodes": client_nodes,
            "storage_addresses": {n: str(addresses[n]["storage"]) for n in nodes if "storage" in addresses[n]},
        }
        out.append(Resource("ceph", lab.name, spec, tuple(f"node/{n}" for n in [*nodes, *client_nodes])))
    if st.lvm:
        spec = {"vg": st.lvm.vg, "size_mib": st.lvm.size, "implementation": "lvm"}
        if st.lvm.disk is not None:  # the VG on the node's own disk: no loop file, so no size of its own
            spec = {"vg": st.lvm.vg, "disk": disk_device(st.lvm.disk), "implementation": "lvm"}
        out.append(Resource("lvm", st.lvm.node, spec, (f"node/{st.lvm.node}",)))
    if st.iscsi:
        deps = [f"node/{st.iscsi.node}", *(f"node/{n}" for n in st.iscsi.initiators)]
        if any(t.backing == "lvm" for t in st.iscsi.targets) and st.lvm:
            deps.append(f"lvm/{st.lvm.node}")
        if any(t.backing == "rbd" for t in st.iscsi.targets):
            deps.append(f"ceph/{lab.name}")
        spec = {
            "implementation": _pick(st.iscsi.implementation, "iscsi_target", choices),
            "portal": str(addresses[st.iscsi.node]["storage"]),
            "iqn_prefix": f"iqn.2026-11.dev.stacklab:{lab.name}",
            "chap": st.iscsi.chap,
            "initiators": list(st.iscsi.initiators),
            "targets": [{"name": t.name, "backing": t.backing, "size_mib": t.size} for t in st.iscsi.targets],
            # Where `lvm` and `rbd` backings live and which network reaches the portal: inputs of the driver,
            # so that the spec hash sees them.
            "stores": {
                "vg": st.lvm.vg if st.lvm is not None and st.lvm.node == st.iscsi.node else None,
                "rbd_pool": _rbd_pool(st.ceph.pools) if st.ceph is not None else None,
            },
            "allowed_network": storage_cidr,
        }
        out.append(Resource("iscsi", st.iscsi.node, spec, tuple(deps)))
    if st.nfs:
        spec = {
            "implementation": _pick(st.nfs.implementation, "nfs_server", choices),
            "address": str(addresses[st.nfs.node]["storage"]),
            "versions": list(st.nfs.versions),
            "clients": storage_cidr,
            "exports": [{"name": e.name, "path": e.path, "size_mib": e.size} for e in st.nfs.exports],
        }
        out.append(Resource("nfs", st.nfs.node, spec, (f"node/{st.nfs.node}",)))
    return out


def _rbd_pool(pools: Sequence[str]) -> str | None:
    """The pool RBD-backed iSCSI LUNs go to: `volumes` when the lab has it, else its first pool."""
    return ("volumes" if "volumes" in pools else pools[0]) if pools else None


def _services(
    lab: Lab, addresses: Mapping[str, Mapping[str, Any]], choices: Mapping[str, str] = USERSPACE_CHOICES
) -> list[Resource]:
    os_ = lab.openstack
    if os_ is None:
        return []
    controller = os_.controller or lab.nodes_with_role("controller")[0]
    storage_deps = [f"{kind}/{name}" for kind, name in _storage_ids(lab)]
    out = []
    for service in os_.services:
        hosts = _service_hosts(lab, service, controller)
        needs = [f"service/{n}" for n in build_after(service) if n in os_.services]
        deps = (
            *(f"node/{h}" for h in hosts),
            *needs,
            *(storage_deps if service in ("cinder", "glance", "nova") else ()),
        )
        spec: dict[str, Any] = {
            "release": os_.release,
            "hosts": hosts,
            "controller": controller,
            # APIs, database, queue and cache listen on the controller's management address
            "address": _address(addresses, controller, "mgmt"),
        }
        section = getattr(os_, service, None)
        if section is not None:
            spec["config"] = section.model_dump(mode="json")
        if service == "cinder":  # lvm/nfs backends: their VM volume nodes, addresses, VG and NFS shares
            spec["config"] = cinder_config(lab, addresses)
            # glance_api_servers: the controller's address (the key left out: recorded labs plan no change) unless
            # glance-api runs on other nodes (openstack.glance.nodes), then its first node's
            glance = glance_endpoint_node(lab)
            if glance is not None and glance != controller:
                spec["config"]["glance_address"] = _address(addresses, glance, "mgmt")
        if service == "glance":  # store nfs: its glance-api nodes, their addresses and the share (else as declared)
            spec["config"] = glance_config(lab, addresses)
        if service == "nova":  # each nova node's my_ip: the controller's and the computes' br-mgmt addresses
            spec["addresses"] = {h: str(addresses[h]["mgmt"]) for h in hosts}
            # per-node overrides and the cache manager's timing only when the lab sets them: a lab without them
            # keeps the spec it had (running labs plan no change)
            optional = ("overrides", "image_cache", "instances_export", "cpu_model")
            spec["config"] = {k: v for k, v in spec["config"].items() if v or k not in optional}
            spec["config"] |= nova_instances_config(lab, addresses)  # instances_on nfs: the share and its server
        # neutron: its agents' VXLAN endpoints; cinder with volume nodes: each cinder-volume node's my_ip
        if service == "neutron" or (service == "cinder" and os_.cinder.volume_nodes):
            spec["addresses"] = {h: str(addresses[h]["mgmt"]) for h in hosts}
        # neutron: its VM computes run the Open vSwitch agent (their kernel has openvswitch); the controller keeps
        # the linuxbridge agent whatever its kind, so its DHCP (and L3) agents keep their linuxbridge interface
        # driver. A lab with no VM compute keeps the spec it had (running labs plan no change).
        ovs = [h for h in hosts if service == "neutron" and h != controller and node_kind(lab, h, choices)[0] == "vm"]
        if ovs:
            spec["config"] = {**spec.get("config", {}), "ovs_hosts": ovs}
        if service == "swift":  # the proxy serves on br-mgmt; the storage servers replicate over br-storage
            proxy, *swift_nodes = hosts
            spec["config"] |= {
                "proxy_node": proxy,
                "proxy_address": _address(addresses, proxy, "mgmt"),
                "storage_addresses": {n: _address(addresses, n, "storage") for n in swift_nodes},
            }
            # tmpfs devices are the default and stay unrecorded, so labs up before the choice plan no change
            pinned = spec["config"].pop("device_kind", "auto")
            kind = choices.get("swift_devices", "tmpfs") if pinned == "auto" else pinned
            if kind != "tmpfs":
                spec["config"]["device_kind"] = kind
        out.append(Resource("service", service, spec, tuple(dict.fromkeys(deps))))
    return out


def _address(addresses: Mapping[str, Mapping[str, Any]], node: str, network: str) -> str:
    """The node's address on `network`, else on its first network."""
    return str(addresses[node].get(network) or next(iter(addresses[node].values())))


def _storage_ids(lab: Lab) -> list[tuple[str, str]]:
    st = lab.storage
    ids = []
    if st.ceph:
        ids.append(("ceph", lab.name))
    if st.lvm:
        ids.append(("lvm", st.lvm.node))
    if st.iscsi:
        ids.append(("iscsi", st.iscsi.node))
    if st.nfs:
        ids.append(("nfs", st.nfs.node))
    return ids


def _service_hosts(lab: Lab, service: str, controller: str) -> list[str]:
    assert lab.openstack is not None
    os_ = lab.openstack
    if service == "nova":
        return [controller, *(os_.nova.computes or lab.nodes_with_role("compute"))]
    if service == "neutron":  # its linuxbridge agent runs beside every nova-compute
        return list(dict.fromkeys(_service_hosts(lab, "nova", controller)))
    if service == "glance":  # store nfs: every glance-api node (the controller keeps the database)
        return list(dict.fromkeys([controller, *glance_nodes(lab)]))
    if service == "swift":
        return [os_.swift.proxy or controller, *(os_.swift.nodes or lab.nodes_with_role("swift"))]
    if service == "cinder":
        volume = os_.cinder.volume_node or controller
        kernel = [b.node for b in kernel_backends(lab)]  # cinder-volume of the lvm/nfs backends (VM nodes)
        return list(dict.fromkeys([controller, volume, *os_.cinder.volume_nodes, *kernel]))
    return [controller]
