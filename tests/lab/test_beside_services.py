"""Flower beside the host's other services (issue 18): a broker host, on a fresh host of its own.

Redis from Debian listens on every address with a password, and a Celery worker in lab-allowed
(the workers' network) uses it; a web server nobody declared listens on 8080. The firewall:
- refuses a deploy that declares neither, before anything on the host changes, naming both;
- with the broker opened to the workers' network, still refuses the undeclared service alone;
- once the operator agrees that 8080 closes, deploys: the worker keeps its one broker
  connection through the whole deploy (no reconnect in its log), 6379 answers lab-allowed and
  not lab-denied, 8080 answers no other machine, and a second run changes nothing.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, Lab
from deploy_helpers import run_deploy
from lab_worker import PYTHON, demo_env
from test_firewall import passes, tcp

pytestmark = pytest.mark.lab

BROKER_PORT = 6379
OTHER_PORT = 8080
WORKERS_NETWORK = "10.77.0.192/27"  # lab-allowed's
WORKER = "beside@lab-allowed"
BROKER_OPENING = {
    "port": BROKER_PORT,
    "sources": [WORKERS_NETWORK],
    "purpose": "Redis for the workers",
}
CHANGED_SINCE = "find /etc /opt /usr/local /srv /var/lib/flowerbed -newer {marker} -print"
LOST = "Connection to broker lost"


@pytest.fixture(scope="module")
def broker_host(lab: Lab, module_hosts, tmp_path_factory) -> dict:
    """A fresh host running Redis (for a worker elsewhere) and a service nobody declared."""
    host = module_hosts(prefix="bh")
    name, password = host["name"], secrets.token_urlsafe(24)
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
    lab.ssh(name, f"{install} redis-server", timeout=600, check=True)
    lab.ssh(
        name,
        f"printf 'bind * -::*\\nprotected-mode yes\\nrequirepass %s\\n' '{password}' "
        ">> /etc/redis/redis.conf && systemctl restart redis-server",
        check=True,
    )
    serve = ["python3", "-m", "http.server", "--bind", "0.0.0.0", str(OTHER_PORT)]
    lab.ssh(name, ["systemd-run", "--unit=beside-web", *serve], check=True)
    broker_url = f"redis://:{password}@{host['address']}:{BROKER_PORT}/0"
    log = tmp_path_factory.mktemp("beside") / "worker.log"
    worker = start_worker(lab, broker_url, log)
    try:
        wait_until(lambda: pings(lab, broker_url), 60, "the worker in lab-allowed to answer")
        assert passes(tcp(lab, "lab-denied", name, OTHER_PORT)), "8080 answers before a deploy"
        yield {"name": name, "broker_url": broker_url, "log": log}
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:  # cut off from its broker, it cannot say goodbye
            os.killpg(worker.pid, signal.SIGKILL)  # its pool process too
            worker.wait(timeout=10)


def start_worker(lab: Lab, broker_url: str, log: Path) -> subprocess.Popen:
    celery = str(REPO / ".venv" / "bin" / "celery")
    argv = [celery, "-A", "flowerbed_demo.app", "worker", "--concurrency=1", "--loglevel=INFO",
            f"--hostname={WORKER}"]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", "lab-allowed", *argv],
            stdout=out,
            stderr=out,
            env={**os.environ, **demo_env(broker_url)},
            start_new_session=True,
        )


def pings(lab: Lab, broker_url: str) -> bool:
    """The worker answers over the host's Redis, asked from the workers' network."""
    ask = (
        "from flowerbed_demo.probe import pool_size\n"
        f"print(pool_size({WORKER!r}, 3))"
    )  # fmt: skip
    asked = subprocess.run(
        ["ip", "netns", "exec", "lab-allowed", PYTHON, "-c", ask],
        capture_output=True, text=True, timeout=60, env={**os.environ, **demo_env(broker_url)},
    )  # fmt: skip
    return asked.returncode == 0 and asked.stdout.strip() == "1"


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(1)


def changed_since(lab: Lab, name: str, marker: str) -> list[str]:
    found = lab.ssh(name, CHANGED_SINCE.format(marker=marker) + " 2>/dev/null")
    return [line for line in found.stdout.splitlines() if line != marker]


def test_a_deploy_declaring_nothing_is_refused_before_any_change(lab: Lab, broker_host: dict):
    name, marker = broker_host["name"], "/run/beside-marker"
    lab.ssh(name, ["touch", marker], check=True)
    refused = run_deploy(name)
    assert not refused.ok, refused.explain()  # its only host failed: pyinfra prints no --json
    for named in (f"{BROKER_PORT}/tcp (redis-server", f"{OTHER_PORT}/tcp (python3"):
        assert named in refused.log, refused.explain()
    assert "flower_firewall_openings" in refused.log
    assert "flower_firewall_close_listeners" in refused.log
    # the refusal is the last operation started, and those before it only looked (the check
    # for another Flower, flowerbed/takeover.py, comes first)
    *looked, last = refused.log.split("--> Starting operation: ")[1:]
    assert "No listening service closed unless declared" in last, refused.explain()
    assert all("No changes" in op and "Success" not in op for op in looked), refused.explain()
    assert changed_since(lab, name, marker) == [], "a refused host was changed"
    assert "flowerbed" not in lab.ssh(name, ["nft", "list", "tables"], check=True).stdout
    assert passes(tcp(lab, "lab-denied", name, OTHER_PORT))


def test_the_broker_declared_the_undeclared_service_alone_is_still_refused(
    lab: Lab, broker_host: dict
):
    refused = run_deploy(broker_host["name"], {"flower_firewall_openings": [BROKER_OPENING]})
    assert not refused.ok
    assert f"{OTHER_PORT}/tcp (python3" in refused.log, refused.explain()
    assert f"{BROKER_PORT}/tcp" not in refused.log


def test_with_both_declared_the_worker_keeps_its_broker_connection_through_the_deploy(
    lab: Lab, broker_host: dict
):
    name, log = broker_host["name"], broker_host["log"]
    declared = {
        "flower_firewall_openings": [BROKER_OPENING],
        "flower_firewall_close_listeners": [f"{OTHER_PORT}/tcp"],
    }
    connected_before = log.read_text().count("Connected to redis://")
    deployed = run_deploy(name, declared)
    assert deployed.ok, deployed.explain()
    text = log.read_text()
    print(f"deploy of the broker host: {deployed.seconds:.1f} s; worker log: "
          f"{text.count(LOST)} lost connections, "
          f"{text.count('Connected to redis://') - connected_before} new ones")  # fmt: skip
    assert LOST not in text and text.count("Connected to redis://") == connected_before
    assert pings(lab, broker_host["broker_url"]), "the worker answers through the host's Redis"
    assert passes(tcp(lab, "lab-allowed", name, BROKER_PORT))
    assert tcp(lab, "lab-denied", name, BROKER_PORT) == "filtered"
    assert tcp(lab, "lab-allowed", name, OTHER_PORT) == "filtered", "agreed closed"
    again = run_deploy(name, declared)
    assert again.ok and again.totals["success"] == 0, again.explain()
