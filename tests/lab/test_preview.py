"""The preview (`pyinfra INVENTORY deploy.py --dry --diff`): shows each change, makes none.

One host of its own, deployed once for the module. Each test takes a snapshot of everything the
deploy manages (every managed file's checksum, owner and mode, the venv links, every service's
state and main PID, the loaded nftables ruleset, users and packages), runs a preview, and
compares. Tests that drift the host deploy it back in a `finally`.
"""

from __future__ import annotations

import os
import re
import shlex
from urllib.parse import urlsplit

import pytest
from conftest import Lab, lab_cli
from deploy_helpers import DeployResult, assert_no_secret, run_deploy

pytestmark = pytest.mark.lab

CONFIG = "/etc/flower/flowerconfig.py"
SITE = "/etc/nginx/conf.d/flowerbed.conf"
HTPASSWD = "/etc/nginx/flowerbed.htpasswd"
# Every place the deploy writes to; the venvs' own files are covered by their content-keyed
# names (a venv is never rebuilt in place) and by the link pointing at one of them.
MANAGED = [
    "/etc/flower",
    "/etc/nginx",
    "/etc/flowerbed",
    "/etc/letsencrypt",
    "/etc/systemd/system",
    "/usr/local/libexec/flowerbed",
    "/var/lib/flowerbed",
    "/opt/flower",
    "/etc/apt/apt.conf.d",
    "/etc/pip.conf",
]
UNITS = ["flower", "nginx", "flowerbed-firewall", "nftables", "certbot.timer"]
SNAPSHOT = "\n".join(
    [
        "set -e",
        f"paths=$(for p in {' '.join(MANAGED)}; do if [ -e $p ]; then echo $p; fi; done)",
        "echo '## files'",
        "find $paths -xdev -not -path '/opt/flower/venvs/*/*' -printf '%p %y %m %u:%g %l\\n'"
        " | sort",
        "echo '## checksums'",
        "find $paths -xdev -type f -not -path '/opt/flower/venvs/*' -print0 | sort -z"
        " | xargs -0 sha256sum",
        "echo '## venv link'",
        "readlink /opt/flower/venv",
        "echo '## services'",
        shlex.join(
            [
                "systemctl", "show", "--no-pager",
                "-p", "Id,ActiveState,SubState,UnitFileState,MainPID,ExecMainStartTimestamp",
                *UNITS,
            ]
        ),
        "echo '## nft ruleset'",
        "nft list ruleset",
        "echo '## users'",
        "getent passwd flower; getent group flower www-data",
        "echo '## packages'",
        "dpkg-query -W -f '${Package} ${Version} ${Status}\\n' | sha256sum",
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def host(lab: Lab) -> str:
    name = f"pv{os.getpid() % 1000}"
    lab_cli("host-up", name)
    lab.state = Lab.load().state
    try:
        deployed = run_deploy([name])
        assert deployed.ok, deployed.explain()
        yield name
    finally:
        lab_cli("host-down", name)
        lab.state = Lab.load().state


def snapshot(lab: Lab, name: str) -> dict[str, str]:
    """Sections ("files", "checksums", "services", ...) of the host's managed state."""
    result = lab.ssh(name, SNAPSHOT, check=True)
    sections = dict(part.split("\n", 1) for part in result.stdout.split("## ")[1:] if "\n" in part)
    assert CONFIG in sections["checksums"] and SITE in sections["checksums"]
    assert "/opt/flower/venvs/" in sections["venv link"]
    assert sections["services"].count("Id=") == len(UNITS)
    return sections


def preview(name: str, *flags: str, env: dict | None = None) -> DeployResult:
    result = run_deploy([name], flags=("--dry", "--diff", *flags), env=env)
    assert result.ok, result.explain()
    return result


def planned_changes(result: DeployResult, name: str) -> list[str]:
    """Operations the preview says would change the host (not the conditional ones)."""
    return [op["name"] for op in result.report["plan"] if name in op["hosts_with_change"]]


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    for section in before:
        assert after[section] == before[section], f"the preview changed the host's {section}"
    counts = ", ".join(f"{len(text.splitlines())} {name}" for name, text in before.items())
    print(f"\nbefore == after: {counts} (lines compared)")


def test_a_converged_host_previews_no_change_and_is_untouched(lab: Lab, host: str):
    before = snapshot(lab, host)
    plan = preview(host, "--json")
    assert plan.report["results"] is None, "a preview executes nothing"
    assert planned_changes(plan, host) == []
    assert "table inet flowerbed" in before["nft ruleset"]
    text = preview(host)
    assert "Will modify" not in text.log and "Will create" not in text.log
    assert_unchanged(before, snapshot(lab, host))


def test_a_drifted_host_previews_each_change_and_is_untouched(lab: Lab, host: str):
    drift = "\n".join(
        [
            f"echo '# edited by hand' >> {CONFIG}",
            f"sed -i 's/server_tokens off;/server_tokens on;/' {SITE}",
            "systemctl stop flower",
            "nft delete table inet flowerbed",  # (a flushed table with a drop policy locks ssh out)
        ]
    )
    lab.ssh(host, drift, check=True)
    try:
        before = snapshot(lab, host)
        assert "ActiveState=inactive" in before["services"]
        assert "table inet flowerbed" not in before["nft ruleset"]
        plan = preview(host, "--json")
        changes = planned_changes(plan, host)
        for operation in (
            "Flower's options (flowerconfig.py)",
            "HTTPS site",
            "Flower is enabled and running",
            "Firewall rules",
        ):
            assert any(operation in change for change in changes), (operation, changes)
        assert len(changes) == 4, changes
        text = preview(host)
        # each file's diff: the hand edit is shown going away, the managed line coming back
        assert re.search(r"^\s+- # edited by hand$", text.log, re.M), text.log
        assert re.search(r"^\s+- .*server_tokens on;$", text.log, re.M), text.log
        assert re.search(r"^\s+\+ .*server_tokens off;$", text.log, re.M), text.log
        # the services that would restart or reload are listed as conditional changes
        conditional = [
            op["name"] for op in plan.report["plan"] if host in op["hosts_with_conditional_change"]
        ]
        assert any("Restart Flower" in op for op in conditional), conditional
        assert any("Test and reload nginx" in op for op in conditional), conditional
        assert_unchanged(before, snapshot(lab, host))
    finally:
        restored = run_deploy([host])
        assert restored.ok, restored.explain()
    assert planned_changes(preview(host, "--json"), host) == []


def test_a_changed_secret_previews_as_changed_never_with_its_value(lab: Lab, host: str):
    broker = lab.secrets["FLOWERBED_BROKER_URL"]
    user, password = lab.dashboard_login
    new_password = "preview-N3w-pass:word"
    new_broker = broker.replace(urlsplit(broker).password, "preview-new-broker-pw")
    env = {
        "FLOWERBED_BROKER_URL": new_broker,
        "FLOWERBED_DASHBOARD_USERS": f"{user}:{new_password}",
    }
    hashes = lab.ssh(host, ["cut", "-d:", "-f2", HTPASSWD], check=True).stdout.split()
    assert hashes
    secrets = [broker, urlsplit(broker).password, password, new_password, *hashes]
    secrets += ["preview-new-broker-pw"]
    before = snapshot(lab, host)
    for flags in (("-v",), ("-vv",), ("-vvv",), ("--json",), ("--json", "-vvv")):
        result = preview(host, *flags, env=env)
        assert_no_secret(result, secrets)
        if "--json" in flags:
            changes = planned_changes(result, host)
            assert any("Flower's secrets" in op for op in changes), changes
            assert any("Dashboard logins" in op for op in changes), changes
        else:
            assert "(secret: content not shown)" in result.log
    assert_unchanged(before, snapshot(lab, host))
