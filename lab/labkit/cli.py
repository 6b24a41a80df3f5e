"""flowerbed's lab: throw-away Debian hosts with real systemd, on this machine.

    lab.py up [--hosts N] [--distro bookworm|trixie]   idempotent; a second run is a no-op
    lab.py host-up NAME [--distro D]                    boot one more fresh host
    lab.py host-down NAME                               remove one host
    lab.py oidc-up                                      start the OpenID Connect provider
    lab.py down                                         remove everything the lab made
    lab.py status                                       print .lab/state.json
    lab.py ssh NAME [CMD...]                            run a command on a host as root

Every command but status and ssh holds the lab's lock (.lab/.lock).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import time

from .celery_lab import ensure_broker, ensure_worker
from .config import (
    ACTIVE_LAB,
    BRIDGE,
    CACHE,
    DISTROS,
    HOSTS,
    LAB,
    NAMESPACES,
    RUN,
    STATE,
)
from .handover import remove_foreign_hosts, stop_foreign_labs
from .hosts import (
    ensure_hosts,
    ensure_inotify_instances,
    ensure_ssh_key,
    new_host,
    ssh_command,
    stop_host,
)
from .image import ensure_machine_packages
from .network import (
    delete_link,
    ensure_bridge,
    ensure_namespace,
    remove_namespace,
    write_etc_hosts,
)
from .process import LabError, log, stop
from .services import ensure_acme, ensure_dns, ensure_proxy
from .state import lab_lock, lab_secrets, load_state, save_state


def ensure_services() -> dict:
    ensure_machine_packages()
    stop_foreign_labs()
    LAB.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    ACTIVE_LAB.write_text(f"{LAB.resolve()}\n")
    RUN.mkdir(parents=True, exist_ok=True)
    ensure_ssh_key()
    ensure_inotify_instances()
    ensure_bridge()
    for name, address in NAMESPACES.items():
        ensure_namespace(name, address)
    ensure_proxy()
    ensure_dns()
    acme = ensure_acme()
    broker_url = lab_secrets()["FLOWERBED_BROKER_URL"]
    ensure_broker(broker_url)
    ensure_worker(broker_url)
    return acme


def cmd_up(count: int, distro: str) -> None:
    t0 = time.monotonic()
    state = load_state()
    state["acme"] = ensure_services()
    by_name = {h["name"]: h for h in state["hosts"]}
    wanted = []
    for i in range(1, count + 1):
        name = f"h{i}"
        host = by_name.get(name) or new_host(name, distro, state["hosts"] + wanted)
        if host["distro"] != distro:
            stop_host(name)
            host = {**host, "distro": distro}
        wanted.append(host)
    ensure_hosts(wanted, state)
    save_state(state)
    log(f"lab up: {len(wanted)} hosts in {time.monotonic() - t0:.1f}s; state in {STATE}")


def host_name(name: str) -> str:
    """A lab host's name: a short DNS label (nspawn names its veth vb-NAME, 15 bytes at most)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,11}", name):
        raise argparse.ArgumentTypeError(
            f"{name!r}: a lab host name is 1-12 lowercase letters, digits or '-', "
            "starting with a letter (e.g. f1, edge2)"
        )
    return name


def cmd_host_up(name: str, distro: str) -> None:
    state = load_state()
    state["acme"] = ensure_services()
    existing = next((h for h in state["hosts"] if h["name"] == name), None)
    if existing and existing["distro"] != distro:
        stop_host(name)
        state["hosts"].remove(existing)
        existing = None
    others = [h for h in state["hosts"] if h["name"] != name]
    ensure_hosts([existing or new_host(name, distro, others)], state)
    save_state(state)


def cmd_host_down(name: str) -> None:
    state = load_state()
    stop_host(name)
    state["hosts"] = [h for h in state["hosts"] if h["name"] != name]
    write_etc_hosts(state["hosts"])
    if STATE.exists():
        save_state(state)


def cmd_down() -> None:
    names = {h["name"] for h in load_state()["hosts"]}
    if HOSTS.exists():
        names |= {d.name for d in HOSTS.iterdir()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(stop_host, sorted(names)))
    remove_foreign_hosts()
    on_demand = ("prometheus", "blackbox", "rabbitmq-worker", "rabbitmq", "oidc")
    for service in (
        *on_demand,
        "producer",
        "worker",
        "redis",
        "pebble",
        "dns",
        "tinyproxy",
    ):
        stop(service)
    for name in NAMESPACES:
        remove_namespace(name)
    delete_link(BRIDGE)
    write_etc_hosts([])
    shutil.rmtree(LAB, ignore_errors=True)
    log("lab down: hosts, mounts, bridge, namespaces and processes removed")


def cmd_oidc_up() -> None:
    """The OpenID Connect provider only the OAuth tests need: started on demand, kept running."""
    from oidc_provider import ensure_oidc  # lab/oidc_provider.py

    state = load_state()
    state["oidc"] = ensure_oidc()
    save_state(state)


def cmd_ssh(name: str, command: list[str]) -> int:
    host = next((h for h in load_state()["hosts"] if h["name"] == name), None)
    if host is None:
        raise LabError(f"no lab host named {name!r}: see `lab/lab.py status`")
    return subprocess.call(ssh_command(host["address"], command))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument("--hosts", type=int, default=int(os.environ.get("HOSTS", 3)))
    up.add_argument("--distro", choices=DISTROS, default=os.environ.get("DISTRO", "bookworm"))
    host_up = sub.add_parser("host-up", help="boot one more fresh host")
    host_up.add_argument("name", type=host_name)
    host_up.add_argument("--distro", choices=DISTROS, default="bookworm")
    sub.add_parser("host-down", help="remove one host").add_argument("name")
    sub.add_parser("oidc-up", help="start the lab's OpenID Connect provider (OAuth tests)")
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("status", help="print the lab's state")
    ssh = sub.add_parser("ssh", help="run a command on a host")
    ssh.add_argument("name")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        print(
            "lab: must run as root (it makes mounts, a bridge and namespaces)",
            file=sys.stderr,
        )
        return 2
    try:
        return dispatch(args)
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "status":
        print(STATE.read_text() if STATE.exists() else "lab is down")
    elif args.command == "ssh":
        return cmd_ssh(args.name, args.cmd)
    elif args.command == "down":
        with lab_lock():
            cmd_down()
    elif args.command == "host-down":
        with lab_lock():
            cmd_host_down(args.name)
    elif args.command == "up":
        with lab_lock():
            try:
                cmd_up(args.hosts, args.distro)
            except BaseException:
                log("lab up failed: cleaning up what it made")
                cmd_down()
                raise
    elif args.command == "oidc-up":
        with lab_lock():
            cmd_oidc_up()
    elif args.command == "host-up":
        with lab_lock():
            try:
                cmd_host_up(args.name, args.distro)
            except BaseException:
                cmd_host_down(args.name)
                raise
    return 0
