"""Flower on RabbitMQ: a fresh lab host deployed against the lab's RabbitMQ
(lab/lab_rabbitmq.py, started for this module only), with broker_api = the management API
URL of a read-only monitoring user.

The host's Flower must show RabbitMQ's queues with their message counts (Broker page and
/api/queues/length, read from the management API), the RabbitMQ worker and its tasks, and
the app's registered tasks in -A mode; the broker password (in both URLs) must appear nowhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from conftest import REPO, Lab, lab_cli
from deploy_helpers import DeployResult, assert_no_secret, run_deploy
from test_flower import DEMO_APP, readable_by_nobody

pytestmark = pytest.mark.lab

LAB_RABBITMQ = ["python3", str(REPO / "lab" / "lab_rabbitmq.py")]
PYTHON = str(REPO / ".venv" / "bin" / "python")


@pytest.fixture(scope="module")
def rabbitmq(lab: Lab) -> dict:
    started = subprocess.run([*LAB_RABBITMQ, "up"], capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    lab.state = Lab.load().state
    yield lab.state["rabbitmq"]
    subprocess.run([*LAB_RABBITMQ, "down"], capture_output=True, timeout=120)
    lab.state = Lab.load().state


@pytest.fixture(scope="module")
def rabbit_passwords(lab: Lab, rabbitmq: dict) -> list[str]:
    """Celery's AMQP password and the management API user's (Flower's broker_api)."""
    passwords = [urlsplit(lab.secrets[rabbitmq[key]]).password for key in ("url_env", "api_env")]
    assert all(passwords) and passwords[0] != passwords[1]
    return passwords


@pytest.fixture(scope="module")
def rabbit_host(lab: Lab, rabbitmq: dict, rabbit_passwords: list[str]):
    """A fresh host deployed against RabbitMQ: (name, the first deploy's result)."""
    name = f"rq{os.getpid() % 1000}"
    lab_cli("host-up", name)
    lab.state = Lab.load().state
    try:
        result = run_deploy([name], data=rabbitmq["deploy_data"])
        assert result.ok, result.explain()
        assert_no_secret(result, rabbit_passwords)
        yield name, result
    finally:
        lab_cli("host-down", name)
        lab.state = Lab.load().state


def login(lab: Lab) -> str:
    return ":".join(lab.dashboard_login)


def dashboard(lab: Lab, name: str, path: str) -> str:
    """GET a dashboard path through nginx from lab-allowed, logged in."""
    url = f"https://{lab.host(name)['fqdn']}{path}"
    argv = ["curl", "-sS", "--fail", "-m", "20", "--cacert", lab.state["acme"]["root"]]
    result = lab.in_namespace("lab-allowed", [*argv, "-u", login(lab), url])
    assert result.returncode == 0, f"{path}: {result.stderr}"
    return result.stdout


def send_tasks(lab: Lab, rabbitmq: dict, code: str) -> None:
    env = {
        **os.environ,
        "CELERY_BROKER_URL": lab.secrets[rabbitmq["url_env"]],
        "PYTHONPATH": str(REPO / "lab" / "demo_app"),
    }
    subprocess.run([PYTHON, "-c", code], env=env, check=True, timeout=60, capture_output=True)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def test_flower_shows_the_rabbitmq_worker_and_its_tasks(lab: Lab, rabbitmq: dict, rabbit_host):
    name, _ = rabbit_host
    workers = json.loads(dashboard(lab, name, "/api/workers"))
    assert list(workers) == [rabbitmq["worker"]], "only RabbitMQ's worker, not Redis'"
    send_tasks(lab, rabbitmq, "from flowerbed_demo.app import add\nadd.delay(20, 22)")

    def added() -> list[dict]:
        tasks = json.loads(dashboard(lab, name, "/api/tasks?taskname=flowerbed_demo.add"))
        return [t for t in tasks.values() if t["state"] == "SUCCESS" and t["result"] == "42"]

    task = wait_for(added, 30, "the add task on Flower's tasks API")[0]
    assert task["worker"] == rabbitmq["worker"]


def test_broker_page_and_queue_lengths_come_from_the_management_api(
    lab: Lab, rabbitmq: dict, rabbit_host
):
    """Tasks that wait in the queue (one slow worker) show as messages in RabbitMQ's counts.
    Celery's AMQP user has no management access: the counts come through broker_api only."""
    name, _ = rabbit_host
    send_tasks(
        lab,
        rabbitmq,
        "from flowerbed_demo.app import sleep\nfor _ in range(12): sleep.delay(2)",
    )

    def waiting() -> int:
        lengths = json.loads(dashboard(lab, name, "/api/queues/length"))["active_queues"]
        return sum(q["messages"] for q in lengths if q["name"] == "celery")

    messages = wait_for(waiting, 30, "messages in the celery queue")
    assert 0 < messages <= 12
    broker_page = dashboard(lab, name, "/broker")
    assert "celery" in broker_page and f"{lab.state['bridge']['address']}:5672" in broker_page


def test_no_password_in_processes_files_or_journal(
    lab: Lab, rabbit_host, rabbit_passwords: list[str]
):
    name, _ = rabbit_host
    show = ["systemctl", "show", "flower.service", "-p", "Environment", "-p", "ExecStart"]
    journal = lab.ssh(name, ["journalctl", "--no-pager"], check=True).stdout
    assert "flower" in journal
    broker_page = dashboard(lab, name, "/broker")
    for password in rabbit_passwords:
        assert password not in lab.ssh(name, ["ps", "-eo", "args"], check=True).stdout
        assert password not in lab.ssh(name, show, check=True).stdout
        assert password not in journal
        assert readable_by_nobody(lab, name, password) == []
        assert password not in broker_page, "Flower's Broker page masks the URL's password"


def test_verify_and_redeploy_on_rabbitmq(lab: Lab, rabbitmq: dict, rabbit_host, rabbit_passwords):
    name, _ = rabbit_host
    verified = run_deploy([name], data=rabbitmq["deploy_data"], deploy_file="verify.py")
    assert verified.ok, verified.explain()
    assert verified.totals["success"] == 0 and verified.totals["error"] == 0
    assert_no_secret(verified, rabbit_passwords)
    again = run_deploy([name], data=rabbitmq["deploy_data"])
    assert again.ok and again.totals["success"] == 0, again.explain()


def test_app_mode_on_rabbitmq_shows_the_apps_registered_tasks(
    lab: Lab, rabbitmq: dict, rabbit_host, rabbit_passwords: list[str]
):
    name, _ = rabbit_host
    since = lab.ssh(name, ["date", "+%s"], check=True).stdout.strip()
    result: DeployResult = run_deploy([name], data={**rabbitmq["deploy_data"], **DEMO_APP})
    assert result.ok, result.explain()
    assert_no_secret(result, rabbit_passwords)
    assert "--app=flowerbed_demo.app:app" in lab.ssh(name, ["ps", "-eo", "args"]).stdout
    banner = lab.ssh(name, ["journalctl", "-u", "flower", "--since", f"@{since}"]).stdout
    for task in ("flowerbed_demo.add", "flowerbed_demo.fail", "flowerbed_demo.sleep"):
        assert f"'{task}'" in banner, "Flower's start banner lists the app's tasks"
    assert f"amqp://{rabbitmq['user']}:**@{rabbitmq['address']}//" in banner
    assert not any(password in banner for password in rabbit_passwords)
    workers = json.loads(dashboard(lab, name, "/api/workers?refresh=1"))
    registered = workers[rabbitmq["worker"]]["registered"]
    assert {"flowerbed_demo.add", "flowerbed_demo.sleep"} <= set(registered)
