"""The way real servers are reached: a non-root `deploy` user with passwordless sudo.

One fresh host for the module, set up the way inventory/prod.py describes a real server: a
`deploy` user with the operator's SSH key and `NOPASSWD` sudo, and root's SSH login refused, so
nothing can quietly log in as root. Its inventory data is `ssh_user="deploy"`, `_sudo=True`
(tests/inventories/lab.py's per-host data). The deploy, a second run, verify.py and rotate.py
all run as that user; while the deploy and the rotation run, a watcher on the host
(tests/secret_watch.py, inotify) reports every file that holds a secret while others can read
it, in the temp directories, the deploy user's home and /etc, and any left in the temp
directories afterwards.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Lab, run
from deploy_helpers import DeployResult, assert_no_secret, run_deploy
from dotenv import dotenv_values
from watch_helpers import HostSecretWatch

from flowerbed.firewall import SCRIPT, STATE_DIR

pytestmark = pytest.mark.lab

USER = "deploy"
HOME = f"/home/{USER}"
KEYS = f"{HOME}/.ssh/authorized_keys"
SUDO_DATA = {"ssh_user": USER, "_sudo": True}
INVENTORY = "tests/inventories/lab.py"  # inventory/lab.py plus per-host data
BOOT_RULESET = "/etc/flowerbed/firewall.nft"
ACCEPTED = re.compile(r"Accepted publickey for (\S+) from \S+ port (\d+)")
HTPASSWD = "/etc/nginx/flowerbed.htpasswd"
SSH_OPTIONS = [
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
]  # fmt: skip


def ssh_as(lab: Lab, host: dict, user: str, command: str) -> list[str]:
    return ["ssh", "-i", lab.state["ssh_key"], *SSH_OPTIONS, f"{user}@{host['address']}", command]


def sudo(lab: Lab, host: dict, command: list[str], check: bool = True) -> str:
    """A command as root, through the deploy user's sudo (root cannot log in)."""
    done = run(ssh_as(lab, host, USER, shlex.join(["sudo", "-n", *command])), check=check)
    return done.stdout


def make_deploy_user(lab: Lab, name: str) -> None:
    """sudo installed, `deploy` with the lab's key and NOPASSWD sudo, root's login refused."""
    proxy = f"Acquire::http::Proxy={lab.state['proxy']}"
    steps = [
        ["apt-get", "-o", proxy, "-q", "update"],
        ["apt-get", "-o", proxy, "-q", "install", "-y", "--no-install-recommends", "sudo"],
        ["useradd", "--create-home", "--shell", "/bin/bash", USER],
        ["install", "-d", "-m", "700", "-o", USER, "-g", USER, f"{HOME}/.ssh"],
        ["install", "-m", "600", "-o", USER, "-g", USER, "/root/.ssh/authorized_keys", KEYS],
    ]  # fmt: skip
    for step in steps:
        lab.ssh(name, step, timeout=300, check=True)
    lab.ssh(name, f"echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{USER}", check=True)
    lab.ssh(name, ["chmod", "440", f"/etc/sudoers.d/{USER}"], check=True)
    lab.ssh(name, ["visudo", "-c"], check=True)
    # sshd takes the first value it reads: a drop-in before the main file's own
    lab.ssh(name, "echo 'PermitRootLogin no' > /etc/ssh/sshd_config.d/00-no-root.conf", check=True)
    lab.ssh(name, ["systemctl", "reload", "ssh"], check=True)


@pytest.fixture(scope="module")
def sudo_host(lab: Lab, module_hosts) -> dict:
    host = module_hosts()
    make_deploy_user(lab, host["name"])
    refused = run(ssh_as(lab, host, "root", "true"))
    assert refused.returncode != 0, "root can no longer log in"
    assert sudo(lab, host, ["id", "-un"]).strip() == "root", "deploy's sudo needs no password"
    return host


def secrets_of(env_file: str | Path) -> list[list[str]]:
    """[label, value] for every secret in an env file, and each password inside one."""
    found = []
    for key, value in dotenv_values(env_file).items():
        if not value:
            continue
        found.append([key, value])
        for position, entry in enumerate(value.split(",")):
            user, colon, password = entry.partition(":")
            if colon and "//" not in entry:
                found.append([f"{key} password #{position + 1}", password])
        if "//" in value and (password := urlsplit(value).password):
            found.append([f"{key} password", password])
    # the dashboard logins reach hosts only as bcrypt hashes: any such hash is a secret too
    return [pair for pair in found if len(pair[1]) >= 8] + [["a bcrypt hash", "$2b$"]]


class SecretWatch(HostSecretWatch):
    """tests/secret_watch.py on the host, through the deploy user's sudo, for a `with`."""

    def __init__(self, lab: Lab, host: dict, secrets: list[list[str]]):
        temp = sudo(lab, host, ["-u", USER, "sh", "-c", 'echo "${TMPDIR:-/tmp}"']).strip()
        temp_dirs = sorted({temp, "/tmp", "/var/tmp", "/dev/shm", HOME})
        super().__init__(
            lambda command: ssh_as(lab, host, USER, command),
            secrets,
            watched=[*temp_dirs, "/etc"],
            temp_dirs=temp_dirs,
            as_root=["sudo", "-n"],
        )

    def saw_a_temp_upload(self) -> bool:
        """Whether pyinfra's sudo uploads went through a watched temp directory."""
        names = [Path(event["path"]).name for event in self.found("created")]
        return any(name.startswith("pyinfra-") for name in names)


def as_deploy_in_session(lab: Lab, host: dict, command: list[str]) -> tuple[str, str]:
    """(the client port of this SSH session, the output of `command` as root in it)."""
    shell = f'echo "$SSH_CLIENT"; {shlex.join(["sudo", "-n", *command])}'
    client, _, output = run(ssh_as(lab, host, USER, shell), check=True).stdout.partition("\n")
    return client.split()[1], output


def journal_cursor(lab: Lab, host: dict) -> tuple[str, str]:
    """(where the host's journal ends now: what is logged later comes after it, the client port
    of the session that asked: its own login may be logged just after)."""
    show = ["journalctl", "-n", "1", "-o", "cat", "--show-cursor", "--no-pager"]
    port, shown = as_deploy_in_session(lab, host, show)
    return shown.rsplit("-- cursor: ", 1)[1].strip(), port


@dataclass
class Journal:
    """What sshd and sudo logged on the host after a cursor, without the sessions that marked
    the cursor and read the journal."""

    logins: list[str]  # the user of each accepted SSH login
    as_root: list[str]  # each command the deploy user ran as root through sudo

    @classmethod
    def since(cls, lab: Lab, host: dict, mark: tuple[str, str]) -> Journal:
        cursor, marker_port = mark
        read = ["journalctl", f"--after-cursor={cursor}", "-o", "json",
                "-t", "sshd", "-t", "sshd-session", "-t", "sudo", "--no-pager"]  # fmt: skip
        reader_port, entries = as_deploy_in_session(lab, host, read)
        logins, as_root = [], []
        for entry in map(json.loads, entries.splitlines()):
            message = entry.get("MESSAGE") or ""
            if not isinstance(message, str):  # journald's bytes as a list of ints
                message = bytes(message).decode(errors="replace")
            if (found := ACCEPTED.search(message)) and found[2] not in (marker_port, reader_port):
                logins.append(found[1])
            user, _, fields = message.strip().partition(" : ")
            if entry.get("SYSLOG_IDENTIFIER") == "sudo" and user == USER and "USER=root" in fields:
                as_root.append(fields.partition("COMMAND=")[2])
        return cls(logins, as_root)


def deploy_as_deploy(host: dict, **kwargs) -> DeployResult:
    env = {
        "FLOWERBED_TEST_HOST_DATA": json.dumps({host["name"]: SUDO_DATA}),
        **kwargs.pop("env", {}),
    }
    return run_deploy([host["name"]], inventory=INVENTORY, env=env, **kwargs)


@pytest.fixture(scope="module")
def deployed(lab: Lab, sudo_host: dict) -> tuple[DeployResult, SecretWatch, Journal]:
    """The whole deploy of the fresh host, as `deploy`, watched; what sshd and sudo logged
    during it alone (from a cursor marked once the watcher's own session is in)."""
    with SecretWatch(lab, sudo_host, secrets_of(lab.state["secrets_file"])) as watch:
        mark = journal_cursor(lab, sudo_host)
        result = deploy_as_deploy(sudo_host)
        journal = Journal.since(lab, sudo_host, mark)
    assert result.ok, result.explain()
    print(f"first deploy as {USER} with sudo: {result.seconds:.1f} s")
    return result, watch, journal


def test_the_whole_deploy_runs_as_a_sudo_user(lab: Lab, sudo_host: dict, deployed):
    result, _, journal = deployed
    assert result.totals["error"] == 0 and result.totals["success"] > 0
    assert_no_secret(result, [value for _, value in secrets_of(lab.state["secrets_file"])])
    for unit in ("flower.service", "nginx.service", "flowerbed-firewall.service"):
        assert sudo(lab, sudo_host, ["systemctl", "is-active", unit]).strip() == "active", unit
    # the deploy's own sessions were deploy's, never root's (root cannot log in): sshd says so,
    # in what it logged during the deploy alone; its run and the firewall's confirming login
    assert journal.logins.count(USER) >= 2 and set(journal.logins) == {USER}, journal.logins
    assert len(journal.as_root) > 10, "deploy's sudo ran the operations as root"


def test_no_secret_upload_is_ever_readable_by_others_or_left_behind(deployed):
    _, watch, _ = deployed
    assert watch.secrets, "the lab has secrets to look for"
    assert watch.saw_a_temp_upload(), "the watcher saw pyinfra's temp files for the uploads"
    assert watch.found("readable") == [], "a file holding a secret was readable by others"
    assert watch.found("left") == [], "a file holding a secret was left in a temp directory"


def test_the_firewall_is_confirmed_by_a_new_login_through_sudo(lab: Lab, sudo_host, deployed):
    result, _, journal = deployed
    assert result.changed_hosts("Firewall rules") == [sudo_host["name"]]
    # only a confirm makes the loaded ruleset the boot ruleset and disarms the rollback timer
    boot = sudo(lab, sudo_host, ["cat", BOOT_RULESET])
    live = sudo(lab, sudo_host, ["nft", "list", "table", "inet", "flowerbed"])
    digest = boot.split("flowerbed sha256:")[1].split('"')[0]
    assert f"flowerbed sha256:{digest}" in live, "the confirmed ruleset is the live one"
    # the deploy's own sudo applied that ruleset and confirmed it (sudo's log of the run)
    switch = f"{SCRIPT} {STATE_DIR} {BOOT_RULESET}"
    for step in (f"apply {digest}", f"confirm {digest}"):
        assert any(f"{switch} {step}" in command for command in journal.as_root), (
            step, journal.as_root,
        )  # fmt: skip
    timers = sudo(lab, sudo_host, ["systemctl", "list-timers", "--all", "--no-legend"])
    assert "flowerbed" not in timers, f"a rollback timer is still armed:\n{timers}"


def test_a_second_run_as_the_sudo_user_changes_nothing(sudo_host, deployed):
    again = deploy_as_deploy(sudo_host)
    assert again.ok, again.explain()
    assert again.totals["success"] == 0, again.explain()
    print(f"no-op run as {USER} with sudo: {again.seconds:.1f} s")


def test_a_flower_that_hit_its_start_limit_is_started_by_the_next_run(
    lab: Lab, sudo_host, deployed
):
    restart = ["systemctl", "restart", "flower.service"]
    for _ in range(10):  # more starts than StartLimitBurst (5) within its interval
        if run(ssh_as(lab, sudo_host, USER, shlex.join(["sudo", "-n", *restart]))).returncode:
            break
    state = ["systemctl", "show", "-P", "Result", "flower.service"]
    assert sudo(lab, sudo_host, state).strip() == "start-limit-hit"
    again = deploy_as_deploy(sudo_host)
    assert again.ok, again.explain()
    active = sudo(lab, sudo_host, ["systemctl", "is-active", "flower.service"]).strip()
    assert active == "active", "the deploy cleared the start limit and started Flower"


def test_verify_runs_as_the_sudo_user(sudo_host, deployed, tmp_path: Path):
    summary = tmp_path / "verify.json"
    result = deploy_as_deploy(
        sudo_host,
        data={"flower_verify_summary_file": str(summary)},
        flags=("-y",),
        deploy_file="verify.py",
    )
    assert result.ok, result.explain()
    layers = json.loads(summary.read_text())["hosts"][sudo_host["name"]]["layers"]
    # the layers that need root on the host: nginx -t, the nft table, systemd-analyze
    for layer in ("unit", "nginx_config", "firewall", "sandbox", "https"):
        assert layers[layer]["ok"], f"{layer}: {layers[layer]}"


def test_a_rotation_runs_as_the_sudo_user_and_leaves_no_readable_secret(
    lab: Lab, sudo_host: dict, deployed, tmp_path: Path
):
    env_file = tmp_path / "ops.env"
    shutil.copy(lab.state["secrets_file"], env_file)
    env_file.chmod(0o600)
    user, _ = lab.dashboard_login
    new_login = f"{user}:{secrets.token_urlsafe(24)}"
    before = sudo(lab, sudo_host, ["sha256sum", HTPASSWD])
    try:
        watched = [*secrets_of(env_file), ["the new password", new_login.partition(":")[2]]]
        with SecretWatch(lab, sudo_host, watched) as watch:
            rotated = deploy_as_deploy(
                sudo_host,
                flags=("-y",),
                deploy_file="rotate.py",
                env={
                    "FLOWERBED_ENV_FILE": str(env_file),
                    "FLOWERBED_NEW_DASHBOARD_USERS": new_login,
                },
            )
        assert rotated.ok, rotated.explain()
        assert "accepts the new password and refuses the old one" in rotated.log
        assert sudo(lab, sudo_host, ["sha256sum", HTPASSWD]) != before
        assert_no_secret(rotated, [value for _, value in watched[:-1]])
        assert watch.found("readable") == [], "a file holding a secret was readable by others"
        assert watch.found("left") == [], "a file holding a secret was left in a temp directory"
        stat = sudo(lab, sudo_host, ["stat", "-c", "%a %U:%G", HTPASSWD]).strip()
        assert stat == "640 root:www-data"
        leftovers = sudo(lab, sudo_host, ["find", *watch.temp_dirs, "-name", "pyinfra-*"])
        assert leftovers == "", f"pyinfra's temp files were left: {leftovers}"
    finally:
        restored = deploy_as_deploy(sudo_host)
        assert restored.ok, restored.explain()
