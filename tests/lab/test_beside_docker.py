"""Flower beside Docker (issue 18): Debian's docker.io on a fresh host, a container publishing a
port, and flowerbed's firewall.

Other machines reach a published port through Docker's DNAT and its forward chain; flowerbed's
table hooks input only. So the container answers lab-allowed and lab-denied exactly as before,
during and after the deploy (nothing declared: its docker-proxy listener is not counted as cut
off). A Docker restart rebuilds Docker's own rules and leaves flowerbed's table alone; after a
reboot both are back. The image is made on the host from busybox-static (the lab has no
registry).
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from conftest import Lab
from deploy_helpers import run_deploy
from test_firewall import boot_id, table

pytestmark = pytest.mark.lab

PORT = 8081
IMAGE = "flowerbed-test/busybox"
CLIENTS = ("lab-allowed", "lab-denied")


@pytest.fixture(scope="module")
def docker_host(lab: Lab, module_hosts) -> dict:
    host = module_hosts(prefix="dk")
    name, token = host["name"], f"container on {host['name']}"
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
    # Debian 13 ships the docker command in docker-cli, 12 in docker.io itself
    cli = "$(apt-cache show docker-cli >/dev/null 2>&1 && echo docker-cli)"
    lab.ssh(name, f"{install} docker.io {cli} busybox-static", timeout=900, check=True)
    for step in (
        "mkdir -p /srv/image/bin /srv/image/www && cp /bin/busybox /srv/image/bin/",
        f"echo '{token}' > /srv/image/www/index.html",
        f"tar -C /srv/image -c . | docker import - {IMAGE}",
        f"docker run -d --name web --restart=always -p {PORT}:{PORT} {IMAGE} "
        f"/bin/busybox httpd -f -p {PORT} -h /www",
    ):
        lab.ssh(name, step, timeout=300, check=True)
    host = {**host, "body": f"{token}\n"}
    wait_for(lambda: all(answer(lab, host, c) == host["body"] for c in CLIENTS), 60,
             "the container answers both clients")  # fmt: skip
    return host


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.5)


def answer(lab: Lab, host: dict, namespace: str) -> str:
    """The container's page as a client in `namespace` gets it ('' when it cannot)."""
    got = lab.in_namespace(
        namespace, ["curl", "-s", "-m", "3", f"http://{host['address']}:{PORT}/"], timeout=10
    )
    return got.stdout if got.returncode == 0 else ""


class Poller(threading.Thread):
    """Asks the container from the lab machine every 0.2 s until stopped; counts failures."""

    def __init__(self, host: dict):
        super().__init__(daemon=True)
        self.url, self.body = f"http://{host['address']}:{PORT}/", host["body"]
        self.asked = self.failed = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.asked += 1
            try:
                with urllib.request.urlopen(self.url, timeout=3) as response:
                    ok = response.read().decode() == self.body
            except OSError:
                ok = False
            self.failed += not ok
            self.done.wait(0.2)


def docker_rules(lab: Lab, name: str) -> str:
    return lab.ssh(name, "iptables-save -t nat | grep -c 'DOCKER'", check=True).stdout.strip()


def test_a_published_port_answers_the_same_before_during_and_after(lab: Lab, docker_host: dict):
    name = docker_host["name"]
    rules = docker_rules(lab, name)
    poller = Poller(docker_host)
    poller.start()
    try:
        deployed = run_deploy(name)
    finally:
        poller.done.set()
        poller.join()
    assert deployed.ok, deployed.explain()
    print(f"the container through the deploy: {poller.asked} requests, {poller.failed} failed")
    assert poller.asked > 20 and poller.failed == 0
    for client in CLIENTS:
        assert answer(lab, docker_host, client) == docker_host["body"], client
    assert docker_rules(lab, name) == rules, "Docker's rules are as they were"
    again = run_deploy(name)
    assert again.ok and again.totals["success"] == 0, again.explain()


def test_a_docker_restart_and_a_reboot_keep_both(lab: Lab, docker_host: dict):
    name = docker_host["name"]
    ours = table(lab, name)
    assert "policy drop" in ours, "flowerbed's table is loaded"
    lab.ssh(name, ["systemctl", "restart", "docker"], timeout=120, check=True)
    wait_for(lambda: answer(lab, docker_host, "lab-denied") == docker_host["body"], 60,
             "the container answers after Docker's restart")  # fmt: skip
    assert table(lab, name) == ours, "Docker's restart left flowerbed's table alone"
    booted = boot_id(lab, name)
    lab.ssh(name, ["systemctl", "reboot"])  # (ssh may end before it hears the exit status)
    wait_for(lambda: lab.ssh(name, ["true"], timeout=10).returncode == 0 and
             boot_id(lab, name) != booted, 120, "the host is back from its reboot")  # fmt: skip
    wait_for(lambda: all(answer(lab, docker_host, c) == docker_host["body"] for c in CLIENTS),
             120, "the container answers after the reboot")  # fmt: skip
    assert table(lab, name) == ours, "flowerbed's table is back after the reboot"
