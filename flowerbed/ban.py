"""The login ban: fail2ban drops a source that keeps failing to log in, before its next guess.

nginx writes one line per failed dashboard login to LOG (the failures server in
templates/nginx-dashboard-http.conf.j2, log_format flowerbed_login_failures). The line names the
source: an IPv4 address, or an IPv6 address's /64 (SOURCE_PREFIX_MAP, also the key of nginx's
throttles and connection cap). fail2ban's jail flowerbed-login reads it (FILTER) and bans the
source in nftables with ACTION: fail2ban's own table `inet f2b-table`, ports 80 and 443 only,
never flower_admin_sources or loopback. SSH is never banned by this jail. The ban's drop comes
before flowerbed's table (priority -1), so a banned source's packets never reach nginx.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.operations import server

from . import facts
from .hostfiles import Absent, PathStates, RootFile, changed, root_files
from .packages import system_packages
from .render import render
from .settings import Auth, Firewall, Nginx
from .shell import command
from .units import unit_running

JAIL = "flowerbed-login"
FILTER = "flowerbed-nginx-login"
ACTION = "flowerbed-nftables"
JAIL_FILE = "/etc/fail2ban/jail.d/flowerbed.conf"
FILTER_FILE = f"/etc/fail2ban/filter.d/{FILTER}.conf"
ACTION_FILE = f"/etc/fail2ban/action.d/{ACTION}.conf"
FILES = (JAIL_FILE, FILTER_FILE, ACTION_FILE)
LOG = "/var/log/nginx/flowerbed-login-failures.log"
PORTS = (80, 443)
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1")

# nginx's map from $remote_addr to the source ($flowerbed_source; default: the address itself).
# nginx spells IPv6 in lower case without leading zeros, "::" for the longest (first) run of two
# or more zero groups. The /64 is the first four groups; where "::" stands among them, the count
# of groups after it says how many zeros it holds (8 in all). In order: the first match wins.
H = "[0-9a-f]{1,4}"
SOURCE_PREFIX_MAP = (
    (r"~\.", "$remote_addr"),  # IPv4, or IPv4-mapped IPv6 (::ffff:192.0.2.1): the address
    (rf"~^({H}:{H}:{H}:{H}):", "$1::/64"),  # four groups before any "::"
    (rf"~^::({H}):({H})(:{H}){{4}}$", "0:0:$1:$2::/64"),  # "::" = 2 zeros, then 6 groups
    (rf"~^::({H})(:{H}){{4}}$", "0:0:0:$1::/64"),  # "::" = 3 zeros, then 5 groups
    (rf"~^({H})::({H})(:{H}){{4}}$", "$1:0:0:$2::/64"),  # 1 group, 2 zeros, 5 groups
    ("~^::", "0::/64"),  # "::" first, reaching past the fourth group (fail2ban reads no "::/64")
    (rf"~^((?:{H}:){{0,2}}{H})::", "$1::/64"),  # "::" reaches past the fourth group
)


@dataclass(frozen=True)
class Ban:
    """What the templates name: the jail, its filter and action, the log nginx writes."""

    jail: str = JAIL
    filter: str = FILTER
    action: str = ACTION
    filter_path: str = FILTER_FILE
    log_path: str = LOG
    ports: tuple[int, ...] = PORTS


BAN = Ban()


def banning(auth: Auth, nginx: Nginx) -> bool:
    """A jail only where nginx checks passwords (basic auth) and flower_nginx_ban_failures > 0."""
    return auth.mode == "basic" and nginx.ban_failures > 0


def jail_text(nginx: Nginx, firewall: Firewall) -> str:
    ignored = (*LOOPBACK_NETWORKS, *firewall.admin_sources)
    return render("fail2ban-jail-flowerbed.conf.j2", ban=BAN, nginx=nginx, ignored=ignored)


def filter_text() -> str:
    return render("fail2ban-filter-flowerbed-nginx-login.conf.j2")


def action_text() -> str:
    return render("fail2ban-action-flowerbed-nftables.conf.j2")


@deploy("Login ban: fail2ban")
def login_ban(auth: Auth, nginx: Nginx, firewall: Firewall) -> None:
    """fail2ban runs flowerbed's jail (or, with no ban, none of flowerbed's files stay)."""
    if not banning(auth, nginx):
        root_files("No login ban of flowerbed's", [Absent(path) for path in FILES])
        server.shell(
            name="Reload fail2ban (flowerbed's jail went)",
            commands=[RELOAD],
            _if=changed(*FILES),
        )
        return
    system_packages(["fail2ban", "python3-systemd"])
    root_files(
        "fail2ban: flowerbed's jail, filter and nftables action",
        [
            RootFile(FILTER_FILE, filter_text()),
            RootFile(ACTION_FILE, action_text()),
            RootFile(JAIL_FILE, jail_text(nginx, firewall)),
        ],
    )
    facts.expect(PathStates, paths=(LOG,), digests=False)
    failures_log(name="nginx's failed-login log exists (fail2ban's jail needs it to start)")
    unit_running("fail2ban is enabled and running", "fail2ban", reset_failed=True)
    server.shell(
        name="Reload fail2ban (flowerbed's jail changed)",
        commands=[RELOAD],
        _if=changed(*FILES),
    )


@operation()
def failures_log():
    """LOG exists, as Debian's nginx makes its logs (nginx opens it at its next reload)."""
    if LOG in facts.ask(PathStates, paths=(LOG,), digests=False):
        host.noop(f"{LOG} exists")
        return
    yield command("install", "-m", "640", "-o", "www-data", "-g", "adm", "/dev/null", LOG)


# (fail2ban may be gone, or stopped: then there is nothing to reload)
# fail2ban's server answers a while after systemd started it (a first install starts it just
# before this): wait for its socket, then reload.
ANSWERING = command("timeout", "30", "sh", "-c", "until fail2ban-client ping; do sleep 0.2; done")
RELOAD = StringCommand(
    "!", command("systemctl", "is-active", "-q", "fail2ban"), "||",
    "{", ANSWERING, ">/dev/null", "&&", command("fail2ban-client", "reload"), ";", "}",
)  # fmt: skip


class LoginBans(FactBase):
    """The jail's current bans: {"running": bool, "banned": [source, ...], "total": int}."""

    def command(self) -> StringCommand:
        return StringCommand(
            command("fail2ban-client", "status", JAIL), "2>/dev/null", "||", "echo", "absent"
        )

    @staticmethod
    def default() -> dict:
        return {"running": False, "banned": [], "total": 0}

    def process(self, output: list[str]) -> dict:
        return login_bans(output)


def login_bans(output: list[str]) -> dict:
    """`fail2ban-client status <jail>`'s "Banned IP list" and "Total banned"."""
    found = LoginBans.default()
    for line in output:
        label, _, value = line.strip(" |`-").partition(":")
        if label.strip() == "Banned IP list":
            found["running"] = True
            found["banned"] = value.split()
        elif label.strip() == "Total banned" and value.strip().isdigit():
            found["total"] = int(value)
    return found
