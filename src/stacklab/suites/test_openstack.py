"""Suite `openstack`: the control plane the lab built answers, over br-mgmt, with the lab's own credentials.

MariaDB, RabbitMQ and memcached are checked with real clients (SQL as the keystone user, an AMQP login, the
memcached text protocol) from another node where the lab has one, so the listeners on the controller's br-mgmt
address are proven, not only the local sockets. Keystone issues a token to the admin user (openstackclient on
the controller, and the REST API from another node), lists itself in the catalog, and refuses a wrong password.
Passwords travel on stdin. Each test skips with the reason when its service is not part of the lab.
"""

from __future__ import annotations

import json

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.openstack_calls import admin_auth, os_client, service
from stacklab.suites.storage_paths import read_secret


def other_node(lab: LabContext, controller: str) -> str:
    """A node other than the controller on br-mgmt (clients come from elsewhere), else the controller."""
    others = sorted(n for n, node in lab.nodes.items() if n != controller and "mgmt" in node["addresses"])
    return others[0] if others else controller


PYTHON_TCP = """
import socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.stdin.read().encode()
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(payload)
    s.settimeout(5)
    data = b""
    while not data.endswith(b"END\\r\\n") and len(data) < 65536:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
print(data.decode(errors="replace"))
"""

AMQP_LOGIN = """
import sys
import kombu
host, user = sys.argv[1], sys.argv[2]
password = sys.stdin.read().strip()
with kombu.Connection(hostname=host, port=5672, userid=user, password=password, virtual_host="/",
                      connect_timeout=10) as conn:
    conn.connect()
    channel = conn.channel()
    queue = kombu.Queue("stacklab-suite", exchange=kombu.Exchange("stacklab-suite"), routing_key="t",
                        auto_delete=True, channel=channel)
    queue.declare()
    kombu.Producer(channel).publish({"ping": 1}, exchange=queue.exchange, routing_key="t", declare=[queue])
    message = queue.get(no_ack=True)
    print(json.dumps(message.payload) if message else "no message")
""".replace("import sys\n", "import json, sys\n", 1)

SQL_LOGIN = """
import sys
import pymysql
host, user, db = sys.argv[1], sys.argv[2], sys.argv[3]
conn = pymysql.connect(host=host, user=user, password=sys.stdin.read().strip(), database=db, connect_timeout=10)
with conn.cursor() as cur:
    cur.execute("SELECT COUNT(*) FROM project")
    print(cur.fetchone()[0])
"""


def test_mariadb_serves_the_keystone_database_over_mgmt(lab: LabContext, runners: dict[str, Runner]) -> None:
    db = service(lab, "mariadb")
    service(lab, "keystone")
    address = str(db["address"])
    controller = str(db["node"])
    # PyMySQL is on the controller (an OpenStack image); the server sees a TCP client on its br-mgmt address
    result = runners[controller].run(
        ["python3", "-c", SQL_LOGIN, address, "keystone", "keystone"],
        input=read_secret(lab, "keystone-db") + "\n",
        timeout=60,
        check=False,
    )
    assert result.ok, f"SQL login as keystone on {address}:3306 failed: {result.stderr[-800:]}"
    assert int(result.stdout.strip()) >= 2, f"expected the admin and service projects, saw {result.stdout!r}"


def test_rabbitmq_accepts_the_openstack_user_and_routes_a_message(lab: LabContext, runners: dict[str, Runner]) -> None:
    mq = service(lab, "rabbitmq")
    controller = str(mq["node"])
    result = runners[controller].run(
        ["python3", "-c", AMQP_LOGIN, str(mq["address"]), str(mq["user"])],
        input=read_secret(lab, str(mq["secret"])) + "\n",
        timeout=60,
        check=False,
    )
    assert result.ok and '{"ping": 1}' in result.stdout, f"AMQP round trip failed: {result.stdout}{result.stderr}"
    wrong = runners[controller].run(
        ["python3", "-c", AMQP_LOGIN, str(mq["address"]), str(mq["user"])], input="wrong\n", timeout=60, check=False
    )
    assert not wrong.ok and "ACCESS_REFUSED" in wrong.stderr, "a wrong AMQP password must be refused"


def test_memcached_answers_on_mgmt_from_another_node(lab: LabContext, runners: dict[str, Runner]) -> None:
    cache = service(lab, "memcached")
    client = other_node(lab, str(cache["node"]))
    result = runners[client].run(
        ["python3", "-c", PYTHON_TCP, str(cache["address"]), str(cache["port"])], input="stats\r\n", timeout=30
    )
    assert "STAT pid" in result.stdout and result.stdout.rstrip().endswith("END"), result.stdout[-400:]


def test_keystone_issues_tokens_to_the_admin(lab: LabContext, runners: dict[str, Runner]) -> None:
    ks = service(lab, "keystone")
    controller = str(ks["node"])
    script = ". /root/admin-openrc && openstack token issue -f json && openstack endpoint list -f json"
    result = runners[controller].run(["sh", "-c", script], timeout=120, check=False)
    assert result.ok, f"openstack token issue with /root/admin-openrc failed: {result.stderr[-800:]}"
    decoder = json.JSONDecoder()
    token, end = decoder.raw_decode(result.stdout)
    endpoints, _ = decoder.raw_decode(result.stdout[end:].lstrip())
    assert token["id"] and token["project_id"], token
    identity = [e for e in endpoints if e["Service Type"] == "identity"]
    assert {e["Interface"] for e in identity} == {"admin", "internal", "public"}, endpoints
    assert all(e["URL"].rstrip("/") == str(ks["auth_url"]).rstrip("/") for e in identity), identity


def _auth_body(password: str) -> str:
    return json.dumps(
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": password}},
                },
                "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
            }
        }
    )


def _post_token(runner: Runner, auth_url: str, body: str) -> tuple[int, str]:
    argv = ["curl", "-s", "-m", "20", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "-H",
            "Content-Type: application/json", "--data-binary", "@-", f"{auth_url}/auth/tokens"]  # fmt: skip
    result = runner.run(argv, input=body, timeout=60, check=False)
    headers, _, code = result.stdout.rpartition("\n")
    return int(code.strip() or 0), headers


def test_keystone_api_over_mgmt_from_another_node(lab: LabContext, runners: dict[str, Runner]) -> None:
    ks = service(lab, "keystone")
    client = other_node(lab, str(ks["node"]))
    password = read_secret(lab, str(ks["admin_secret"]))
    code, headers = _post_token(runners[client], str(ks["auth_url"]), _auth_body(password))
    assert code == 201 and "x-subject-token" in headers.lower(), f"{client}: expected 201 and a token, saw {code}"
    code, _ = _post_token(runners[client], str(ks["auth_url"]), _auth_body(password + "-wrong"))
    assert code == 401, f"{client}: a wrong admin password must get 401, saw {code}"


def test_glance_stores_an_image_uploaded_from_another_node(lab: LabContext, runners: dict[str, Runner]) -> None:
    """Upload from another node over br-mgmt: the image is active, its bytes are the file in glance's store on the
    controller, and a download returns them. (Its cache is suite `caching`'s.)"""
    glance = service(lab, "glance")
    controller, client = str(glance["node"]), other_node(lab, str(glance["node"]))
    auth = admin_auth(lab)
    image = os_client(runners[client], "glance", "upload", {**auth, "size": 4 * 1024 * 1024})
    request = {**auth, "image_id": image["image_id"]}
    try:
        assert image["status"] == "active", image
        assert image["glance"] == str(glance["url"]), f"catalog gives {image['glance']}, glance runs at {glance['url']}"
        if glance.get("store") == "rbd":  # the image is an RBD image in the lab's Ceph: read it with the admin key
            from stacklab.suites.guest import ceph_admin
            from stacklab.suites.storage_paths import rbd_tool

            admin = ceph_admin(lab, runners)
            assert admin is not None, "glance's rbd store without Ceph in the lab"
            stored = f"{glance['rbd_pool']}/{image['image_id']}"
            size = str(4 * 1024 * 1024)
            found = rbd_tool(admin, "admin", str(glance["rbd_pool"]), str(image["image_id"]), "read", "0", size).split()
            assert found[:1] == [image["sha256"]], f"glance's RBD image {stored}: {found or 'missing'}"
        else:
            stored = f"{glance['images_dir'].rstrip('/')}/{image['image_id']}"
            found = runners[controller].run(["sha256sum", stored], timeout=60, check=False).stdout.split()
            assert found[:1] == [image["sha256"]], f"glance's store file {stored}: {found or 'missing'}"
        downloaded = os_client(runners[client], "glance", "download", request)
        assert downloaded["sha256"] == image["sha256"], (image, downloaded)
    finally:
        os_client(runners[client], "glance", "delete", request)


def test_placement_tracks_inventory_and_claims(lab: LabContext, runners: dict[str, Runner]) -> None:
    """From another node over br-mgmt, as nova uses placement: a provider with 8 VCPUs is a candidate for 4; after a
    claim of 6 its usages say so and it is no longer a candidate for 4; released, it is again; then it is deleted."""
    placement = service(lab, "placement")
    client = other_node(lab, str(placement["node"]))
    seen = os_client(runners[client], "placement", "claim", {**admin_auth(lab), "vcpus": 8, "memory_mb": 2048})
    rp = seen["rp"]
    assert seen["placement"] == str(placement["url"]), f"catalog gives {seen['placement']}, runs at {placement['url']}"
    assert (seen["inventory_http"], seen["claim_http"], seen["release_http"]) == (200, 204, 204), seen
    assert seen["before"] == [rp], f"8 free VCPUs should fit 4: {seen}"
    assert seen["usages"] == {"VCPU": 6, "MEMORY_MB": 1024}, f"usages after the claim: {seen['usages']}"
    assert seen["after"] == [], f"2 free VCPUs cannot fit 4, yet placement offered {seen['after']}"
    assert seen["released"] == [rp], f"released, the provider should be a candidate again: {seen}"
    assert seen["delete_http"] == 204, seen


def test_neutron_allocates_a_vxlan_network_and_a_port_address(lab: LabContext, runners: dict[str, Runner]) -> None:
    """From another node over br-mgmt: ML2 gives a new project network a VXLAN segment from the lab's VNI range, the
    subnet's allocation pool gives a port an address inside the CIDR, and everything can be deleted again."""
    import ipaddress

    neutron = service(lab, "neutron")
    client = other_node(lab, str(neutron["node"]))
    cidr = "192.168.77.0/24"
    seen = os_client(runners[client], "neutron", "network", {**admin_auth(lab), "cidr": cidr})
    assert seen["neutron"] == str(neutron["url"]), f"catalog gives {seen['neutron']}, runs at {neutron['url']}"
    low, high = (int(v) for v in str(neutron["ml2"]["vni_range"]).split(":"))
    assert seen["network_type"] == "vxlan" and low <= int(seen["vni"]) <= high, seen
    (address,) = seen["addresses"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(cidr) and address != seen["gateway"], seen
    assert seen["deleted"] == [204, 204, 204], f"port, subnet and network should be deleted: {seen['deleted']}"


def test_heat_builds_a_stack_through_its_engine_and_deletes_it(lab: LabContext, runners: dict[str, Runner]) -> None:
    """From another node over br-mgmt: heat-api takes a template, heat-engine (over the lab's queue) creates a random
    string and hands it to a second resource, the outputs carry the same string of the asked length, the engine
    reports itself up, and the stack's delete completes."""
    heat = service(lab, "heat")
    client = other_node(lab, str(heat["node"]))
    seen = os_client(runners[client], "heat", "stack", {**admin_auth(lab), "length": 23})
    assert seen["status"] == "CREATE_COMPLETE", f"heat left the stack {seen['status']}: {seen['reason']}"
    word, kept = seen["outputs"].get("word"), seen["outputs"].get("kept")
    assert isinstance(word, str) and len(word) == 23 and kept == word, f"the stack's outputs: {seen['outputs']}"
    assert seen["resources"] == {
        "word": ["OS::Heat::RandomString", "CREATE_COMPLETE"],
        "kept": ["OS::Heat::Value", "CREATE_COMPLETE"],
    }, seen["resources"]
    engines = [e for e in seen["engines"] if e[1] == "heat-engine"]
    assert engines and all(status == "up" for _, _, status in engines), f"heat's engines: {seen['engines']}"
    assert seen["deleted"] in ("DELETE_COMPLETE", 404), f"the stack's delete ended {seen['deleted']}"


def test_nova_computes_are_hypervisors_with_inventory_in_placement(lab: LabContext, runners: dict[str, Runner]) -> None:
    """Conductor and scheduler are up; every compute node's nova-compute is up, mapped into a cell (a hypervisor of
    type QEMU at its br-mgmt address), and its resource provider in placement offers VCPU, memory and disk."""
    nova = service(lab, "nova")
    client = other_node(lab, str(nova["node"]))
    seen = os_client(runners[client], "nova", "hosts", admin_auth(lab))
    up = {(s["binary"], s["host"]) for s in seen["services"] if s["state"] == "up" and s["status"] == "enabled"}
    wanted = {("nova-conductor", nova["node"]), ("nova-scheduler", nova["node"])}
    wanted |= {("nova-compute", c) for c in nova["computes"]}
    assert wanted <= up, f"nova services up: {sorted(up)}; expected at least {sorted(wanted)}"
    hypervisors = {h["hypervisor_hostname"]: h for h in seen["hypervisors"]}
    for compute in nova["computes"]:
        hypervisor = hypervisors.get(compute)
        assert hypervisor is not None, f"{compute} is not a hypervisor: {sorted(hypervisors)}"
        address = lab.nodes[compute]["addresses"]["mgmt"]
        assert (hypervisor["hypervisor_type"], hypervisor["host_ip"], hypervisor["state"]) == ("QEMU", address, "up")
        inventory = seen["providers"].get(compute, {})
        assert {"VCPU", "MEMORY_MB", "DISK_GB"} <= set(inventory), f"{compute} in placement: {inventory}"
        assert inventory["VCPU"] == hypervisor["vcpus"] > 0, (inventory, hypervisor)


def test_nova_boots_the_guest_and_its_disk_is_where_nova_says(lab: LabContext, runners: dict[str, Runner]) -> None:
    """The suites' guest boots on a compute node (TCG, direct kernel boot from glance's AKI/ARI) and marks its root
    disk; with images_type rbd the Ceph admin finds the mark in the instance's RBD image in pool vms."""
    from stacklab.suites.guest import guest_image, instance, nova_lab, rbd_line
    from stacklab.suites.storage_paths import rbd_tool

    nl = nova_lab(lab, runners, disks_on_rbd="the lab's instance disks are local files (images_type qcow2)")
    controller, auth = nl.controller, nl.auth
    with guest_image(controller, auth) as image, instance(controller, auth, image, "stacklab-suite-boot") as booted:
        assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
        assert booted["host"] in nl.nova["computes"], booted
        line = rbd_line(nl.admin, "vms", f"{booted['id']}_disk", lambda text: " boot:" in text, what="' boot:'")
        assert line.startswith("stacklab-disk:"), f"vms/{booted['id']}_disk: {line!r}"
        glance = lab.outputs.get("service/glance") or {}
        if glance.get("store") == "rbd":  # nova cloned the disk from glance's image snapshot: nothing was copied
            parent = rbd_tool(nl.admin, "admin", "vms", f"{booted['id']}_disk", "parent").strip()
            wanted = f"{glance['rbd_pool']}/{image.image_id}@snap"
            assert parent == wanted, f"vms/{booted['id']}_disk has parent {parent!r}, expected a clone of {wanted}"
