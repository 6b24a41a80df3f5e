"""Taking over a hand-made Flower (issue 21, part 1), on one fresh host.

The setup is the guide's own: Flower from a venv of its own (the lock flowerbed installs), run
by systemd as `flower-legacy.service` on 0.0.0.0:5555 with the broker URL and
`--basic_auth=admin:<password>` on its command line and `--persistent=True
--db=/var/lib/flower/flower.db`, watching the lab's broker (whose worker runs the producer's
tasks). In order:
  - a deploy without the takeover keys fails the host before any change, naming the unit, its
    addresses and its --db, with the fix filled in; the old Flower still answers;
  - naming ssh.service is refused, and ssh keeps running;
  - the takeover: 5555 is filtered from lab-allowed and nothing listens there; no password is
    in `ps` or a unit file; the backup and the new state file have their modes; every task the
    old Flower showed finished is shown by flowerbed's Flower through nginx;
  - a second run changes nothing;
  - a Flower started from a shell is refused (and never offered for a takeover as ssh.service).
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO, Lab
from deploy_helpers import DeployResult, run_deploy
from lab_worker import demo
from test_firewall import tcp
from test_rabbitmq import wait_for

pytestmark = pytest.mark.lab

LEGACY = "flower-legacy.service"
VENV = "/opt/flower-legacy"
DB = "/var/lib/flower/flower.db"
PORT = 5555
SENT = 20  # tasks sent to the lab's worker while the old Flower watches (the producer's come too)
SHELL_PORT = 5566
TAKEOVER = {"flower_takeover_unit": LEGACY, "flower_takeover_state": DB}
WATCHED = "/etc /opt /usr/local /srv /var/lib /var/backups"
SNAPSHOT = f"find {WATCHED} -xdev -printf '%p %y %m %u:%g\\n' 2>/dev/null | sort; true"
UNIT_DIRS = "/etc/systemd /run/systemd/system /lib/systemd/system /usr/lib/systemd/system"
BACKUP = "/var/backups/flowerbed-takeover-"
FINISHED = ("SUCCESS", "FAILURE")
PROXY = "http://10.77.0.1:3128"
LOCK = REPO / "flowerbed" / "locks" / "flower-2.2.0.txt"


def legacy_unit(broker_url: str, password: str) -> str:
    """The guide's unit: every secret on the command line."""
    return (
        "[Unit]\nDescription=Celery Flower\nAfter=network.target\n\n[Service]\n"
        f"ExecStart={VENV}/bin/celery --broker={broker_url} flower --port={PORT} "
        f"--basic_auth=admin:{password} --max_tasks=10000 --persistent=True --db={DB}\n"
        "Restart=always\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def setup_script(unit: str) -> str:
    apt = ["-o", f"Acquire::http::Proxy={PROXY}", "-o", f"Acquire::https::Proxy={PROXY}"]
    pip = [f"{VENV}/bin/pip", "install", "-q", "--proxy", PROXY, "--require-hashes", "-r"]
    return "\n".join([
        "set -e",
        shlex.join(["apt-get", *apt, "update", "-qq"]),
        "DEBIAN_FRONTEND=noninteractive " + shlex.join(["apt-get", *apt, "install", "-y", "-qq",
                                                        "python3-venv"]),
        shlex.join(["python3", "-m", "venv", VENV]),
        f"cat > /root/flower-lock.txt <<'EOF'\n{LOCK.read_text()}EOF",
        shlex.join([*pip, "/root/flower-lock.txt"]),
        "mkdir -p /var/lib/flower",
        f"cat > /etc/systemd/system/{LEGACY} <<'EOF'\n{unit}EOF",
        "systemctl daemon-reload",
        f"systemctl enable --now --quiet {LEGACY}",
    ])  # fmt: skip


@pytest.fixture(scope="module")
def legacy(lab: Lab, module_hosts) -> dict:
    """A fresh host running the guide's hand-made Flower: {name, password, broker_password}."""
    name = module_hosts(prefix="tko")["name"]
    password = secrets.token_urlsafe(12)
    broker_url = lab.secrets["FLOWERBED_BROKER_URL"]
    lab.ssh(name, setup_script(legacy_unit(broker_url, password)), timeout=600, check=True)
    wait_for(lambda: listening(lab, name, PORT), 60, "the old Flower to listen")
    demo(lab, f"from flowerbed_demo.app import add\nfor i in range({SENT}):\n    add.delay(i, i)")
    return {"name": name, "password": password, "broker": urlsplit(broker_url).password}


def listening(lab: Lab, name: str, port: int) -> bool:
    out = lab.ssh(name, ["ss", "-Htln", f"sport = :{port}"], check=True).stdout
    return bool(out.strip())


def old_tasks(lab: Lab, name: str, password: str) -> dict:
    """The old Flower's /api/tasks, asked on the host (the login goes to curl on stdin)."""
    curl = shlex.join(["curl", "-K", "-", "-sS", "--fail", "-m", "20",
                       f"http://127.0.0.1:{PORT}/api/tasks"])  # fmt: skip
    config = f'user = "admin:{password}"'
    done = lab.ssh(name, f"printf '%s\\n' {shlex.quote(config)} | {curl}", check=True)
    return json.loads(done.stdout)


def dashboard_tasks(lab: Lab, name: str) -> dict:
    """flowerbed's Flower's /api/tasks through nginx, from lab-allowed, logged in."""
    url = f"https://{lab.host(name)['fqdn']}/api/tasks"
    argv = ["curl", "-sS", "--fail", "-m", "20", "--cacert", lab.state["acme"]["root"],
            "-u", ":".join(lab.dashboard_login), url]  # fmt: skip
    result = lab.in_namespace("lab-allowed", argv)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def snapshot(lab: Lab, name: str) -> list[str]:
    return lab.ssh(name, SNAPSHOT, timeout=120, check=True).stdout.splitlines()


def refused(result: DeployResult, name: str) -> str:
    assert not result.ok, "the deploy went through"
    assert f"[{name}]" in result.log and "Error: executed 0 commands" in result.log, result.log
    return result.log


def test_a_flower_not_named_is_refused_and_nothing_changes(lab: Lab, legacy: dict):
    name = legacy["name"]
    before = snapshot(lab, name)
    result = run_deploy([name])
    log = refused(result, name)
    assert "another Flower runs on this host" in log
    assert f"{LEGACY} listens on 0.0.0.0:{PORT}" in log
    assert f"--db {DB}" in log
    assert f"flower_takeover_unit = '{LEGACY}'" in log
    assert f"flower_takeover_state = '{DB}'" in log
    assert legacy["password"] not in result.stdout + result.stderr
    assert legacy["broker"] not in result.stdout + result.stderr
    assert snapshot(lab, name) == before
    assert old_tasks(lab, name, legacy["password"]) is not None  # it still answers


def test_a_unit_that_runs_no_flower_is_refused_and_left_running(lab: Lab, legacy: dict):
    name = legacy["name"]
    before = snapshot(lab, name)
    result = run_deploy([name], data={**TAKEOVER, "flower_takeover_unit": "ssh.service"})
    log = refused(result, name)
    assert "ssh.service does not run Flower" in log
    assert lab.ssh(name, ["systemctl", "is-active", "ssh.service"]).stdout.strip() == "active"
    assert snapshot(lab, name) == before


def test_the_hand_made_flower_is_taken_over(lab: Lab, legacy: dict):
    name = legacy["name"]
    finished = wait_for(
        lambda: (done := {k for k, t in old_tasks(lab, name, legacy["password"]).items()
                          if t["state"] in FINISHED}) and len(done) >= SENT and done,
        120, "the old Flower to show the sent tasks finished by the lab's worker",
    )  # fmt: skip
    started = time.monotonic()
    result = run_deploy([name], data=TAKEOVER)
    assert result.ok, result.explain()
    print(f"takeover run: {time.monotonic() - started:.1f} s, {len(finished)} old tasks")
    assert f"takeover: {LEGACY} stopped and disabled" in result.log
    assert "records copied from dbm." in result.log
    # the port is closed, nothing listens on it
    assert tcp(lab, "lab-allowed", name, PORT) == "filtered"
    assert not listening(lab, name, PORT)
    # no password in the process list or a unit file
    processes = lab.ssh(name, ["ps", "-eo", "args"], check=True).stdout
    units = lab.ssh(name, f"cat $(find {UNIT_DIRS} -type f 2>/dev/null)", check=True).stdout
    for secret in (legacy["password"], legacy["broker"]):
        assert secret not in processes
        assert secret not in units
        assert secret not in result.stdout + result.stderr
    # what was kept, and how
    modes = lab.ssh(name, f"find {BACKUP}* /var/lib/flower -printf '%p %y %m %u:%g\\n'").stdout
    backup = [line.split() for line in modes.splitlines() if line.startswith(BACKUP)]
    assert {(kind, mode, owner) for _, kind, mode, owner in backup} == {
        ("d", "700", "root:root"), ("f", "600", "root:root")}  # fmt: skip
    kept = {Path(path).name for path, *_ in backup}
    assert {LEGACY, "README"} <= kept and any(p.startswith("flower.db") for p in kept)
    state = [line.split() for line in modes.splitlines() if line.startswith("/var/lib/flower/")]
    assert state and all((m, o) == ("600", "flower:flower") for _, _, m, o in state), state
    # every task the old Flower showed finished is shown by flowerbed's Flower
    shown = wait_for(lambda: set(dashboard_tasks(lab, name)) >= finished and finished, 120,
                     "flowerbed's Flower to show the old tasks")  # fmt: skip
    assert shown


def test_a_second_run_changes_nothing(lab: Lab, legacy: dict):
    result = run_deploy([legacy["name"]], data=TAKEOVER)
    assert result.ok, result.explain()
    print(f"no-op run after the takeover: {result.seconds:.1f} s")
    assert result.totals["success"] == 0, result.explain()


def test_a_flower_started_from_a_shell_is_refused(lab: Lab, legacy: dict):
    name = legacy["name"]
    broker_url = lab.secrets["FLOWERBED_BROKER_URL"]
    start = (f"nohup {VENV}/bin/celery --broker={shlex.quote(broker_url)} flower "
             f"--port={SHELL_PORT} >/dev/null 2>&1 & echo $!")  # fmt: skip
    pid = lab.ssh(name, start, check=True).stdout.strip()
    try:
        wait_for(lambda: listening(lab, name, SHELL_PORT), 60, "the shell's Flower to listen")
        result = run_deploy([name], data=TAKEOVER)
        log = refused(result, name)
        assert "a Flower started outside systemd" in log
        assert f"process {pid} (" in log
        assert f":{SHELL_PORT}" in log
        assert "flower_takeover_unit = 'ssh.service'" not in log
        assert legacy["broker"] not in result.stdout + result.stderr
    finally:
        lab.ssh(name, ["kill", pid])
