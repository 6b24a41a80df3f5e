"""The verify run (verify.py): reports each host's health and changes nothing."""

from __future__ import annotations

import re

import pytest
from conftest import Lab
from deploy_helpers import run_deploy

pytestmark = pytest.mark.lab

HOST = "h1"


@pytest.fixture(scope="module")
def deployed(lab: Lab) -> str:
    result = run_deploy([HOST])
    assert result.ok, result.explain()
    return HOST


def verify(*names: str):
    return run_deploy(list(names), deploy_file="verify.py")


def test_a_healthy_host_verifies_with_no_change(deployed: str):
    result = verify(deployed)
    assert result.ok, result.explain()
    assert result.totals["success"] == 0 and result.totals["error"] == 0
    assert "nginx serves https://" in result.log


def test_a_stopped_nginx_fails_only_its_host(lab: Lab, deployed: str, fresh_host):
    never_deployed = fresh_host()["name"]
    lab.ssh(deployed, "systemctl stop nginx", check=True)
    try:
        result = verify(deployed, never_deployed)
        assert not result.ok
        # (with every host failed pyinfra prints no --json report: read the log)
        # pyinfra pads host prefixes to the longest name
        assert re.search(rf"\[{deployed}\] +edge: nginx is not running", result.log), result.log
        assert re.search(rf"\[{never_deployed}\] +Flower is unhealthy", result.log), result.log
    finally:
        lab.ssh(deployed, "systemctl start nginx", check=True)
    assert verify(deployed).ok
