"""Taking over the setup guide's hand-made Flower (issue 21, part 1), on a fresh host.

flowerbed is deployed once as `flower-old` only to get a venv on the host; that service is then
removed (its venv stays) and the guide's unit is written by hand: flower.service (flowerbed's
own unit name), 0.0.0.0:5555, the password on the command line, `--db` in /var/lib/flower. It
sees tasks from the lab's worker. A deploy that does not name it fails before any change, naming
the unit and port; a deploy naming it takes it over.
"""

from __future__ import annotations

import time

import pytest
from conftest import Lab
from deploy_helpers import run_deploy
from lab_worker import demo, flower_api

pytestmark = pytest.mark.lab

PASSWORD = "handmade-pw-7f3a9c"
UNIT = "/etc/systemd/system/flower.service"
DB = "/var/lib/flower/flower.db"
BACKUP = "/var/backups/flowerbed-takeover-flower.service"
TAKEOVER = {"flower_takeover_unit": "flower.service", "flower_takeover_db": DB}


def guide_unit(venv: str, broker: str) -> str:
    return f"""[Unit]
Description=Flower (by hand, after the setup guide)
After=network.target
[Service]
Environment=FLOWER_PASSWORD={PASSWORD}
Environment=CELERY_BROKER_URL={broker}
WorkingDirectory=/var/lib/flower
ExecStart={venv}/bin/celery flower --port=5555 --basic_auth=admin:${{FLOWER_PASSWORD}} \
--max_tasks=10000 --persistent=True --db={DB}
Restart=always
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture(scope="module")
def hand_made(lab: Lab, module_hosts) -> dict:
    host = module_hosts(prefix="to")
    name = host["name"]
    first = run_deploy(name, {"flower_service": "flower-old"})
    assert first.ok, first.explain()
    venv = lab.ssh(name, "readlink -f /opt/flower/venv", check=True).stdout.strip()
    for step in (
        "systemctl disable --now flower-old.service",
        "rm /etc/systemd/system/flower-old.service && systemctl daemon-reload",
        "mkdir -p /var/lib/flower",
    ):
        lab.ssh(name, step, check=True)
    unit = guide_unit(venv, lab.secrets["FLOWERBED_BROKER_URL"])
    lab.ssh(name, f"cat > {UNIT} <<'UNIT'\n{unit}UNIT", check=True)
    lab.ssh(name, "systemctl daemon-reload && systemctl enable --now flower.service", check=True)
    sent = demo(
        lab,
        "from flowerbed_demo.app import add\nprint(' '.join(add.delay(i, i).id for i in range(5)))",
    ).split()
    wait_for(lambda: lab.ssh(name, f"curl -sf -u admin:{PASSWORD} "
             "http://127.0.0.1:5555/api/tasks").stdout.count('"uuid"') >= len(sent),
             60, "the hand-made Flower sees the tasks")  # fmt: skip
    return {**host, "tasks": sent}


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(1)


def test_a_deploy_not_naming_it_is_refused_before_any_change(lab: Lab, hand_made: dict):
    name = hand_made["name"]
    before = lab.ssh(name, f"sha256sum {UNIT}", check=True).stdout
    refused = run_deploy(name)
    assert not refused.ok
    assert "flower.service" in refused.log and "5555" in refused.log
    assert "flower_takeover_unit" in refused.log
    assert lab.ssh(name, f"sha256sum {UNIT}", check=True).stdout == before
    assert lab.ssh(name, "systemctl is-active flower.service").stdout.strip() == "active"


def test_a_deploy_naming_it_takes_it_over(lab: Lab, hand_made: dict):
    name = hand_made["name"]
    taken = run_deploy(name, TAKEOVER)
    assert taken.ok, taken.explain()
    assert BACKUP in taken.log, "the report says what was kept where"
    kept = lab.ssh(name, f"stat -c '%a %U' {BACKUP}{UNIT}", check=True).stdout.split()
    assert kept == ["600", "root"]
    assert "Managed by flowerbed" in lab.ssh(name, f"head -1 {UNIT}", check=True).stdout
    assert lab.ssh(name, f"ls {BACKUP}/state/flower.db", check=True).returncode == 0
    listening = lab.ssh(name, "ss -Htln", check=True).stdout
    assert ":5555 " not in listening
    closed = lab.in_namespace("lab-allowed", ["curl", "-s", "-m", "3",
                              f"http://{hand_made['address']}:5555/"], timeout=10)  # fmt: skip
    assert closed.returncode != 0, "5555 is closed from lab-allowed"
    tasks = flower_api(lab, name, "/api/tasks")
    assert set(hand_made["tasks"]) <= set(tasks), "the old Flower's tasks are shown"
    units = lab.ssh(name, "systemctl cat '*' 2>/dev/null; ps -eo args", check=True).stdout
    assert PASSWORD not in units, "no plaintext password in a unit or the process list"


def test_a_second_run_changes_nothing(lab: Lab, hand_made: dict):
    again = run_deploy(hand_made["name"], TAKEOVER)
    assert again.ok and again.totals["success"] == 0, again.explain()
