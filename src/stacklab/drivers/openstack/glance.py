"""Glance (image service, Zed from Debian's packages) on the controller: file store, image cache, keystone auth.

The package's glance-api.conf stays as shipped; stacklab's settings are `glance-api.conf.d/50-stacklab.conf`,
given after it on the command line by a drop-in of the package's `glance-api.service` (one worker: a lab node
has little to spare). The paste flavor `keystone+cachemanagement` puts the image cache in the pipeline (when the
lab asks for it) with its management API, so the second download of an image is served from
`/var/lib/glance/image-cache` and the suite can prove it. The `glance` service user and the image endpoints are
registered in keystone (keystone.register_in_keystone, walked by declared.py); the database lives in the lab's MariaDB.
After the schema sync, `glance-manage db_load_metadefs` loads the metadata definitions the package ships
(/etc/glance/metadefs): without them `GET /v2/metadefs/resource_types` is empty. It is safe on every `up`: glance
skips a namespace already in the database (no --merge, no --overwrite), so a second run adds nothing.

Stores: `file` (the default, /var/lib/glance/images) and `rbd`: images in the lab's Ceph pool `images` as
`client.glance` (the Ceph step puts its keyring on the controller, which must have a br-storage NIC; made readable
by the glance group here), so glance-api reads and writes them over br-storage; `show_image_direct_url` hands nova
the image's `rbd://<fsid>/images/<id>/snap` location, and an RBD compute of the same cluster clones its disk from
that snapshot (copy-on-write) instead of downloading the image. `nfs`: the file store on a kernel NFS mount of a
storage.nfs export shared by every glance-api node (`openstack.glance.nodes`): glance_nfs.py.
"""

from __future__ import annotations

from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
)
from stacklab.drivers.openstack.declared import MANAGE_TIMEOUT, ApiService, DeclaredRole
from stacklab.drivers.openstack.glance_nfs import GlanceRole, store_mount
from stacklab.drivers.openstack.keystone import authtoken_section
from stacklab.drivers.openstack.nfs_mounts import requires_mount
from stacklab.drivers.storage.ceph.clients import keyring_problems, require_keyring, share_keyring, unshare_keyring
from stacklab.errors import PlanError
from stacklab.exec.runner import Runner

PACKAGE_CONF = "/etc/glance/glance-api.conf"
CONF = "/etc/glance/glance-api.conf.d/50-stacklab.conf"
DROPIN = "/etc/systemd/system/glance-api.service.d/stacklab.conf"
PORT = 9292
IMAGES_DIR = "/var/lib/glance/images/"
CACHE_DIR = "/var/lib/glance/image-cache"
GLANCE_DIRS = (IMAGES_DIR, CACHE_DIR, *(f"{CACHE_DIR}/{d}" for d in ("incomplete", "invalid", "queue")))
METADEFS_DIR = "/etc/glance/metadefs"
MANAGE = ("glance-manage", "--config-file", PACKAGE_CONF, "--config-file", CONF)
SERVICE = {"name": "glance", "type": "image", "description": "OpenStack Image service"}
LOG_FILE = "/var/log/glance/glance-api.log"
# oslo.log's default levels (Zed), then the image cache's two loggers at DEBUG: the cache middleware logs each hit
# ("Cache hit for image ...") and the cache each image it tees in from the store, only at that level. The rest of
# glance stays at INFO; the access log (client address, request, status, bytes, seconds) is INFO already.
OSLO_LOG_LEVELS = (
    "amqp=WARN,amqplib=WARN,boto=WARN,qpid=WARN,sqlalchemy=WARN,suds=INFO,oslo.messaging=INFO,oslo_messaging=INFO,"
    "iso8601=WARN,requests.packages.urllib3.connectionpool=WARN,urllib3.connectionpool=WARN,websocket=WARN,"
    "requests.packages.urllib3.util.retry=WARN,urllib3.util.retry=WARN,keystonemiddleware=WARN,"
    "routes.middleware=WARN,stevedore=WARN,taskflow=WARN,keystoneauth=WARN,oslo.cache=INFO,oslo_policy=INFO,"
    "dogpile.core.dogpile=INFO"
)
CACHE_LOGGERS = ("glance.api.middleware.cache", "glance.image_cache")


RBD_POOL = "images"
RBD_USER = "glance"


def store_of(plan: ServiceLayout) -> str:
    return str(plan.config.get("store", "file"))


def check_store(plan: ServiceLayout) -> None:
    store = store_of(plan)
    if store not in ("file", "rbd", "nfs"):
        raise PlanError(
            f"glance store {store!r} is not wired yet (its client side is missing)",
            resource="service/glance",
            hint="use `openstack: {glance: {store: file}}` (or `rbd` with the lab's Ceph) for now",
        )
    if store == "nfs" and not (plan.config.get("share") and plan.config.get("nodes")):
        raise PlanError(  # never a silent fallback to a local directory
            "glance's nfs store has no share or no glance-api node in its plan",
            resource="service/glance",
            hint="give the lab storage.nfs with an export (openstack.glance.export names it)",
        )


def cache_log_line(cache: bool) -> str:
    return f"default_log_levels = {OSLO_LOG_LEVELS},{','.join(f'{n}=DEBUG' for n in CACHE_LOGGERS)}\n" if cache else ""


def store_section(plan: ServiceLayout) -> str:
    if store_of(plan) == "rbd":
        return (
            "[glance_store]\n"
            "stores = rbd,http\n"
            "default_store = rbd\n"
            f"rbd_store_pool = {RBD_POOL}\n"
            f"rbd_store_user = {RBD_USER}\n"
            "rbd_store_ceph_conf = /etc/ceph/ceph.conf\n"
            "rbd_store_chunk_size = 8\n"
        )
    return f"[glance_store]\nstores = file,http\ndefault_store = file\nfilesystem_store_datadir = {IMAGES_DIR}\n"


def render_conf(plan: ServiceLayout, db_password: str, user_password: str) -> str:
    cache = bool(plan.config.get("cache", True))
    # nova clones an RBD disk from the image's own snapshot only when glance tells it where the image lives
    direct_url = "show_image_direct_url = true\n" if store_of(plan) == "rbd" else ""
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        f"bind_host = {plan.config.get('bind_address', plan.address)}\n"
        f"bind_port = {PORT}\n"
        "workers = 1\n"
        f"image_cache_dir = {CACHE_DIR}\n"
        "image_cache_max_size = 2147483648\n"
        f"{cache_log_line(cache)}"
        f"{direct_url}"
        "[database]\n"
        f"connection = mysql+pymysql://glance:{db_password}@{plan.address}/glance\n"
        f"{store_section(plan)}"
        f"{authtoken_section(plan, 'glance', user_password)}"
        "[paste_deploy]\n"
        f"flavor = {'keystone+cachemanagement' if cache else 'keystone'}\n"
        # glance looks for the paste file beside its last config file (here 50-stacklab-paste.ini): name it
        "config_file = /etc/glance/glance-api-paste.ini\n"
    )


def render_dropin(plan: ServiceLayout) -> str:
    exec_start = f"/usr/bin/glance-api --config-file {PACKAGE_CONF} --config-file {CONF}"
    text = dropin_text(plan.lab, "glance-api with stacklab's settings file, one worker", exec_start)
    # nfs: glance-api starts only on its store's NFS mount (never writes images into the bare mount point)
    return text + requires_mount(store_mount(plan)) if store_of(plan) == "nfs" else text


def own_dirs(_ctx: DriverContext, runner: Runner, _layout: ServiceLayout) -> None:
    # the package ships the cache's work dirs owned by root: glance could not fill its cache
    runner.run(["install", "-d", "-o", "glance", "-g", "glance", *GLANCE_DIRS], timeout=30)


def load_metadefs(_ctx: DriverContext, runner: Runner, _layout: ServiceLayout) -> None:
    # after db_sync (the metadefs tables exist) and the API answers; namespaces already loaded are skipped
    runner.run(["runuser", "-u", "glance", "--", *MANAGE, "db_load_metadefs", METADEFS_DIR], timeout=MANAGE_TIMEOUT)


def dir_problems(runner: Runner) -> list[str]:
    owners = runner.run(["stat", "-c", "%U %n", *GLANCE_DIRS], timeout=30, check=False).stdout.split("\n")
    return [f"{line.split(' ', 1)[-1]} is not glance's" for line in owners if line and not line.startswith("glance ")]


def prepare_store(_ctx: DriverContext, runner: Runner, layout: ServiceLayout) -> None:
    """rbd: client.glance's keyring from the Ceph step, readable by glance-api (which runs as glance)."""
    if store_of(layout) == "rbd":
        require_keyring(runner, layout.controller, "service/glance", "controller", user=RBD_USER)
        share_keyring(runner, "glance", user=RBD_USER)


def unprepare_store(_ctx: DriverContext, runner: Runner, layout: ServiceLayout) -> None:
    if store_of(layout) == "rbd":
        unshare_keyring(runner, user=RBD_USER)


def glance_problems(runner: Runner, layout: ServiceLayout) -> list[str]:
    found = dir_problems(runner)
    if store_of(layout) == "rbd":
        found += keyring_problems(runner, user=RBD_USER, group="glance")
    return found


def outputs(layout: ServiceLayout) -> dict[str, Any]:
    rbd = {"rbd_pool": RBD_POOL, "ceph_user": RBD_USER} if store_of(layout) == "rbd" else {}
    return {
        **rbd,
        "store": store_of(layout),
        "images_dir": IMAGES_DIR,
        "cache_dir": CACHE_DIR,
        "cache": bool(layout.config.get("cache", True)),
        "log_unit": "glance-api",  # glance-api logs to its journal (no log file is configured)
    }


SERVICE_RECORD = ApiService(
    name="glance",
    units=("glance-api",),
    port=PORT,
    conf=CONF,
    dropins={"glance-api": DROPIN},
    log_file=LOG_FILE,
    catalog=SERVICE,
    sync=(*MANAGE, "db_sync"),
    binaries={"/usr/bin/glance-api": "glance-api"},
    render_conf=render_conf,
    render_dropin=lambda layout, _unit: render_dropin(layout),
    check=lambda _ctx, layout: check_store(layout),
    prepare=prepare_store,
    before_sync=own_dirs,
    after_start=load_metadefs,
    after_remove=unprepare_store,
    extra_problems=glance_problems,
    outputs=outputs,
    sync_progress=None,
)
ROLE = GlanceRole(DeclaredRole(SERVICE_RECORD))
