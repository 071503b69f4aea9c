"""`down` removes the lab's state but keeps what a person or a nightly job reads after it: the run logs and each
verify run's JUnit and HTML; verify's other files (its context and tempest's workspace hold the lab's secrets) go."""

from __future__ import annotations

import types
from pathlib import Path

from stacklab.engine.events import EventBus
from stacklab.engine.state import StateStore
from stacklab.model.load import load_lab
from stacklab.session import Session

LAB_FILE = Path(__file__).resolve().parents[2] / "labs" / "containers-3.yml"


def test_down_keeps_logs_and_verify_reports_and_nothing_secret(tmp_path: Path) -> None:
    lab = load_lab(LAB_FILE)
    store = StateStore(tmp_path, lab.name)
    store.set_meta("host_before", {})
    lab_dir = store.dir
    written = (
        *("secrets/rabbit", "ssh/id_ed25519", "known_hosts", "ssh_config", "logs/20261207T1-up.jsonl"),
        *("verify/context.json", "verify/tempest/etc/tempest.conf", "verify/tempest.log"),
        *("verify/20261207T133428.xml", "verify/20261207T133428.html", "verify/tempest-20261207T142336.xml"),
    )
    for name in written:
        (lab_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (lab_dir / name).write_text("x")
    session = Session(lab, types.SimpleNamespace(state=store), EventBus(), None)  # type: ignore[arg-type]

    session.finish_down()

    left = sorted(str(p.relative_to(lab_dir)) for p in lab_dir.rglob("*") if p.is_file())
    assert left == [
        "logs/20261207T1-up.jsonl",
        "verify/20261207T133428.html",
        "verify/20261207T133428.xml",
        "verify/tempest-20261207T142336.xml",
    ]
