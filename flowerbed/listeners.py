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
# Docker's published ports: other machines reach them through Docker's DNAT and its forward
# chain, which flowerbed's input chain never sees; its docker-proxy listener serves the host's
# own connections alone.
FORWARDED = frozenset({"docker-proxy"})

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


@dataclass(frozen=True)
class Listening:
    """The host's listening sockets, and its ephemeral port range (where a UDP socket with no
    fixed port lives: a DHCP or DNS client's, different at every start)."""

    sockets: tuple[Listener, ...] = ()
    ephemeral: tuple[int, int] = (32768, 60999)  # Linux's default

    def fixed(self, listener: Listener) -> bool:
        low, high = self.ephemeral
        return listener.protocol == "tcp" or not low <= listener.port <= high


class ListeningSockets(FactBase):
    """Every TCP and UDP socket listening on the host, with its process (`ss -Htulnp`), after
    the ephemeral port range (ip_local_port_range)."""

    def requires_command(self) -> str:
        return "ss"

    def command(self) -> StringCommand:
        return StringCommand(
            command("cat", "/proc/sys/net/ipv4/ip_local_port_range"), "&&", command("ss", "-Htulnp")
        )

    @staticmethod
    def default() -> Listening:
        return Listening()

    def process(self, output: list[str]) -> Listening:
        first = output[0].split() if output else []
        ephemeral = (int(first[0]), int(first[1])) if len(first) == 2 else Listening.ephemeral
        return Listening(tuple(found for line in output if (found := parse_listener(line))),
                         ephemeral)  # fmt: skip


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


class LoadedTable(FactBase):
    """flowerbed's loaded table, terse (no set elements); no output when none is loaded."""

    def requires_command(self) -> str:
        return "nft"

    def command(self) -> StringCommand:
        return StringCommand(
            command("nft", "-t", "list", "table", *TABLE), "2>/dev/null", "||", "true"
        )


class LoadedOpenPorts(LoadedTable):
    """The (port, protocol) pairs flowerbed's loaded table accepts; None when none is loaded."""

    def process(self, output: list[str]) -> frozenset[tuple[int, str]] | None:
        if not output:
            return None
        return frozenset(
            (int(port), protocol) for line in output for protocol, port in ACCEPT.findall(line)
        )


def cut_off(
    listening: Listening,
    kept: set[tuple[int, str]],
    open_now: frozenset[tuple[int, str]] | None,
) -> list[Listener]:
    """The listeners beyond loopback on a fixed (port, protocol) not `kept` that are open now
    (`open_now`: what flowerbed's loaded table accepts; None without one: all of them)."""
    found: dict[tuple[int, str], Listener] = {}
    for listener in listening.sockets:
        key = (listener.port, listener.protocol)
        if not listener.beyond_loopback or not listening.fixed(listener) or key in kept:
            continue
        if listener.process in FORWARDED:
            continue
        if open_now is not None and key not in open_now:
            continue  # flowerbed's loaded table closes it today: nothing changes for it
        found.setdefault(key, listener)
    return sorted(found.values(), key=lambda listener: (listener.port, listener.protocol))


def refusal(cut: list[Listener], shared: dict[int, str]) -> str:
    """The error for `cut`; `shared`: flowerbed's own ports that another nginx site listens on
    too, with the setting that decides who reaches them."""
    ports = ", ".join(f"{c.port}/{c.protocol} ({c.process} on {c.address})" for c in cut)
    fixes = []
    if others := [c for c in cut if c.protocol != "tcp" or c.port not in shared]:
        first = others[0]
        purpose = re.sub(r"[^A-Za-z0-9 ._-]", "", first.process) or "the service"
        fixes.append(
            f"open each port to the networks that use it, e.g. flower_firewall_openings = "
            f"[{{'port': {first.port}, 'protocol': '{first.protocol}', "
            f"'sources': ['10.0.0.0/24'], 'purpose': '{purpose}'}}]"
        )
    for c in cut:
        if c.protocol == "tcp" and c.port in shared:
            fixes.append(
                f"another nginx site listens on {c.port} too, which the ruleset opens only to "
                f"{shared[c.port]}: list everyone there to keep it open to all"
            )
    fixes.append(
        f"or agree that it closes: flower_firewall_close_listeners = "
        f"{[f'{c.port}/{c.protocol}' for c in cut]}"
    )
    return (
        f"firewall: the new ruleset would close {ports} to every other machine; nothing was "
        f"changed. Fix: {'; '.join(fixes)}"
    )
