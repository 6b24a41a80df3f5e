"""The firewall: flowerbed's own nftables table, changed so that it cannot lock the operator out.

Allowed in (every other NEW inbound connection is dropped): loopback, established and related
traffic, essential ICMP/ICMPv6 (errors, echo, neighbour discovery), SSH from
flower_admin_sources, HTTPS from flower_allowed_sources and flower_monitoring_sources, HTTP (ACME
challenge and redirect) from flower_acme_sources.

Only `table inet flowerbed` is ever touched: its file creates, deletes and recreates that one
table in a single transaction, so other tables (the admin's, Docker's) stay as they are. At boot
it is loaded by its own unit, flowerbed-firewall.service, not included from /etc/nftables.conf:
that file belongs to the admin and begins with `flush ruleset`, and Debian leaves
nftables.service disabled. When nftables.service does run (start, restart, reload), a drop-in
loads flowerbed's table again right after its flush.

A changed ruleset goes through the host-side script files/flowerbed-firewall:
 1. `nft -c -f` checks it; a ruleset that fails is never loaded.
 2. the live table is saved, a timer is armed that restores it after
    flower_firewall_rollback_seconds, and the new ruleset is loaded.
 3. the operator's machine opens a NEW SSH connection (same address, port, user and key) and
    confirms through it, naming the ruleset by its digest: the timer is disarmed and the
    ruleset becomes the boot ruleset. A ruleset that another run has loaded since is never
    confirmed by this one (its host fails; the other run confirms its own or its timer undoes it).
The script names no path: it gets each from here (STATE_DIR, BOOT_RULESET, pending_ruleset).
 4. no new connection: the old ruleset is restored at once over the run's existing connection
    (established traffic stays allowed), or by the timer if that is gone too; the host fails.
Unchanged (same digest in the live table's comment and the same boot file): nothing runs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import (
    FileUploadCommand,
    StringCommand,
    deploy,
    operation,
)
from pyinfra.operations import systemd

from . import facts
from .hostfiles import Absent, PathStates, RootDirectory, RootFile, changed, root_files
from .listeners import TABLE, ListeningSockets, LoadedOpenPorts, LoadedTable, cut_off, refusal
from .nginx import Neighbours, NginxNeighbours
from .packages import system_packages
from .pyinfra_internals import (
    PyinfraCommand,
    SSHConnector,
    close_ssh_connector,
    connector_name,
    is_ssh_host,
    new_ssh_connector,
)
from .render import render
from .resources import HOST_SCRIPTS
from .settings import Firewall, PortOpening
from .settings.firewall import EVERYWHERE
from .shell import command, refused
from .units import UnitStates, unit_running

HTTP_PORT, HTTPS_PORT = 80, 443
SCRIPT_SOURCE = HOST_SCRIPTS / "flowerbed-firewall"
SCRIPT_DIR = "/usr/local/libexec/flowerbed"
SCRIPT = f"{SCRIPT_DIR}/flowerbed-firewall"
BOOT_DIR = "/etc/flowerbed"
BOOT_RULESET = f"{BOOT_DIR}/firewall.nft"
STATE_DIR = "/var/lib/flowerbed/firewall"  # the switch script's state; passed to it
UNIT = "flowerbed-firewall.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
NFTABLES_DROP_IN_DIR = "/etc/systemd/system/nftables.service.d"
NFTABLES_DROP_IN = f"{NFTABLES_DROP_IN_DIR}/flowerbed.conf"
DIGEST_PREFIX = "flowerbed sha256:"

ICMP_TYPES = ("echo-request", "destination-unreachable", "time-exceeded", "parameter-problem")
# errors, echo, and neighbour discovery / MLD, without which IPv6 stops working
ICMPV6_TYPES = (
    "destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
    "echo-request", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert",
    "mld-listener-query",
)  # fmt: skip
NEW_CONNECTION_ATTEMPTS = 2
NEW_CONNECTION_TIMEOUT = 6  # seconds for the TCP connect; the run's own connection proves the path


# --- the ruleset ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSet:
    """One address family's networks allowed to reach one port (an nftables named set)."""

    set_name: str
    set_type: str
    match: str
    networks: tuple[str, ...]


@dataclass(frozen=True)
class Opening(PortOpening):
    """A port open to some source networks, as the ruleset names its sets."""

    name: str = ""

    @property
    def families(self) -> list[SourceSet]:
        return [
            SourceSet(f"{self.name}_v4", "ipv4_addr", "ip", merged(self.sources, 4)),
            SourceSet(f"{self.name}_v6", "ipv6_addr", "ip6", merged(self.sources, 6)),
        ]


def merged(sources: tuple[str, ...], version: int) -> tuple[str, ...]:
    """One family's networks, overlaps merged (an nftables interval set rejects overlaps)."""
    networks = [ipaddress.ip_network(s) for s in sources]
    family = [n for n in networks if n.version == version]
    return tuple(str(n) for n in ipaddress.collapse_addresses(family))


def openings(firewall: Firewall) -> list[Opening]:
    own = (
        ("admin", firewall.firewall_ssh_port, firewall.admin_sources, "SSH: flower_admin_sources"),
        ("acme", HTTP_PORT, firewall.acme_sources, "HTTP, ACME challenge: flower_acme_sources"),
        ("allowed", HTTPS_PORT, firewall.allowed_sources, "HTTPS: flower_allowed_sources"),
        ("monitoring", HTTPS_PORT, firewall.monitoring_sources, "HTTPS: flower_monitoring_sources"),
    )
    return [
        *(Opening(port, "tcp", sources, purpose, name) for name, port, sources, purpose in own),
        *(
            Opening(
                o.port,
                o.protocol,
                o.sources,
                f"{o.purpose}: flower_firewall_openings",
                f"open_{o.protocol}_{o.port}",
            )  # fmt: skip
            for o in firewall.firewall_openings
        ),
    ]


@dataclass(frozen=True)
class Ruleset:
    """The nft file for flowerbed's table; its digest is also the live table's comment."""

    text: str
    digest: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def ruleset(firewall: Firewall) -> Ruleset:
    def text(comment: str) -> str:
        return render(
            "nftables-flowerbed.nft.j2",
            comment=comment,
            openings=openings(firewall),
            icmp_types=ICMP_TYPES,
            icmpv6_types=ICMPV6_TYPES,
        )

    digest = hashlib.sha256(text("").encode()).hexdigest()[:16]
    return Ruleset(text(DIGEST_PREFIX + digest), digest)


# --- what is loaded -------------------------------------------------------------------------


class LoadedRulesetDigest(LoadedTable):
    """The digest in the live flowerbed table's comment; None when no such table is loaded."""

    def process(self, output: list[str]) -> str | None:
        pattern = re.compile(rf'\s*comment "{re.escape(DIGEST_PREFIX)}([0-9a-f]+)"')
        found = (pattern.fullmatch(line) for line in output)
        return next((match.group(1) for match in found if match), None)


# --- applying it safely ---------------------------------------------------------------------


def script(*arguments: str) -> StringCommand:
    """The switch script, told where its state and the boot ruleset live."""
    return command(SCRIPT, STATE_DIR, BOOT_RULESET, *arguments)


def pending_ruleset(digest: str) -> str:
    """Where a ruleset waits to be applied: named by its digest, so overlapping runs never
    overwrite each other's."""
    return f"{STATE_DIR}/pending-{digest}.nft"


class ConfirmOverNewConnection(PyinfraCommand):
    """Confirms the new ruleset over a NEW SSH connection, or rolls it back and fails the host."""

    def __init__(self, digest: str, rollback_seconds: int):
        super().__init__()
        self.digest = digest
        self.rollback_seconds = rollback_seconds

    def __repr__(self) -> str:
        return f"ConfirmOverNewConnection({self.digest}, rollback after {self.rollback_seconds}s)"

    def execute(self, state, host, connector_arguments) -> bool:
        if not is_ssh_host(host):
            host.log(f"not an SSH host ({connector_name(host)}): confirming directly")
            return host.run_shell_command(script("confirm", self.digest), **connector_arguments)[0]
        fresh = new_ssh_connection(state, host)
        if fresh is None:
            return roll_back_now(host, connector_arguments, self.rollback_seconds)
        try:
            confirmed, output = fresh.run_shell_command(
                script("confirm", self.digest), **connector_arguments
            )
        finally:
            close_ssh_connector(fresh)
        if not confirmed:
            host.log_styled(
                f"firewall: the new ruleset could not be confirmed: {output.stderr}",
                fg="red",
                log_func=logger.error,
            )
        return confirmed


def new_ssh_connection(state, host) -> SSHConnector | None:
    """A second, separate SSH connection to the host (the run's own one is already established)."""
    for attempt in range(1, NEW_CONNECTION_ATTEMPTS + 1):
        # a short connect timeout: a SYN the new ruleset drops is never answered
        fresh = new_ssh_connector(state, host, NEW_CONNECTION_TIMEOUT)
        try:
            fresh.connect()
            return fresh
        except Exception as error:  # pyinfra raises ConnectError; paramiko anything
            host.log(
                f"firewall: new SSH connection, attempt {attempt}: {error}", log_func=logger.warning
            )
            time.sleep(1)
    return None


def roll_back_now(host, connector_arguments, rollback_seconds: int) -> bool:
    address = f"{host.data.get('ssh_hostname') or host.name}:{host.data.get('ssh_port') or 22}"
    restored, _ = host.run_shell_command(script("rollback"), **connector_arguments)
    outcome = (
        "the previous ruleset is restored"
        if restored
        else f"the host restores the previous ruleset within {rollback_seconds}s (its timer)"
    )
    host.log_styled(
        f"firewall: after loading the new ruleset no NEW SSH connection to {address} could be "
        f"opened, so it would lock the operator out: {outcome}. Fix: put the address you run "
        f"pyinfra from in flower_admin_sources and sshd's port in flower_firewall_ssh_port",
        fg="red",
        log_func=logger.error,
    )
    return False


@operation()
def guarded_ruleset(firewall: Firewall):
    """flowerbed's table is loaded from `firewall`, confirmed by a NEW SSH connection, or undone."""
    wanted = ruleset(firewall)
    loaded = facts.ask(LoadedRulesetDigest)
    on_disk = facts.ask(PathStates, paths=(BOOT_RULESET,)).get(BOOT_RULESET)
    if loaded == wanted.digest and on_disk and on_disk.sha256 == wanted.sha256:
        host.noop(f"nftables table {' '.join(TABLE)} is loaded and up to date")
        return
    yield FileUploadCommand(StringIO(wanted.text), pending_ruleset(wanted.digest))
    seconds = str(firewall.firewall_rollback_seconds)
    yield script("apply", wanted.digest, seconds, pending_ruleset(wanted.digest))
    yield ConfirmOverNewConnection(wanted.digest, firewall.firewall_rollback_seconds)


# --- the host's other services -------------------------------------------------------------

# the ruleset's own DHCP client rules keep these open for their replies
DHCP_CLIENT_PORTS = {(68, "udp"), (546, "udp")}
SHARED_PORT_SETTINGS = {
    HTTP_PORT: "flower_acme_sources",
    HTTPS_PORT: "flower_allowed_sources and flower_monitoring_sources",
}


def shared_ports(firewall: Firewall, neighbours: Neighbours) -> dict[int, str]:
    """flowerbed's own ports (80, 443) that another nginx site listens on too, and that the
    ruleset does not open to everyone: that site would be cut off from the rest."""
    return {
        port: setting
        for port, setting in SHARED_PORT_SETTINGS.items()
        if port in neighbours.listen_ports and not open_to_all(firewall, port)
    }


def open_to_all(firewall: Firewall, port: int) -> bool:
    sources = {s for o in openings(firewall) if (o.port, o.protocol) == (port, "tcp")
               for s in o.sources}  # fmt: skip
    return set(EVERYWHERE) <= sources


def kept_ports(firewall: Firewall, shared: dict[int, str] | None = None) -> set[tuple[int, str]]:
    """(port, protocol) pairs the ruleset for `firewall` keeps open to whoever listens there,
    or the operator agreed to close; `shared`: its ports another nginx site listens on too."""
    shared = shared or {}
    opened = {(o.port, o.protocol) for o in openings(firewall) if o.sources}
    opened -= {(port, "tcp") for port in shared}
    return opened | DHCP_CLIENT_PORTS | set(firewall.firewall_close_listeners)


@operation()
def listeners_kept(firewall: Firewall, closing: Callable[[], set[tuple[int, str]]] = set):
    """Before a changed ruleset: no service listening beyond loopback is newly closed to every
    other machine unless flower_firewall_openings opens it or flower_firewall_close_listeners
    agrees, or `closing()` names it (a Flower being taken over, flowerbed/takeover.py).
    Refused, the host fails here, before its firewall or anything after changes."""
    if facts.ask(LoadedRulesetDigest) == ruleset(firewall).digest:
        host.noop("the loaded ruleset is the wanted one: it closes nothing new")
        return
    shared = shared_ports(firewall, facts.ask(NginxNeighbours))
    cut = cut_off(
        facts.ask(ListeningSockets),
        kept_ports(firewall, shared) | closing(),
        facts.ask(LoadedOpenPorts),
    )
    if not cut:
        host.noop("every service listening beyond loopback stays reachable, or is agreed closed")
        return
    message = refusal(cut, shared)
    yield from refused(message)


@deploy("Firewall: the host's other services")
def other_services_kept(
    firewall: Firewall, closing: Callable[[], set[tuple[int, str]]] = set
) -> None:
    """No other service of the host's is cut off unless the operator said so (or `closing()`
    names its port). Runs before anything else changes the host, so a refused host is left
    exactly as it was."""
    if not firewall.firewall_manage:
        return  # no table of flowerbed's closes anything
    facts.expect(LoadedRulesetDigest)
    listeners_kept(
        name="No listening service closed unless declared", firewall=firewall, closing=closing
    )


# --- the deploy -----------------------------------------------------------------------------


@deploy("Firewall")
def inbound_firewall(firewall: Firewall) -> None:
    """Inbound traffic is limited to the configured sources; the operator is never locked out.
    With flower_firewall_manage = False, the host's own firewall decides instead."""
    if not firewall.firewall_manage:
        firewall_left_to_the_host(firewall)
        return
    system_packages(["nftables"])
    host_side()
    facts.expect(LoadedRulesetDigest)
    facts.expect(PathStates, paths=(BOOT_RULESET,))
    guarded_ruleset(
        name="Firewall rules (nft -c, applied atomically, confirmed by a new SSH login)",
        firewall=firewall,
    )
    systemd.daemon_reload(
        name="Reload systemd (firewall units changed)", _if=changed(UNIT_FILE, NFTABLES_DROP_IN)
    )
    unit_running("Firewall boot unit is enabled", UNIT)


def firewall_left_to_the_host(firewall: Firewall) -> None:
    """flower_firewall_manage = False: no flowerbed table, boot unit or drop-in stays; what the
    host's own firewall must let in is logged for the operator."""
    facts.expect(LoadedRulesetDigest)
    facts.expect(UnitStates, units=(UNIT,))
    flowerbed_table_removed(name="No flowerbed table is loaded, none loads at boot")
    root_files(
        "No flowerbed firewall boot files",
        [Absent(UNIT_FILE), Absent(NFTABLES_DROP_IN), Absent(BOOT_RULESET)],
    )
    systemd.daemon_reload(
        name="Reload systemd (firewall units removed)", _if=changed(UNIT_FILE, NFTABLES_DROP_IN)
    )
    must_be_open(name="What the host's own firewall must let in", firewall=firewall)


@operation()
def flowerbed_table_removed():
    """flowerbed's table is not loaded and its boot unit is neither enabled nor running."""
    unit = facts.ask(UnitStates, units=(UNIT,)).get(UNIT, {})
    boot_unit_on = unit.get("enabled") or unit.get("running")
    loaded = facts.ask(LoadedRulesetDigest)
    if not (boot_unit_on or loaded):
        host.noop("no flowerbed table is loaded and none loads at boot")
        return
    if boot_unit_on:
        yield command("systemctl", "disable", "--now", UNIT)
    if loaded:
        yield command("nft", "delete", "table", *TABLE)


@operation()
def must_be_open(firewall: Firewall):
    """Logs each opening the ruleset would have had: the host's own firewall's to keep."""
    needed = "; ".join(
        f"{o.port}/{o.protocol} from {', '.join(o.sources)} ({o.purpose})"
        for o in openings(firewall)
        if o.sources
    )
    host.log_styled(
        f"flower_firewall_manage = False: the host's own firewall must let in {needed}",
        fg="yellow",
        log_func=logger.warning,
    )
    return
    yield


def host_side() -> None:
    """The script that applies, confirms and rolls back (with its directories);
    flowerbed-firewall.service, which loads the confirmed ruleset at boot; and nftables.service's
    drop-in, which loads it again after its own `flush ruleset`."""
    unit = render("flowerbed-firewall.service.j2", script=SCRIPT, boot_ruleset=BOOT_RULESET)
    drop_in = render("nftables-service-flowerbed.conf.j2", boot_ruleset=BOOT_RULESET)
    root_files(
        "Firewall switch script (apply, confirm, roll back), boot unit and nftables drop-in",
        [
            RootDirectory(SCRIPT_DIR),
            RootDirectory(BOOT_DIR),
            RootDirectory(STATE_DIR, mode="700"),
            RootFile(SCRIPT, SCRIPT_SOURCE, mode="755"),
            RootFile(UNIT_FILE, unit),
            RootDirectory(NFTABLES_DROP_IN_DIR),
            RootFile(NFTABLES_DROP_IN, drop_in),
        ],
    )
