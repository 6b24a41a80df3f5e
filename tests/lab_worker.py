"""The lab's shared Celery worker: stopped in the middle of long tasks, and always put back.

A test that stops or shrinks the shared worker hands it back answering at its usual
concurrency, as both a ping over the broker and every given host's Flower see it; a PID proves
neither (a worker in a warm shutdown is alive until its last task ends).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

from conftest import LAB_HOSTS, REPO, Lab, lab_cli
from labkit.celery_lab import (
    WORKER,
    WORKER_CONCURRENCY,
    demo_env,
    worker_pool,
    worker_shutting_down,
)

SOCKET = "/run/flower/flower.sock"
PROXY_LOGIN = "/etc/flower/flower-proxy-login.env"  # the lab's defaults (flowerbed/proxy_login.py)
PYTHON = str(REPO / ".venv" / "bin" / "python")
LONG_TASK_S = 25


def demo(lab: Lab, code: str, timeout: float = 60) -> str:
    """Python run with the demo app on the path and the lab's broker; its output."""
    env = {**os.environ, **demo_env(lab.secrets["FLOWERBED_BROKER_URL"])}
    done = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def queued(lab: Lab) -> int:
    """Tasks waiting in the broker's default queue (Redis list `celery`), none reserved yet."""
    return int(demo(lab, "from flowerbed_demo.app import app\n"
                         "with app.connection_for_write() as c:\n"
                         "    print(c.default_channel.client.llen('celery'))"))  # fmt: skip


def queue_drained(lab: Lab, timeout: float = 180) -> None:
    """Wait until the worker has taken every queued task (e.g. the producer's, piled up while
    the worker was stopped): tasks sent next are not queued behind them."""
    deadline = time.monotonic() + timeout
    while (waiting := queued(lab)) > 0:
        assert time.monotonic() < deadline, f"{waiting} tasks still queued after {timeout:.0f} s"
        time.sleep(2)


def flower_api(lab: Lab, host: str, path: str):
    """Flower's own API on a host, through its socket, as root with Flower's proxy login (as
    the health check asks; the login goes to curl on stdin, never on a command line)."""
    curl = shlex.join(["curl", "-K", "-", "-sS", "--fail", "--max-time", "20",
                       "--unix-socket", SOCKET, f"http://localhost{path}"])  # fmt: skip
    login = (
        f"if [ -f {PROXY_LOGIN} ]; then "
        f"printf 'user = \"%s\"\\n' \"$(sed -n 's/^FLOWER_BASIC_AUTH=//p' {PROXY_LOGIN})\"; fi"
    )
    return json.loads(lab.ssh(host, f"{login} | {curl}", check=True).stdout)


def pid() -> int:
    return int((REPO / ".lab" / "run" / "worker.pid").read_text())


def busy_with_long_tasks(lab: Lab, timeout: float = 90) -> list[str]:
    """Long tasks sent to the worker, returned once at least one of them runs on it."""
    sent = demo(
        lab,
        "from flowerbed_demo.app import sleep\n"
        f"print(' '.join(sleep.delay({LONG_TASK_S}).id for _ in range({WORKER_CONCURRENCY})))",
    ).split()
    check = (
        "from flowerbed_demo.app import app\n"
        f"active = app.control.inspect(destination=[{WORKER!r}], timeout=3, limit=1).active()\n"
        f"print(' '.join(t['id'] for t in (active or {{}}).get({WORKER!r}, [])))"
    )
    deadline = time.monotonic() + timeout
    while not set(sent) & set(demo(lab, check).split()):
        assert time.monotonic() < deadline, f"none of the long tasks {sent} started"
        time.sleep(1)
    return sent


def stop_mid_task(lab: Lab) -> int:
    """A warm shutdown (SIGTERM) while long tasks run: the worker says worker-offline, then
    stays alive until they end. Its PID."""
    busy_with_long_tasks(lab)
    stopped = pid()
    os.kill(stopped, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not worker_shutting_down():
        assert time.monotonic() < deadline, "the worker never began its warm shutdown"
        time.sleep(0.1)
    return stopped


def put_back(lab: Lab, hosts: list[str], timeout: float = 120) -> None:
    """`lab up`, then the worker answers a ping with its usual pool, and every host's Flower
    lists it online with that pool."""
    lab_cli("up", "--hosts", str(LAB_HOSTS))
    deadline = time.monotonic() + timeout
    # polled: test_browser (shard "shared") grows the pool for a moment beside other shards
    while (pool := worker_pool(lab.secrets["FLOWERBED_BROKER_URL"])) != WORKER_CONCURRENCY:
        assert time.monotonic() < deadline, f"{WORKER} answers with {pool} processes"
        time.sleep(1)
    for host in hosts:
        while (seen := flower_pool(lab, host)) != WORKER_CONCURRENCY:
            assert time.monotonic() < deadline, (
                f"Flower on {host} sees {WORKER} with {seen} processes, not {WORKER_CONCURRENCY}"
            )
            time.sleep(1)


def flower_pool(lab: Lab, host: str) -> int:
    """The pool size Flower on `host` reports for the worker; 0 while it has it offline."""
    online = flower_api(lab, host, f"/api/workers?status=1&workername={WORKER}").get(WORKER)
    if online is not True:
        return 0
    workers = flower_api(lab, host, f"/api/workers?refresh=1&workername={WORKER}")
    return len(workers.get(WORKER, {}).get("stats", {}).get("pool", {}).get("processes", []))
