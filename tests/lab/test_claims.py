"""README claims about the deployed edge and firewall, checked on h1 (shared; put back after).

htpasswd mode and hashes, certbot.timer, the renewal hook's `nginx -t` gate, an nginx-only
change leaving Flower alone, the firewall's rollback timer as systemd holds it, and the env
file's quoting as systemd reads it.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import string
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, Lab
from deploy_helpers import run_deploy

from flowerbed.decoy import DECOY_USER
from flowerbed.render import systemd_quote

pytestmark = pytest.mark.lab

DEPLOYED = "h1"
HTPASSWD = "/etc/nginx/flowerbed.htpasswd"
DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/flowerbed-nginx"
ROLLBACK_TIMER = "flowerbed-firewall-rollback.timer"


@pytest.fixture(scope="module")
def deployed(lab: Lab) -> str:
    result = run_deploy([DEPLOYED])
    assert result.ok, result.explain()
    return DEPLOYED


def ssh(lab: Lab, command: str | list[str]) -> str:
    return lab.ssh(DEPLOYED, command, check=True).stdout


def test_htpasswd_is_0640_root_www_data_with_bcrypt_hashes_only(lab: Lab, deployed: str):
    assert ssh(lab, ["stat", "-c", "%a %U %G", HTPASSWD]).split() == ["640", "root", "www-data"]
    lines = ssh(lab, ["cat", HTPASSWD]).splitlines()
    logins = lab.secrets["FLOWERBED_DASHBOARD_USERS"].split(",")
    users = [login.partition(":")[0] for login in logins]
    # one line a user, then the decoy's (flowerbed.decoy: an unknown name's bcrypt check)
    names = [line.split(":", 1)[0] for line in lines]
    assert sorted(names[:-1]) == sorted(users) and names[-1] == DECOY_USER, names
    for line in lines:
        user, _, hashed = line.partition(":")
        assert re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", hashed), f"{user}: not bcrypt"


def test_certbot_timer_is_enabled_and_active(lab: Lab, deployed: str):
    assert ssh(lab, ["systemctl", "is-enabled", "certbot.timer"]).strip() == "enabled"
    assert ssh(lab, ["systemctl", "is-active", "certbot.timer"]).strip() == "active"


def nginx_workers(lab: Lab) -> set[str]:
    """nginx's worker PIDs: a reload replaces them, the master stays."""
    return set(ssh(lab, "pgrep -P $(cat /run/nginx.pid)").split())


def test_the_renewal_hook_never_reloads_a_configuration_nginx_t_rejects(lab: Lab, deployed: str):
    broken = "/etc/nginx/conf.d/zz-flowerbed-test-broken.conf"
    workers = nginx_workers(lab)
    assert workers, "nginx runs workers"
    try:
        ssh(lab, f"echo 'this is not nginx;' > {broken}")
        refused = lab.ssh(DEPLOYED, [DEPLOY_HOOK])
        assert refused.returncode != 0, "the hook fails, so certbot logs it"
        assert nginx_workers(lab) == workers, "nginx was not reloaded"
        assert lab.ssh(DEPLOYED, ["systemctl", "is-active", "nginx"]).stdout.strip() == "active"
    finally:
        lab.ssh(DEPLOYED, ["rm", "-f", broken], check=True)
    ssh(lab, [DEPLOY_HOOK])  # with a good configuration it reloads
    deadline = time.monotonic() + 10
    while nginx_workers(lab) & workers:
        assert time.monotonic() < deadline, "a good configuration was never reloaded"
        time.sleep(0.2)


def flower_pid(lab: Lab) -> str:
    pid = ssh(lab, ["systemctl", "show", "-P", "MainPID", "flower.service"]).strip()
    assert pid not in ("", "0"), "Flower runs"
    return pid


def test_an_nginx_only_change_reloads_nginx_and_never_restarts_flower(lab: Lab, deployed: str):
    flower, workers = flower_pid(lab), nginx_workers(lab)
    try:
        changed = run_deploy([DEPLOYED], {"flower_nginx_hsts_max_age": 300})
        assert changed.ok, changed.explain()
        site = ssh(lab, "cat /etc/nginx/conf.d/*.conf")
        assert "max-age=300" in site, "the nginx change was deployed"
        assert changed.changed_hosts("Restart Flower") == []
        assert flower_pid(lab) == flower, "Flower kept running"
        assert not nginx_workers(lab) & workers, "nginx was reloaded"
    finally:
        restored = run_deploy([DEPLOYED])
        assert restored.ok, restored.explain()
    assert flower_pid(lab) == flower, "putting it back does not restart Flower either"


def transient_timer(lab: Lab) -> Path:
    """The rollback timer's transient unit file, seen from this machine through h1's root."""
    nspawn = (REPO / ".lab" / "run" / f"nspawn-{DEPLOYED}.pid").read_text().strip()
    (init,) = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
    return Path(f"/proc/{init}/root/run/systemd/transient/{ROLLBACK_TIMER}")


def test_the_rollback_timer_gets_the_configured_seconds_and_is_disarmed_after_confirm(
    lab: Lab, deployed: str
):
    """A deploy that changes the ruleset with flower_firewall_rollback_seconds = 123: while it waits
    for the new SSH connection, systemd holds a 2min 3s timer; once confirmed, none."""
    unit = transient_timer(lab)
    assert unit.parent.is_dir(), f"{unit.parent} is h1's transient units"
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):  # not armed (yet, or any more)
                seen.append(unit.read_text())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        changed = run_deploy(
            [DEPLOYED],
            {
                "flower_firewall_rollback_seconds": 123,
                "flower_monitoring_sources": ["10.77.0.1/32", "10.77.0.97/32"],
            },
        )
    finally:
        done.set()
        watcher.join()
        restored = run_deploy([DEPLOYED])
        assert restored.ok, restored.explain()
    assert changed.ok, changed.explain()
    assert changed.changed_hosts("Firewall") == [DEPLOYED], "the new ruleset was applied"
    assert seen, "the rollback timer was armed while the run confirmed"
    assert all("OnActiveSec=2min 3s" in text for text in seen), seen[0]
    assert not unit.exists(), "the timer is gone after the confirm"
    state = lab.ssh(DEPLOYED, ["systemctl", "is-active", ROLLBACK_TIMER]).stdout.strip()
    assert state == "inactive"


def test_systemd_reads_back_every_special_character_of_an_env_file_value(lab: Lab):
    """The env file's quoting (systemd_quote, as flower.env is written) against systemd itself:
    a service started with it sees exactly the value, every printable character included."""
    name = lab.base_hosts[0]["name"]
    value = f" #{string.punctuation} {string.ascii_letters}{string.digits} é€ \\\\n %h ${{X}} "
    env_file = "/run/flowerbed-test-quoting.env"
    written = f"PROBE={systemd_quote(value)}\n"
    lab.ssh(name, f"printf %s {shlex.quote(written)} > {env_file}", check=True)
    try:
        command = ["systemd-run", "--pipe", "--quiet", "--wait", "--collect"]
        read = lab.ssh(
            name, [*command, f"--property=EnvironmentFile={env_file}", "printenv", "PROBE"]
        )
        assert read.returncode == 0, read.stderr
        assert read.stdout == value + "\n"
    finally:
        lab.ssh(name, ["rm", "-f", env_file], check=True)
