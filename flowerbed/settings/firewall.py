"""The firewall (flowerbed/firewall.py): who may open which port."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..validation import SettingsError, shown
from .checks import Check, boolean, expect, integer, one_of, setting, text
from .edge import LETS_ENCRYPT

if TYPE_CHECKING:
    from . import Settings


EVERYWHERE = ("0.0.0.0/0", "::/0")


RESERVED_PORTS = {80: "HTTP (ACME challenge, redirect)", 443: "HTTPS (the dashboard)"}
PROTOCOLS = ("tcp", "udp")
# an opening's purpose lands inside an nftables comment's double quotes: no quote, no backslash
PURPOSE = r"[A-Za-z0-9][A-Za-z0-9 ._:/()+,-]{0,63}"
PURPOSE_HINT = "a short purpose: letters, digits, spaces and ._:/()+,- (at most 64)"
OPENING_EXAMPLE = (
    "{'port': 6379, 'protocol': 'tcp', 'sources': ['10.0.0.0/24'], "
    "'purpose': 'Redis for the workers'}"
)


def networks(empty: tuple[str, str] | None = None) -> Check:
    """A list of IPv4/IPv6 networks in CIDR form; `empty` = (problem, fix) if [] is an error."""
    hint = "a list of CIDRs like ['203.0.113.0/24', '2001:db8::/48']"

    def check(key: str, value: Any) -> tuple[str, ...]:
        expect(key, value, (list, tuple), hint)
        if not value and empty:
            raise SettingsError(key, *empty)
        return tuple(_network(f"{key}[{i}]", item) for i, item in enumerate(value))

    return check


CIDR = re.compile(r"[0-9A-Fa-f:.]{2,39}(/[0-9]{1,3})?")


def _network(key: str, value: Any) -> str:
    expect(key, value, str, "a CIDR like '203.0.113.0/24' or '2001:db8::/48'")
    value = value.strip()  # a pasted value's stray spaces
    if not CIDR.fullmatch(value):
        raise SettingsError(
            key,
            f"{shown(value)} is not an IPv4/IPv6 address or network (only digits, hex letters, "
            "'.', ':' and one '/prefix')",
            "use CIDR notation, e.g. '203.0.113.0/24', '198.51.100.7/32' or '2001:db8::/48'",
        )
    try:
        return str(ipaddress.ip_network(value))
    except ValueError as error:
        if "has host bits set" not in str(error):
            raise SettingsError(
                key,
                f"{value!r} is not an IPv4/IPv6 address or network",
                "use CIDR notation, e.g. '203.0.113.0/24', '198.51.100.7/32' or '2001:db8::/48'",
            ) from error
        address, network = value.split("/")[0], ipaddress.ip_network(value, strict=False)
        single = f"{address}/{network.max_prefixlen}"
        raise SettingsError(
            key,
            f"{value!r} has host bits set, so it is ambiguous",
            f"use {str(network)!r} for the whole network or {single!r} for that one address",
        ) from error


def port() -> Check:
    def check(key: str, value: Any) -> int:
        expect(key, value, int, "a port (1-65535)")
        if not 1 <= value <= 65535:
            raise SettingsError(key, f"{value} is not a port", "use a port from 1 to 65535")
        return value

    return check


@dataclass(frozen=True)
class PortOpening:
    """A port flowerbed's table opens to some networks (flower_firewall_openings: a service of
    the host's that is not Flower's)."""

    port: int
    protocol: str
    sources: tuple[str, ...]
    purpose: str


def extra_openings() -> Check:
    hint = f"a list of openings like {OPENING_EXAMPLE}"

    def check(key: str, value: Any) -> tuple[PortOpening, ...]:
        expect(key, value, (list, tuple), hint)
        return tuple(_extra_opening(f"{key}[{i}]", item) for i, item in enumerate(value))

    return check


def _extra_opening(key: str, item: Any) -> PortOpening:
    expect(key, item, dict, f"an opening like {OPENING_EXAMPLE}")
    unknown = sorted(str(k) for k in set(item) - {"port", "protocol", "sources", "purpose"})
    missing = sorted({"port", "sources", "purpose"} - set(item))
    if unknown or missing:
        problem = "; ".join(
            part
            for part in (
                f"unknown key(s) {', '.join(map(repr, unknown))}" if unknown else "",
                f"missing {', '.join(map(repr, missing))}" if missing else "",
            )
            if part
        )
        raise SettingsError(key, problem, f"write it as {OPENING_EXAMPLE} ('protocol' is optional)")
    empty = ("an opening with no sources opens nothing", "list the networks that use the port")
    return PortOpening(
        port=port()(f"{key}['port']", item["port"]),
        protocol=one_of(PROTOCOLS, optional=False)(
            f"{key}['protocol']", item.get("protocol", "tcp")
        ),
        sources=networks(empty=empty)(f"{key}['sources']", item["sources"]),
        purpose=text(PURPOSE, PURPOSE_HINT)(f"{key}['purpose']", item["purpose"]),
    )


port_protocol = text(r"[0-9]{1,5}/(tcp|udp)", "'PORT/PROTOCOL' like '8080/tcp'")


def port_protocols() -> Check:
    """["8080/tcp", "5353/udp"]: listening ports the operator agrees to close to other machines."""
    hint = "a list of 'PORT/PROTOCOL' like ['8080/tcp', '5353/udp']"

    def check(key: str, value: Any) -> tuple[tuple[int, str], ...]:
        expect(key, value, (list, tuple), hint)
        found = []
        for i, item in enumerate(value):
            number, protocol = port_protocol(f"{key}[{i}]", item).split("/")
            found.append((port()(f"{key}[{i}]", int(number)), protocol))
        return tuple(found)

    return check


@dataclass(frozen=True)
class Firewall:
    """flowerbed's nftables table: who may open which port; everything else new is dropped."""

    allowed_sources: tuple[str, ...] = setting(
        networks(
            empty=(
                "an empty list would let no one reach the dashboard (flowerbed never reads it "
                "as 'open to all')",
                "list your users' networks, e.g. flower_allowed_sources = ['203.0.113.0/24']; to "
                "really open HTTPS to everyone say so: ['0.0.0.0/0', '::/0']",
            )
        ),
        "networks that may reach HTTPS (443), the dashboard",
    )
    admin_sources: tuple[str, ...] = setting(
        networks(
            empty=(
                "an empty list would close SSH to everyone and lock the operator out",
                "list the networks you run pyinfra and ssh from, e.g. "
                "flower_admin_sources = ['198.51.100.7/32']",
            )
        ),
        "networks that may reach SSH (flower_firewall_ssh_port): the operator's",
    )
    acme_sources: tuple[str, ...] = setting(
        networks(),
        "networks that may reach HTTP (80): the ACME challenge and the HTTPS redirect",
    )
    monitoring_sources: tuple[str, ...] = setting(
        networks(),
        "networks that reach HTTPS and read /metrics (and /healthcheck) without a login",
    )
    firewall_ssh_port: int = setting(port(), "sshd's port, opened to flower_admin_sources")
    firewall_rollback_seconds: int = setting(
        integer(minimum=45, maximum=600),
        "a new ruleset not confirmed over a new SSH connection is undone",
    )
    firewall_allow_ssh_from_anywhere: bool = setting(
        boolean(), "the only way flower_admin_sources may hold 0.0.0.0/0 or ::/0"
    )
    firewall_allow_metrics_from_anywhere: bool = setting(
        boolean(), "the only way flower_monitoring_sources may hold 0.0.0.0/0 or ::/0"
    )
    firewall_manage: bool = setting(
        boolean(),
        "False: the host's own firewall (ufw, firewalld, nftables) decides; flowerbed loads no "
        "table, removes its own, and says what must be open",
    )
    firewall_openings: tuple[PortOpening, ...] = setting(
        extra_openings(),
        "more ports to open (the host's other services: a broker, the app, an exporter)",
    )
    firewall_close_listeners: tuple[tuple[int, str], ...] = setting(
        port_protocols(),
        "listening ports the new ruleset may close to other machines (otherwise refused)",
    )

    prefix = "flower_"


def check_firewall(s: Settings) -> Iterator[SettingsError]:
    """Port 80 stays open to whoever must validate HTTP-01: restricting it never silently breaks
    issuance or renewal."""
    acme, tls = s.firewall.acme_sources, s.tls
    dns_01 = "use flower_tls_challenge = 'dns-01' to keep port 80 closed"
    if s.firewall.firewall_ssh_port in RESERVED_PORTS:
        yield SettingsError(
            "flower_firewall_ssh_port",
            f"{s.firewall.firewall_ssh_port} is flowerbed's "
            f"{RESERVED_PORTS[s.firewall.firewall_ssh_port]} port",
            "set it to the port sshd listens on (usually 22)",
        )
    yield from _opened_to_everyone(s.firewall)
    yield from _extra_openings_conflicts(s.firewall, in_site=bool(s.site.existing_site))
    if tls.challenge == "http-01" and not acme:
        yield SettingsError(
            "flower_acme_sources",
            "an empty list closes port 80, so HTTP-01 can neither issue nor renew certificates",
            f"keep the default {list(EVERYWHERE)}, or {dns_01}",
        )
    lets_encrypt = tls.challenge == "http-01" and tls.acme_directory in LETS_ENCRYPT.values()
    restricted = not set(EVERYWHERE) <= set(acme)  # values are normalised by networks()
    if lets_encrypt and acme and restricted:
        yield SettingsError(
            "flower_acme_sources",
            "Let's Encrypt validates HTTP-01 from addresses it does not publish: a restricted "
            "port 80 would make issuance and renewal fail",
            f"keep {list(EVERYWHERE)}, or {dns_01}",
        )


def _opened_to_everyone(firewall: Firewall) -> Iterator[SettingsError]:
    """SSH or /metrics for the whole internet only when a setting that says so is True."""
    for key, opt_in, what in (
        ("flower_admin_sources", "flower_firewall_allow_ssh_from_anywhere", "SSH"),
        (
            "flower_monitoring_sources",
            "flower_firewall_allow_metrics_from_anywhere",
            "/metrics without a login",
        ),
    ):
        everywhere = too_wide(getattr(firewall, key.removeprefix("flower_")))
        if everywhere and not getattr(firewall, opt_in.removeprefix("flower_")):
            yield SettingsError(
                key,
                f"{', '.join(everywhere)} opens {what} to the whole internet"
                + ("" if everywhere[0].endswith("/0") else " (or as good as: wider than a /8)"),
                f"list your own networks, e.g. {key} = ['198.51.100.7/32']; if you really mean "
                f"everyone, also set {opt_in} = True",
            )


# The widest a source list may reach without an opt-in, per family: a /8 of IPv4 (a large
# company's private range), a /16 of IPv6. Counted over the whole list, so halves that add up
# to everything (0.0.0.0/1 with 128.0.0.0/1) are caught like 0.0.0.0/0.
WIDEST = {4: 2**24, 6: 2**112}


def too_wide(sources: tuple[str, ...]) -> list[str]:
    """The networks of each family whose union covers more than WIDEST allows."""
    wide = []
    for version, limit in WIDEST.items():
        family = [ipaddress.ip_network(s) for s in sources]
        family = [n for n in family if n.version == version]
        if sum(n.num_addresses for n in ipaddress.collapse_addresses(family)) > limit:
            wide += [str(n) for n in family]
    return wide


def _extra_openings_conflicts(firewall: Firewall, in_site: bool) -> Iterator[SettingsError]:
    """An extra opening never widens flowerbed's own ports, and names each port once. Inside
    the operator's own site (`in_site`) 80 and 443 are that site's: its audience is an opening
    (the dashboard's path admits flower_allowed_sources alone, at nginx)."""
    own = {**({} if in_site else RESERVED_PORTS), firewall.firewall_ssh_port: "SSH"}
    seen: set[tuple[int, str]] = set()
    for i, opening in enumerate(firewall.firewall_openings):
        key = f"flower_firewall_openings[{i}]"
        if opening.protocol == "tcp" and opening.port in own:
            setting_for = {80: "flower_acme_sources", 443: "flower_allowed_sources"}.get(
                opening.port, "flower_admin_sources"
            )
            yield SettingsError(
                key,
                f"{opening.port}/tcp is flowerbed's {own[opening.port]} port",
                f"list its sources in {setting_for} instead",
            )
        if (opening.port, opening.protocol) in seen:
            yield SettingsError(
                key,
                f"{opening.port}/{opening.protocol} is opened twice",
                "declare each port once, with all of its sources",
            )
        seen.add((opening.port, opening.protocol))
