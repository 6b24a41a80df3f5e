"""A host with a firewall of its own keeps it (issue 18): ufw, and flower_firewall_manage = False.

A fresh host runs ufw (Debian's package), enabled with the lab's sources: SSH from the lab
machine, HTTPS from it and lab-allowed's /27, HTTP from anywhere. A first deploy adds
flowerbed's table beside it; the documented switch then removes that table and its boot unit
and logs what the host's own firewall must let in. Measured from lab-allowed and lab-denied,
ufw alone then decides; the verify run passes and reports the firewall as the host's own; a
second run changes nothing.
"""

from __future__ import annotations

import pytest
from conftest import Lab
from deploy_helpers import run_deploy
from test_firewall import passes, tcp
from test_verify import verify

from flowerbed.firewall import UNIT_FILE

pytestmark = pytest.mark.lab

OWN = {"flower_firewall_manage": False}
UFW = [
    "ufw default deny incoming",
    "ufw allow proto tcp from 10.77.0.1 to any port 22",
    "ufw allow proto tcp from 10.77.0.1 to any port 443",
    "ufw allow proto tcp from 10.77.0.192/27 to any port 443",
    "ufw allow 80/tcp",
    "ufw --force enable",
]


@pytest.fixture(scope="module")
def ufw_host(lab: Lab, module_hosts) -> str:
    name = module_hosts(prefix="uf")["name"]
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
    lab.ssh(name, f"{install} ufw", timeout=600, check=True)
    for rule in UFW:
        lab.ssh(name, rule, check=True)
    assert "Status: active" in lab.ssh(name, ["ufw", "status"], check=True).stdout
    return name


def tables(lab: Lab, name: str) -> str:
    return lab.ssh(name, ["nft", "list", "tables"], check=True).stdout


def test_flowerbeds_table_gives_way_to_the_hosts_own_firewall(lab: Lab, ufw_host: str, tmp_path):
    name = ufw_host
    managed = run_deploy(name)
    assert managed.ok, managed.explain()
    assert "table inet flowerbed" in tables(lab, name)
    own = run_deploy(name, OWN)
    assert own.ok, own.explain()
    for needed in ("the host's own firewall must let in", "22/tcp from 10.77.0.1/32",
                   "443/tcp from 10.77.0.1/32, 10.77.0.192/27"):  # fmt: skip
        assert needed in own.log, own.explain()
    assert "table inet flowerbed" not in tables(lab, name)
    assert lab.ssh(name, ["test", "-e", UNIT_FILE]).returncode != 0, "no boot unit is left"
    assert "Status: active" in lab.ssh(name, ["ufw", "status"], check=True).stdout
    assert passes(tcp(lab, "lab-allowed", name, 443))
    assert tcp(lab, "lab-denied", name, 443) == "filtered"
    assert passes(tcp(lab, "lab-denied", name, 80))
    assert tcp(lab, "lab-allowed", name, 22) == "filtered"
    verified = verify([name], tmp_path, OWN)
    assert verified.ok, verified.result.explain()
    assert verified.layer(name, "firewall")["value"] == "the host's own"
    again = run_deploy(name, OWN)
    assert again.ok and again.totals["success"] == 0, again.explain()
