"""Copies of one lab run side by side: a fresh name and a fresh /24 per network, the rest of the file kept."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from stacklab.model.load import load_lab_text
from stacklab.model.starter import unique_copy

AIO = (Path(__file__).resolve().parents[2] / "labs" / "aio.yml").read_text()


def test_a_copy_has_its_own_name_and_networks_and_is_still_valid() -> None:
    name, text = unique_copy(AIO, "cp", first_octet=150)
    lab = load_lab_text(text, f"{name}.yml")
    assert lab.name == name and name.startswith("cp-") and len(name) == 9
    nets = [ipaddress.IPv4Network(str(n.cidr)) for n in lab.networks.values()]
    assert all(n.prefixlen == 24 and ipaddress.IPv4Network("10.0.0.0/8").supernet_of(n) for n in nets)
    assert 150 <= int(str(nets[0]).split(".")[1]) < 190 and len(set(nets)) == len(nets)
    assert "172.29.236." not in text and "172.29.244." not in text  # fixed addresses moved with their network
    assert text.count("\n") == AIO.count("\n")  # comments and layout kept


def test_two_copies_differ() -> None:
    assert unique_copy(AIO, "cp")[0] != unique_copy(AIO, "cp")[0]
