"""Bad input on real hosts: a run with three bad values on two hosts reports all three at once,
exits non-zero and changes nothing (managed files, services, the firewall).

Uses the shared hosts h1 and h2, deployed first so they are converged.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import Lab
from deploy_helpers import run_deploy

pytestmark = pytest.mark.lab

HOSTS = ["h1", "h2"]
HOST_DATA_INVENTORY = "tests/inventories/lab.py"
PROXY_PASSWORD = "Pr0xy-pw-never-shown"
MANAGED_FILES = (
    "/etc/flower/* /etc/systemd/system/flower.service /etc/nginx/conf.d/flowerbed*.conf "
    "/etc/nginx/flowerbed.htpasswd /etc/apt/apt.conf.d/80flowerbed-proxy /etc/flowerbed/*"
)


def host_state(lab: Lab, name: str) -> dict[str, str]:
    """What a run could change: managed files' checksums, services (with Flower's PID), nft."""
    files = lab.ssh(name, f"sha256sum {MANAGED_FILES} 2>/dev/null | sort -k2", check=False)
    assert "/etc/flower/flowerconfig.py" in files.stdout, files.stdout + files.stderr
    services = lab.ssh(
        name,
        "systemctl is-active flower nginx flowerbed-firewall; "
        "systemctl show -p MainPID -p ActiveEnterTimestamp flower nginx",
        check=False,
    )
    table = lab.ssh(name, ["nft", "list", "table", "inet", "flowerbed"], check=True)
    assert "chain" in table.stdout
    return {"files": files.stdout, "services": services.stdout, "nft": table.stdout}


@pytest.fixture(scope="module")
def converged(lab: Lab) -> dict[str, dict[str, str]]:
    assert all(name in {h["name"] for h in lab.base_hosts} for name in HOSTS)
    result = run_deploy(HOSTS)
    assert result.ok, result.explain()
    return {name: host_state(lab, name) for name in HOSTS}


def test_three_bad_values_on_two_hosts_are_all_reported_and_nothing_changes(
    lab: Lab, converged: dict[str, dict[str, str]]
):
    bad = run_deploy(
        HOSTS,
        data={
            "flower_max_tasks": 0,  # bad for both hosts: reported once, naming both
            "flower_egress_proxy": f"http://:{PROXY_PASSWORD}@10.77.0.1:3128",  # credentials
        },
        inventory=HOST_DATA_INVENTORY,
        env={
            "FLOWERBED_TEST_HOST_DATA": json.dumps({"h2": {"flower_admin_sources": ["0.0.0.0/0"]}})
        },
    )
    log = bad.log
    assert bad.returncode != 0, bad.explain()
    assert "3 problems in the deploy data or secrets; no host was changed" in log, bad.explain()
    # both hosts on one line, in inventory order (its groups are by release: mixed can put h2 first)
    both = re.escape("hosts ") + "(h1, h2|h2, h1)"
    assert re.search(both + re.escape(": flower_max_tasks: 0 is below 1"), log), log
    assert re.search(both + re.escape(": flower_egress_proxy: the URL carries credentials"), log)
    assert "host h2: flower_admin_sources: 0.0.0.0/0 opens SSH to the whole internet" in log
    assert "flower_firewall_allow_ssh_from_anywhere = True" in log, "the fix is given"
    assert "(set by --data)" in log and "(set in the inventory for host h2)" in log
    assert PROXY_PASSWORD not in bad.stdout + bad.stderr
    assert "Beginning operation run" not in log
    assert {name: host_state(lab, name) for name in HOSTS} == converged
