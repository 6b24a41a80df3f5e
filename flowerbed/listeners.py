"""What listens on a host, and which of it a new ruleset would newly close to every other
machine (flowerbed/firewall.py refuses that unless the operator declared it).

flowerbed's table drops every new inbound connection it does not list, and a drop in any base
chain is final whatever another firewall accepts: a listener it does not list is cut off.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pyinfra.api import FactBase, StringCommand

from .shell import command

TABLE = ("inet", "flowerbed")

ACCEPT = re.compile(r"\b(tcp|udp) dport (\d+) accept\b")
PROCESS = re.compile(r'users:\(\("([^"]+)"')


@dataclass(frozen=True)
class Listener:
    protocol: str
    address: str  # "*" for every address
    port: int
    process: str

    @property
    def beyond_loopback(self) -> bool:
        try:
            return not ipaddress.ip_address(self.address).is_loopback
        except ValueError:  # "*"
            return True


class ListeningSockets(FactBase):
    """Every TCP and UDP socket listening on the host, with its process (`ss -Htulnp`)."""

    def requires_command(self) -> str:
        return "ss"

    def command(self) -> StringCommand:
        return command("ss", "-Htulnp")

    def process(self, output: list[str]) -> tuple[Listener, ...]:
        return tuple(found for line in output if (found := parse_listener(line)))


def parse_listener(line: str) -> Listener | None:
    """One line of `ss -Htulnp`: netid, state, queues, local address:port, peer, process."""
    parts = line.split()
    if len(parts) < 5 or parts[0] not in ("tcp", "udp"):
        return None
    address, _, port = parts[4].rpartition(":")
    if not port.isdigit():
        return None
    address = address.split("%")[0].strip("[]") or "*"
    named = PROCESS.search(line)
    return Listener(parts[0], address, int(port), named.group(1) if named else "unknown")


class LoadedOpenPorts(FactBase):
    """The (port, protocol) pairs flowerbed's loaded table accepts; None when none is loaded."""

    def requires_command(self) -> str:
        return "nft"

    def command(self) -> StringCommand:
        return StringCommand(command("nft", "list", "table", *TABLE), "2>/dev/null", "||", "true")

    def process(self, output: list[str]) -> frozenset[tuple[int, str]] | None:
        if not output:
            return None
        return frozenset(
            (int(port), protocol) for line in output for protocol, port in ACCEPT.findall(line)
        )


def cut_off(
    listeners: tuple[Listener, ...],
    kept: set[tuple[int, str]],
    open_now: frozenset[tuple[int, str]] | None,
) -> list[Listener]:
    """The listeners beyond loopback on a (port, protocol) not `kept` that are open now
    (`open_now`: what flowerbed's loaded table accepts; None without one: all of them)."""
    found: dict[tuple[int, str], Listener] = {}
    for listener in listeners:
        key = (listener.port, listener.protocol)
        if not listener.beyond_loopback or key in kept:
            continue
        if open_now is not None and key not in open_now:
            continue  # flowerbed's loaded table closes it today: nothing changes for it
        found.setdefault(key, listener)
    return sorted(found.values(), key=lambda listener: (listener.port, listener.protocol))


def refusal(cut: list[Listener]) -> str:
    ports = ", ".join(f"{c.port}/{c.protocol} ({c.process} on {c.address or '*'})" for c in cut)
    first = cut[0]
    return (
        f"firewall: the new ruleset would close {ports} to every other machine; nothing was "
        f"changed. Fix: open each port to the networks that use it, e.g. "
        f"flower_firewall_openings = [{{'port': {first.port}, 'protocol': '{first.protocol}', "
        f"'sources': ['10.0.0.0/24'], 'purpose': '{first.process}'}}], or agree that it closes: "
        f"flower_firewall_close_listeners = "
        f"{[f'{c.port}/{c.protocol}' for c in cut]}"
    )
