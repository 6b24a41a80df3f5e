"""The lab's Celery side: Redis, the demo worker and its producer, each ensured to answer.

A live PID is not a service. Redis may be frozen (a fault test's SIGSTOP); a worker in a warm
shutdown stays alive for as long as its longest task (the producer's sleeps run up to 30 s)
while it no longer takes tasks or control messages. So each is asked: Redis for a PONG, the
worker for its pool over the broker. What does not answer is waited out and replaced.
"""

from __future__ import annotations

import socket
import subprocess

from .config import GATEWAY, LAB, REDIS_PORT, REPO, RUN
from .process import LabError, log, pid_alive, spawn, stop, wait_for

WORKER = "demo@labmachine"
WORKER_CONCURRENCY = 2
WARM_SHUTDOWN_S = 45  # the producer's longest task (30 s) and the worker's own exit
WORKER_READY_S = 60
WORKER_LOG = RUN / "worker.log"
SHUTDOWN_SAID = "shutdown (MainProcess)"  # celery.apps.worker: "worker: Warm shutdown (...)"
DEMO_APP = REPO / "lab" / "demo_app"
VENV_BIN = REPO / ".venv" / "bin"


def broker_password(broker_url: str) -> str:
    return broker_url.split(":", 2)[2].split("@", 1)[0]


def redis_answers(
    password: str, address: str = GATEWAY, port: int = REDIS_PORT, timeout: float = 2
) -> bool:
    """AUTH and PING over RESP: a frozen or half-started Redis does not say +PONG."""
    auth = f"*2\r\n$4\r\nAUTH\r\n${len(password.encode())}\r\n{password}\r\n"
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(auth.encode() + b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"PONG" not in reply and not reply.startswith(b"-"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply == b"+OK\r\n+PONG\r\n"


def ensure_broker(broker_url: str) -> None:
    password = broker_password(broker_url)
    if pid_alive("redis") and redis_answers(password):
        return
    stop("redis", timeout=5)  # frozen, or on its way out
    conf = RUN / "redis.conf"
    (LAB / "redis").mkdir(exist_ok=True)
    conf.touch(mode=0o600)
    conf.write_text(
        f"bind {GATEWAY}\nport {REDIS_PORT}\nprotected-mode yes\nrequirepass {password}\n"
        f'dir {LAB / "redis"}\nsave ""\nappendonly no\ndaemonize no\n'
    )
    spawn("redis", ["redis-server", str(conf)])
    wait_for(lambda: redis_answers(password), 10, what="redis to answer PING")


def demo_env(broker_url: str) -> dict:
    return {"CELERY_BROKER_URL": broker_url, "PYTHONPATH": str(DEMO_APP)}


def worker_pool(broker_url: str, timeout: float = 2) -> int:
    """The lab worker's pool size as it answers over the broker; 0 when it does not answer."""
    probe = [str(VENV_BIN / "python"), "-m", "flowerbed_demo.probe", WORKER, str(timeout)]
    try:
        answer = subprocess.run(
            probe, env=demo_env(broker_url), capture_output=True, text=True, timeout=timeout + 20
        )
    except subprocess.TimeoutExpired:
        return 0
    said = answer.stdout.strip()
    return int(said) if answer.returncode == 0 and said.isdigit() else 0


def worker_ready(broker_url: str) -> bool:
    return worker_pool(broker_url) == WORKER_CONCURRENCY


def worker_shutting_down() -> bool:
    """Celery's shutdown handler says so in the worker's log (each worker starts a new one)
    before it stops taking work; for a moment after it, the worker still answers a ping."""
    return WORKER_LOG.exists() and SHUTDOWN_SAID in WORKER_LOG.read_text(errors="replace")


def ensure_worker(broker_url: str) -> None:
    if not (VENV_BIN / "celery").exists():
        raise LabError("the lab's worker needs the project venv: run `make setup` first")
    if not (pid_alive("worker") and not worker_shutting_down() and worker_ready(broker_url)):
        replace_worker(broker_url)
    if not pid_alive("producer"):
        spawn("producer", [str(VENV_BIN / "python"), "-m", "flowerbed_demo.producer"],
              env=demo_env(broker_url))  # fmt: skip


def replace_worker(broker_url: str) -> None:
    """Wait out (or end) whatever is left of the worker, then start one and wait for its answer.

    Never two at once: a second worker with the same node name would answer in its place."""
    if pid := pid_alive("worker"):
        log(
            f"the lab worker (pid {pid}) is shutting down or does not answer with "
            f"{WORKER_CONCURRENCY} processes: stopping it (up to {WARM_SHUTDOWN_S} s)"
        )
    stop("worker", timeout=WARM_SHUTDOWN_S)
    if WORKER_LOG.exists():
        WORKER_LOG.replace(WORKER_LOG.with_suffix(".log.1"))
    worker = [
        str(VENV_BIN / "celery"), "-A", "flowerbed_demo.app", "worker", "-E", "--loglevel=INFO",
        f"--concurrency={WORKER_CONCURRENCY}", f"--hostname={WORKER}",
    ]  # fmt: skip
    spawn("worker", worker, env=demo_env(broker_url))
    wait_for(lambda: worker_ready(broker_url), WORKER_READY_S,
             what=f"the lab worker to answer with {WORKER_CONCURRENCY} processes")  # fmt: skip
