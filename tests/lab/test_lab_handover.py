"""One lab per machine: a lab coming up stops what a lab from another checkout left behind.

A second checkout (a copy of lab/ in a temp directory, sharing this repo's venv) brings its
own lab up with one host. This checkout's `lab.py up` must then stop that lab's hosts and its
services (pebble, Redis, the DNS, the proxy, the worker and its producer): left running, they
keep the machine's ports and this lab's clients meet the other lab's pebble (a TLS error) and
Redis (a refused password). The same for a lab whose processes were killed, with the
machine's active-lab marker naming a checkout that no longer exists.

Both cases rebuild the shared lab's hosts: they run last (lab_lifecycle) and leave it up, with
a lab the user had up before the session (`make demo`) deployed again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
from conftest import LAB_HOSTS, REPO, Lab, lab_cli, restore_users_lab, run

pytestmark = [pytest.mark.lab, pytest.mark.lab_lifecycle]

CACHE = Path(os.environ.get("FLOWERBED_LAB_CACHE", "/var/cache/flowerbed-lab"))
ACTIVE_LAB = CACHE / "active-lab"
SERVICES = ("tinyproxy", "dns", "pebble", "redis", "worker", "producer")
GATEWAY = "10.77.0.1"


class ForeignCheckout:
    """A second checkout of the lab, in a temp directory, with its own .lab."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flowerbed-foreign-"))
        ignore = shutil.ignore_patterns("node_modules", "__pycache__")
        shutil.copytree(REPO / "lab", self.root / "lab", ignore=ignore)
        (self.root / ".venv").symlink_to(REPO / ".venv")  # its worker runs from the venv
        self.lab_dir = self.root / ".lab"

    def cli(self, *args: str, timeout: float = 300) -> None:
        env = {k: v for k, v in os.environ.items() if k != "FLOWERBED_LAB_DIR"}
        command = ["python3", str(self.root / "lab" / "lab.py"), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root
        )
        assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"

    def processes(self) -> dict[str, tuple[int, str]]:
        """Its lab processes by PID file, with each one's start time (a reused PID differs)."""
        found = {}
        for pid_file in (self.lab_dir / "run").glob("*.pid"):
            pid = int(pid_file.read_text())
            found[pid_file.stem] = (pid, start_time(pid))
        return found

    def host_inits(self) -> dict[str, tuple[int, str]]:
        """Its hosts' init processes (children of their nspawn): a killed nspawn leaves them."""
        inits = {}
        for name, (pid, _) in self.processes().items():
            if name.startswith("nspawn-"):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                assert len(children) == 1, f"{name} runs one init: {children}"
                init = int(children[0])
                inits[f"init-{name.removeprefix('nspawn-')}"] = (init, start_time(init))
        return inits

    def mounts(self) -> list[str]:
        return [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{self.root}/")
        ]

    def alive(self) -> bool:
        return bool(self.mounts()) or any(
            still_running(process) for process in self.processes().values()
        )

    def acme_ca(self) -> str:
        return str(self.lab_dir / "acme" / "ca.pem")

    def remove(self) -> None:
        """Take it down if it is still up, then bring this lab back; delete the copy."""
        if self.root.exists() and self.alive():
            # Its `down` takes the shared bridge and namespaces with it: this lab's `up` follows.
            self.cli("down")
            lab_cli("up", "--hosts", str(LAB_HOSTS))
        assert not self.mounts(), f"still mounted under {self.root}: {self.mounts()}"
        shutil.rmtree(self.root, ignore_errors=True)


def start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return ""


def still_running(process: tuple[int, str]) -> bool:
    pid, started = process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return state[0] != "Z" and state[19] == started


def pebble_status(ca_bundle: str) -> str:
    """HTTP status of pebble's directory on the shared port, its TLS verified with this CA."""
    curl = ["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"]
    result = run([*curl, "--cacert", ca_bundle, f"https://{GATEWAY}:14000/dir"])
    return result.stdout + result.stderr


def wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def assert_this_lab_works() -> None:
    """This lab's hosts, pebble, Redis and worker answer, with this lab's keys and secrets."""
    lab = Lab.load()
    assert ACTIVE_LAB.read_text().strip() == str((REPO / ".lab").resolve())
    for host in lab.base_hosts:
        booted = lab.ssh(host["name"], "systemctl is-system-running --wait", timeout=60)
        assert booted.stdout.strip() == "running", (host["name"], booted.stdout, booted.stderr)
    assert pebble_status(lab.state["acme"]["ca_bundle"]) == "200", "pebble is this lab's"
    broker_url = lab.secrets["FLOWERBED_BROKER_URL"]
    errors = []

    def redis_answers() -> bool:
        try:
            return redis.Redis.from_url(broker_url, socket_timeout=5).ping()
        except redis.RedisError as error:
            errors.append(f"{time.strftime('%H:%M:%S')} {error!r}")
            return False

    assert wait_until(redis_answers, 15), f"Redis is this lab's (with its password): {errors}"
    # a new client process for each try: in this process, Celery's client failed with
    # "Connection closed by server" once the Redis it had used before was stopped
    celery = [str(REPO / ".venv" / "bin" / "celery"), "-A", "flowerbed_demo.app", "inspect"]
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "PYTHONPATH": str(REPO / "lab" / "demo_app"),
    }

    def worker_answers() -> bool:
        ping = [*celery, "ping", "-d", "demo@labmachine", "--timeout", "3"]
        result = subprocess.run(ping, env=env, capture_output=True, text=True, timeout=30)
        return result.returncode == 0 and "pong" in result.stdout

    answered = wait_until(worker_answers, 30)
    assert answered, "this lab's worker answers a ping through this lab's Redis"


def assert_gone(foreign: ForeignCheckout, processes: dict[str, tuple[int, str]]) -> None:
    assert not foreign.mounts(), f"the other lab's hosts are still mounted: {foreign.mounts()}"

    def left() -> list[str]:
        return sorted(name for name, process in processes.items() if still_running(process))

    assert wait_until(lambda: not left(), 5), f"the other lab's processes still run: {left()}"


def test_up_stops_a_lab_alive_in_another_checkout_and_one_whose_processes_were_killed(lab: Lab):
    foreign = ForeignCheckout()
    try:
        # Alive: its hosts and services hold the machine's ports and addresses.
        foreign.cli("up", "--hosts", "1")
        alive = {**foreign.processes(), **foreign.host_inits()}
        assert {*SERVICES, "host-h1", "nspawn-h1", "init-h1"} <= set(alive), sorted(alive)
        assert all(still_running(process) for process in alive.values()), alive
        assert pebble_status(foreign.acme_ca()) == "200", "the other lab's pebble has the port"
        lab_cli("up", "--hosts", str(LAB_HOSTS))
        assert_this_lab_works()
        assert_gone(foreign, alive)

        # Killed: its processes died with their session; its hosts' inits and mounts remain,
        # and the machine's marker names a checkout that no longer exists.
        foreign.cli("up", "--hosts", "1")
        alive = {**foreign.processes(), **foreign.host_inits()}
        killed = foreign.processes()
        for pid, _ in killed.values():
            with contextlib.suppress(ProcessLookupError):  # nspawn is in its launcher's group
                os.killpg(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(map(still_running, killed.values())), 10)
        assert still_running(alive["init-h1"]) and foreign.mounts(), "what a killed lab leaves"
        ACTIVE_LAB.write_text("/check/work/main/.lab\n")
        lab_cli("up", "--hosts", str(LAB_HOSTS))
        assert_this_lab_works()
        assert_gone(foreign, alive)
    finally:
        foreign.remove()
        restore_users_lab(lab)  # the hosts were rebuilt: a `make demo` lab is deployed again
