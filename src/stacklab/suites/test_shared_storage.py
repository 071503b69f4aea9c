"""Suite `shared_storage`: OpenStack's file stores on a shared NFS export, proven on the export itself.

glance's `nfs` store (OpenStack-Ansible's storage page: "a shared storage back end (via a file system mount) to
ensure that all glance-api services have access to all images"): every glance-api node has its store directory as
a kernel NFS mount of the lab's export from the NFS server's br-storage address (/proc/mounts on the node: source,
type, and the client address the mount uses); an image uploaded through glance is, byte for byte (sha256), the file
on the export read on the NFS server node itself; with two glance-api nodes an image uploaded through one downloads
through the other, both ways. Each test skips with the reason when the lab has no glance on NFS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.openstack_calls import admin_auth, os_client, service

IMAGE_SIZE = 8 * 1024 * 1024
GLANCE_AT = "/var/tmp/stacklab-suite/glance_at.py"
# Upload to or download from one glance-api by its own URL (not the catalog's endpoint): the admin's token from
# keystone, then the image API of that node. Request on stdin (auth_url, password, url, action, image_id/size).
GLANCE_AT_SCRIPT = """
import hashlib, json, os, sys, urllib.error, urllib.request

def call(method, url, token=None, body=None, ctype=None):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("X-Auth-Token", token)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()

r = json.load(sys.stdin)
user = {"name": "admin", "domain": {"name": "Default"}, "password": r["password"]}
auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}},
                 "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
status, headers, _ = call("POST", r["auth_url"] + "/auth/tokens", body=json.dumps(auth).encode(),
                          ctype="application/json")
if status != 201:
    raise SystemExit(f"keystone refused the admin login: HTTP {status}")
token, url, out = headers["X-Subject-Token"], r["url"], {"url": r["url"]}
if r["action"] == "upload":
    payload = os.urandom(int(r["size"]))
    meta = {"name": "stacklab-shared-storage", "disk_format": "raw", "container_format": "bare",
            "visibility": "private"}
    status, _, data = call("POST", url + "/v2/images", token, json.dumps(meta).encode(), "application/json")
    image_id = json.loads(data)["id"]
    put = call("PUT", f"{url}/v2/images/{image_id}/file", token, payload, "application/octet-stream")[0]
    image = json.loads(call("GET", f"{url}/v2/images/{image_id}", token)[2])
    out.update(image_id=image_id, http=put, status=image["status"], sha256=hashlib.sha256(payload).hexdigest())
elif r["action"] == "download":
    status, _, data = call("GET", f"{url}/v2/images/{r['image_id']}/file", token)
    out.update(http=status, sha256=hashlib.sha256(data).hexdigest(), length=len(data))
elif r["action"] == "delete":
    out.update(http=call("DELETE", f"{url}/v2/images/{r['image_id']}", token)[0])
print(json.dumps(out))
"""


def glance_on_nfs(lab: LabContext) -> Mapping[str, Any]:
    glance = service(lab, "glance")
    if glance.get("store") != "nfs":
        pytest.skip(f"glance's store is {glance.get('store')!r}, not nfs")
    return glance


def nfs_server(lab: LabContext, share: str) -> tuple[str, str]:
    """(node, export path) of `<storage address>:<path>`: the node that has that address on br-storage."""
    address, _, path = share.partition(":")
    for name, node in lab.nodes.items():
        if str(node["addresses"].get("storage", "")).split("/")[0] == address:
            return name, path
    raise AssertionError(f"no node of the lab has the NFS server address {address} on br-storage")


def glance_at(runner: Runner, lab: LabContext, url: str, action: str, **request: Any) -> dict[str, Any]:
    write_node_file(runner, GLANCE_AT, GLANCE_AT_SCRIPT)
    body = {**admin_auth(lab), "url": url, "action": action, **request}
    result = runner.run(["python3", GLANCE_AT], input=json.dumps(body), timeout=600, check=False)
    assert result.ok, f"glance {action} at {url} failed: {result.stderr[-1500:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def proc_mount(runner: Runner, where: str) -> dict[str, str]:
    """The mount at `where` per the node's /proc/mounts: source, type and its options (key=value)."""
    lines = [line.split() for line in runner.run(["cat", "/proc/mounts"], timeout=30).stdout.splitlines()]
    found = [f for f in lines if len(f) > 3 and f[1] == where]
    assert found, f"nothing is mounted at {where}"
    source, _, fstype, options = found[-1][:4]
    pairs = dict(o.split("=", 1) for o in options.split(",") if "=" in o)
    return {"source": source, "type": fstype, **pairs}


def test_glance_store_is_an_nfs_mount_from_the_storage_address_on_every_glance_node(
    lab: LabContext, runners: dict[str, Runner]
) -> None:
    """Each glance-api node's store directory is the kernel NFS mount of the lab's export, from the NFS server's
    br-storage address, made from the node's own br-storage address (clientaddr, NFSv4)."""
    glance = glance_on_nfs(lab)
    share, where = str(glance["share"]), str(glance["mount"])
    server, _path = nfs_server(lab, share)
    storage_address = lab.address(server, "storage").split("/")[0]
    for node in glance["nodes"]:
        mount = proc_mount(runners[node], where)
        assert mount["source"] == share, f"{node}: {where} is mounted from {mount['source']}, not {share}"
        assert mount["type"] in ("nfs", "nfs4"), f"{node}: {where} is {mount['type']}, not a kernel NFS mount"
        assert mount.get("addr") == storage_address, f"{node}: the mount talks to {mount.get('addr')}: {mount}"
        own = lab.address(node, "storage").split("/")[0]
        assert mount.get("clientaddr", own) == own, f"{node}: the mount leaves from {mount['clientaddr']}, not {own}"
        active = runners[node].run(["systemctl", "is-active", "glance-api"], timeout=30, check=False).stdout
        assert active.strip() == "active", f"{node}: glance-api is {active.strip()}"


def test_image_uploaded_through_glance_is_the_file_on_the_export(lab: LabContext, runners: dict[str, Runner]) -> None:
    """An image uploaded through the catalog's glance endpoint is, byte for byte, the file named by its id in the
    export, read on the NFS server node itself (not through a mount)."""
    glance = glance_on_nfs(lab)
    server, path = nfs_server(lab, str(glance["share"]))
    client = next(n for n in sorted(lab.nodes) if n not in glance["nodes"] and n != server)
    auth = admin_auth(lab)
    image = os_client(runners[client], "glance", "upload", {**auth, "size": IMAGE_SIZE})
    try:
        assert image["status"] == "active", image
        assert image["glance"] == str(glance["url"]), (
            f"catalog gives {image['glance']}, glance's first node is {glance}"
        )
        stored = f"{path}/{image['image_id']}"
        found = runners[server].run(["sha256sum", stored], timeout=120, check=False).stdout.split()
        assert found[:1] == [image["sha256"]], f"{server}:{stored}: {found or 'missing'} (uploaded {image['sha256']})"
    finally:
        os_client(runners[client], "glance", "delete", {**auth, "image_id": image["image_id"]})
    gone = runners[server].run(["test", "-e", stored], timeout=30, check=False)
    assert not gone.ok, f"{server}:{stored} outlived the image's deletion"


def test_image_uploaded_through_one_glance_api_downloads_through_the_other(
    lab: LabContext, runners: dict[str, Runner]
) -> None:
    """With two glance-api nodes: an image uploaded through one is downloaded, same bytes, through the other, both
    ways (each glance-api finds the other's images on the shared mount; no replication of its own)."""
    glance = glance_on_nfs(lab)
    nodes = dict(glance["nodes"])
    if len(nodes) < 2:
        pytest.skip("the lab has one glance-api node")
    (first, first_url), (second, second_url) = list(nodes.items())[:2]
    for up_node, up_url, down_url in ((first, first_url, second_url), (second, second_url, first_url)):
        runner = runners[up_node]
        image = glance_at(runner, lab, str(up_url), "upload", size=IMAGE_SIZE)
        try:
            assert image["http"] == 204 and image["status"] == "active", f"upload through {up_url}: {image}"
            down = glance_at(runner, lab, str(down_url), "download", image_id=image["image_id"])
            assert down["http"] == 200, f"download through {down_url}: {down}"
            assert (down["sha256"], down["length"]) == (image["sha256"], IMAGE_SIZE), (image, down)
        finally:
            glance_at(runner, lab, str(up_url), "delete", image_id=image["image_id"])
