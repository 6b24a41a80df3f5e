"""The bridge, the client namespaces (lab-allowed, lab-denied) and the machine's /etc/hosts."""

from __future__ import annotations

from pathlib import Path

from .config import BRIDGE, BRIDGE_MAC, GATEWAY, HOSTS_BLOCK, NAMESPACES, NETWORK
from .process import run


def link_exists(name: str, namespace: str | None = None) -> bool:
    in_namespace = ["-n", namespace] if namespace else []
    return run(["ip", *in_namespace, "link", "show", name], check=False).returncode == 0


def namespace_exists(name: str) -> bool:
    listed = run(["ip", "netns", "list"]).stdout.splitlines()  # "lab-allowed (id: 0)"
    return name in (line.split()[0] for line in listed if line.strip())


def delete_link(name: str) -> None:
    """No link `name`: deleted if there is one; failing to delete it is an error."""
    if link_exists(name):
        run(["ip", "link", "del", name])


def ensure_bridge() -> None:
    if not link_exists(BRIDGE):
        # A fixed MAC: by default a bridge takes its ports' lowest, so a host coming or going
        # would change it and leave every host's ARP entry for the gateway stale (ssh times out).
        run(["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"])
        run(["ip", "addr", "add", f"{GATEWAY}/{NETWORK.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_namespace(name: str, address: str) -> None:
    bridge_end = f"fb-{name.removeprefix('lab-')}"[:15]
    if namespace_exists(name) and link_exists("eth0", name):
        in_namespace = run(["ip", "-n", name, "-4", "addr", "show", "eth0"]).stdout
        if f" {address}/" in in_namespace:
            return
    remove_namespace(name)
    run(["ip", "netns", "add", name])
    run(
        [
            "ip",
            "link",
            "add",
            bridge_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            name,
        ]
    )
    run(["ip", "link", "set", bridge_end, "master", BRIDGE, "up"])
    in_ns = ["ip", "netns", "exec", name]
    run([*in_ns, "ip", "addr", "add", f"{address}/{NETWORK.prefixlen}", "dev", "eth0"])
    run([*in_ns, "ip", "link", "set", "eth0", "up"])
    run([*in_ns, "ip", "link", "set", "lo", "up"])


def remove_namespace(name: str) -> None:
    delete_link(f"fb-{name.removeprefix('lab-')}"[:15])
    if namespace_exists(name):
        run(["ip", "netns", "del", name])


def forget_neighbour(address: str) -> None:
    """A new host may reuse a removed one's address: drop the old MAC from every ARP cache."""
    if link_exists(BRIDGE):
        run(["ip", "neigh", "flush", "to", address, "dev", BRIDGE])
    for namespace in NAMESPACES:
        if namespace_exists(namespace):
            run(["ip", "-n", namespace, "neigh", "flush", "to", address])


def write_etc_hosts(hosts: list[dict]) -> None:
    lines = Path("/etc/hosts").read_text().splitlines()
    if HOSTS_BLOCK[0] in lines:
        start, end = lines.index(HOSTS_BLOCK[0]), lines.index(HOSTS_BLOCK[1])
        del lines[start : end + 1]
    if hosts:
        lines += [
            HOSTS_BLOCK[0],
            *(f"{h['address']} {h['fqdn']}" for h in hosts),
            HOSTS_BLOCK[1],
        ]
    Path("/etc/hosts").write_text("\n".join(lines) + "\n")
