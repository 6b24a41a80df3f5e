#!/usr/bin/env python3
"""The lab's RabbitMQ: Debian's rabbitmq-server with the management plugin, run as a lab
process on the bridge (not Debian's service), with two users (Celery's, and a read-only one
for the management API), and a second demo worker (demo@rabbitmq) consuming from it.
Started on demand, not by `lab.py up`:

    python3 lab/lab_rabbitmq.py up      # idempotent; prints the management API's address
    python3 lab/lab_rabbitmq.py down

AMQP on 10.77.0.1:5672, the management API on http://10.77.0.1:15672/api/. The URLs with
the passwords are in .lab/lab.env (FLOWERBED_RABBITMQ_URL, FLOWERBED_RABBITMQ_API); the
addresses and the data that points a lab host at it are in .lab/state.json ("rabbitmq"):

    pyinfra inventory/lab.py deploy.py --limit h2 \
        --data flower_broker_url_env=FLOWERBED_RABBITMQ_URL \
        --data flower_broker_api_env=FLOWERBED_RABBITMQ_API
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from labkit.config import GATEWAY, LAB, REPO, SECRETS
from labkit.process import LabError, pid_alive, port_open, spawn, stop, wait_for
from labkit.state import lab_lock, lab_secrets, load_state, save_state

HOME = LAB / "rabbitmq"
AMQP_PORT = 5672
MANAGEMENT_PORT = 15672
EPMD_PORT = 4369
USER = "flowerbed"  # Celery's AMQP user
MONITOR = "flowerbed-monitor"  # the management API's read-only user (broker_api)
NODENAME = "flowerbed-lab@localhost"
WORKER = "demo@rabbitmq"
URL_ENV = "FLOWERBED_RABBITMQ_URL"
API_ENV = "FLOWERBED_RABBITMQ_API"
SBIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_secrets() -> dict[str, str]:
    """The broker URL and the management API URL (two users, two passwords), made once and
    kept in .lab/lab.env (0600)."""
    values = lab_secrets()
    if URL_ENV not in values or API_ENV not in values:
        amqp, api = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        values[URL_ENV] = f"amqp://{USER}:{amqp}@{GATEWAY}:{AMQP_PORT}//"
        values[API_ENV] = f"http://{MONITOR}:{api}@{GATEWAY}:{MANAGEMENT_PORT}/api/"
        with open(SECRETS, "a") as env:
            env.write(f"{URL_ENV}={values[URL_ENV]}\n{API_ENV}={values[API_ENV]}\n")
    return values


def credentials(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.username or "", parts.password or ""


def password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def environment() -> dict[str, str]:
    """RabbitMQ's own files, all under .lab/rabbitmq; its node listens on loopback only."""
    return {
        "HOME": str(HOME),  # the Erlang cookie rabbitmqctl shares with the node
        "RABBITMQ_CONF_ENV_FILE": str(HOME / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(HOME / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(HOME / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(HOME / "mnesia"),
        "RABBITMQ_LOG_BASE": str(HOME / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_NODENAME": NODENAME,
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }


def definitions(values: dict[str, str]) -> dict:
    """Two users: Celery's (AMQP only, no management access) and a read-only monitoring user
    for the management API, so Flower's Broker page works only through broker_api."""
    users = []
    for url, tags in ((values[URL_ENV], []), (values[API_ENV], ["monitoring"])):
        name, secret = credentials(url)
        algorithm = "rabbit_password_hashing_sha256"
        users.append(
            {"name": name, "password_hash": password_hash(secret), "hashing_algorithm": algorithm,
             "tags": tags}
        )  # fmt: skip
    return {
        "users": users,
        "vhosts": [{"name": "/"}],
        "permissions": [
            {"user": USER, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": MONITOR, "vhost": "/", "configure": "", "write": "", "read": ".*"},
        ],
    }


def write_config(values: dict[str, str]) -> None:
    HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
    (HOME / "rabbitmq-env.conf").write_text("")
    (HOME / "enabled_plugins").write_text("[rabbitmq_management].\n")
    defs = HOME / "definitions.json"
    defs.touch(mode=0o600)
    defs.write_text(json.dumps(definitions(values)))
    (HOME / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {GATEWAY}:{AMQP_PORT}\n"
        f"management.tcp.ip = {GATEWAY}\n"
        f"management.tcp.port = {MANAGEMENT_PORT}\n"
        f"load_definitions = {defs}\n"  # its users instead of a default (guest) user
        "collect_statistics_interval = 1000\n"  # queue counts in the API within a second
    )


def management_ready(values: dict[str, str]) -> bool:
    url = f"http://{GATEWAY}:{MANAGEMENT_PORT}/api/overview"
    token = base64.b64encode(":".join(credentials(values[API_ENV])).encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_debian_service() -> None:
    """Debian starts its rabbitmq-server on install where it can; the lab runs its own."""
    if port_open("127.0.0.1", AMQP_PORT) or port_open(GATEWAY, AMQP_PORT):
        subprocess.run(["service", "rabbitmq-server", "stop"], capture_output=True)


def ensure_rabbitmq() -> dict:
    """RabbitMQ and its demo worker running; returns what .lab/state.json records."""
    if not shutil.which("epmd") or not (SBIN / "rabbitmq-server").exists():
        raise LabError("RabbitMQ is missing: `make machine-packages` installs rabbitmq-server")
    with lab_lock():
        values = rabbitmq_secrets()
    if not pid_alive("rabbitmq"):
        stop_debian_service()
        stop("rabbitmq-epmd")
        shutil.rmtree(HOME, ignore_errors=True)  # a fresh node: the default user is made anew
        write_config(values)
        env = environment()
        if not port_open("127.0.0.1", EPMD_PORT):
            # on loopback, up before the node (which would start one on every address)
            spawn("rabbitmq-epmd", ["epmd", "-address", "127.0.0.1"], env=env)
            wait_for(lambda: port_open("127.0.0.1", EPMD_PORT), 10, what="epmd")
        spawn("rabbitmq", [str(SBIN / "rabbitmq-server")], env=env)
    wait_for(lambda: management_ready(values), 90, what="RabbitMQ's management API")
    ensure_worker(values)
    info = {
        "address": f"{GATEWAY}:{AMQP_PORT}",
        "management": f"http://{GATEWAY}:{MANAGEMENT_PORT}/api/",
        "user": USER,
        "api_user": MONITOR,
        "url_env": URL_ENV,
        "api_env": API_ENV,
        "worker": WORKER,
        "deploy_data": {"flower_broker_url_env": URL_ENV, "flower_broker_api_env": API_ENV},
    }
    with lab_lock():
        state = load_state()
        state["rabbitmq"] = info
        save_state(state)
    return info


def ensure_worker(values: dict[str, str]) -> None:
    if pid_alive("rabbitmq-worker"):
        return
    celery = REPO / ".venv" / "bin" / "celery"
    env = {"CELERY_BROKER_URL": values[URL_ENV], "PYTHONPATH": str(REPO / "lab" / "demo_app")}
    argv = [str(celery), "-A", "flowerbed_demo.app", "worker", "-E", "--loglevel=INFO"]
    spawn("rabbitmq-worker", [*argv, "--concurrency=1", f"--hostname={WORKER}"], env=env)


def stop_rabbitmq() -> None:
    stop("rabbitmq-worker")
    pid = pid_alive("rabbitmq")
    if pid:
        subprocess.run(
            [str(SBIN / "rabbitmqctl"), "stop"],
            env={**os.environ, **environment()},
            capture_output=True,
            timeout=60,
        )
    stop("rabbitmq", timeout=30)
    stop("rabbitmq-epmd")
    with lab_lock():
        state = load_state()
        if state.pop("rabbitmq", None) is not None:
            save_state(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start RabbitMQ and its demo worker (idempotent)")
    sub.add_parser("down", help="stop them")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(ensure_rabbitmq()["management"])
        else:
            stop_rabbitmq()
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
