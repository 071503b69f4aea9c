"""Glance (image service, Zed from Debian's packages) on the controller: file store, image cache, keystone auth.

The package's glance-api.conf stays as shipped; stacklab's settings are `glance-api.conf.d/50-stacklab.conf`,
given after it on the command line by a drop-in of the package's `glance-api.service` (one worker: a lab node
has little to spare). The paste flavor `keystone+cachemanagement` puts the image cache in the pipeline (when the
lab asks for it) with its management API, so the second download of an image is served from
`/var/lib/glance/image-cache` and the suite can prove it. The `glance` service user and the image endpoints are
registered in keystone (svc_keystone.register_in_keystone); the database lives in the lab's MariaDB.

Stores: `file` (the default, /var/lib/glance/images). `rbd` and `nfs` stores are refused with a clear error
until their clients are wired (cephx key for glance, the NFS mount): never a silent fallback to `file`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    file_problems,
    unit_problems,
    version_list_answers,
    wait_for_api,
)
from stacklab.drivers.openstack.infra import ensure_database
from stacklab.drivers.openstack.keystone import authtoken_section, register_in_keystone, retire_service
from stacklab.errors import PlanError
from stacklab.exec.node_files import (
    enable_and_restart,
    require_node,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.runner import Runner
from stacklab.secrets import get_or_create_secret, read_secret

PACKAGE_CONF = "/etc/glance/glance-api.conf"
CONF = "/etc/glance/glance-api.conf.d/50-stacklab.conf"
DROPIN = "/etc/systemd/system/glance-api.service.d/stacklab.conf"
PORT = 9292
DB_SECRET = "glance-db"
USER_SECRET = "glance-keystone"
IMAGES_DIR = "/var/lib/glance/images/"
CACHE_DIR = "/var/lib/glance/image-cache"
GLANCE_DIRS = (IMAGES_DIR, CACHE_DIR, *(f"{CACHE_DIR}/{d}" for d in ("incomplete", "invalid", "queue")))
MANAGE_TIMEOUT = 600.0
SERVICE = {"name": "glance", "type": "image", "description": "OpenStack Image service"}


def api_url(plan: ServiceLayout) -> str:
    return f"http://{plan.address}:{PORT}"


def check_store(plan: ServiceLayout) -> None:
    store = str(plan.config.get("store", "file"))
    if store != "file":
        raise PlanError(
            f"glance store {store!r} is not wired yet (its client side is missing)",
            resource="service/glance",
            hint="use `openstack: {glance: {store: file}}` for now",
        )


def render_conf(plan: ServiceLayout, db_password: str, user_password: str) -> str:
    cache = bool(plan.config.get("cache", True))
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        f"bind_host = {plan.address}\n"
        f"bind_port = {PORT}\n"
        "workers = 1\n"
        f"image_cache_dir = {CACHE_DIR}\n"
        "image_cache_max_size = 2147483648\n"
        "[database]\n"
        f"connection = mysql+pymysql://glance:{db_password}@{plan.address}/glance\n"
        "[glance_store]\n"
        "stores = file,http\n"
        "default_store = file\n"
        f"filesystem_store_datadir = {IMAGES_DIR}\n"
        f"{authtoken_section(plan, 'glance', user_password)}"
        "[paste_deploy]\n"
        f"flavor = {'keystone+cachemanagement' if cache else 'keystone'}\n"
        # glance looks for the paste file beside its last config file (here 50-stacklab-paste.ini): name it
        "config_file = /etc/glance/glance-api-paste.ini\n"
    )


def render_dropin(plan: ServiceLayout) -> str:
    return (
        f"# written by stacklab for lab {plan.lab}: glance-api with stacklab's settings file, one worker\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart=/usr/bin/glance-api --config-file {PACKAGE_CONF} --config-file {CONF}\n"
    )


def api_answers(runner: Runner, plan: ServiceLayout) -> bool:
    return version_list_answers(runner, api_url(plan))


class Glance:
    name = "glance"

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        db_password = read_secret(ctx.state_dir, DB_SECRET)
        user_password = read_secret(ctx.state_dir, USER_SECRET)
        if db_password is None or user_password is None:
            return [f"the lab's glance secrets are missing from {ctx.state_dir / 'secrets'}"]
        found = file_problems(
            runner, {CONF: render_conf(plan, db_password, user_password), DROPIN: render_dropin(plan)}
        )
        owners = runner.run(["stat", "-c", "%U %n", *GLANCE_DIRS], timeout=30, check=False).stdout.split("\n")
        found += [
            f"{line.split(' ', 1)[-1]} is not glance's" for line in owners if line and not line.startswith("glance ")
        ]
        answers = lambda: api_answers(runner, plan)  # noqa: E731
        return [*found, *unit_problems(runner, "glance-api", url=api_url(plan), answers=answers)]

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        rid = f"service/{self.name}"
        check_store(plan)
        require_node(runner, plan.controller, rid, files={"/usr/bin/glance-api": "glance-api"}, unit="glance-api")
        db_password = get_or_create_secret(ctx.state_dir, DB_SECRET)
        user_password = get_or_create_secret(ctx.state_dir, USER_SECRET)
        ctx.progress(f"{rid}: database, keystone user and endpoints")
        ensure_database(runner, "glance", "glance", db_password)
        register_in_keystone(ctx, runner, plan, user="glance", password=user_password, service=SERVICE,
                             url=api_url(plan))  # fmt: skip
        changed = write_node_file(runner, CONF, render_conf(plan, db_password, user_password), mode="0640")
        runner.run(["chown", "root:glance", CONF], timeout=30)
        # the package ships the cache's work dirs owned by root: glance could not fill its cache
        runner.run(["install", "-d", "-o", "glance", "-g", "glance", *GLANCE_DIRS], timeout=30)
        runner.run(["runuser", "-u", "glance", "--", "glance-manage", "--config-file", PACKAGE_CONF,
                    "--config-file", CONF, "db_sync"], timeout=MANAGE_TIMEOUT)  # fmt: skip
        changed = write_unit_files(runner, {DROPIN: render_dropin(plan)}) or changed
        enable_and_restart(runner, "glance-api", changed=changed)
        wait_for_api(runner, rid, url=api_url(plan), unit="glance-api", log_file="/var/log/glance/glance-api.log",
                     answers=lambda: api_answers(runner, plan))  # fmt: skip
        return {"url": api_url(plan), "store": "file", "images_dir": IMAGES_DIR, "cache_dir": CACHE_DIR,
                "cache": bool(plan.config.get("cache", True))}  # fmt: skip

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        retire_service(ctx, runner, plan, units=("glance-api",), user="glance", user_secret=USER_SECRET,
                       service=SERVICE, url=api_url(plan), files=(DROPIN, CONF))  # fmt: skip


ROLE = Glance()
