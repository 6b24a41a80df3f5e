"""nginx in front of Flower: one site per host, from flowerbed's own templates.

Two files in /etc/nginx/conf.d, so a first deploy can prove its names before any certificate
exists: flowerbed-http.conf (port 80: the ACME challenge from the webroot, a redirect to HTTPS
for everything else) and flowerbed.conf (port 443: TLS per Mozilla's "intermediate" profile,
the logins, and Flower's unix socket). certbot never edits these files (`certonly`).

nginx may serve other sites on the host, and they keep answering as they did. No other site's
file is ever edited or removed: Debian's default site is disabled only while it is the file
nginx-common shipped (its conffile checksum). flowerbed's servers claim `default_server` on 80
and 443 only where no other site listens. Where one listens without `default_server`, nginx's
implicit default is the first server it loads, and conf.d loads before sites-enabled: requests
for names nobody serves then reach flowerbed's servers. A site marked `default_server` keeps
them.

A changed file goes live only through `nginx -t`: the new file replaces the old one, nginx
checks the whole configuration, and on failure the old file is put back and the host fails
with nginx's error, so nginx keeps serving the configuration it has. nginx reloads only when
a file, the certificate or the login names changed (a new password reloads nothing: nginx reads
the htpasswd at every request).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from . import facts
from .auth import HTPASSWD
from .ban import BAN, SOURCE_PREFIX_MAP
from .decoy import decoy_context
from .hostfiles import Absent, PathStates, RootFile, entry_commands
from .inputs.edge import Dashboard
from .render import render
from .settings import DashboardProxy
from .shell import command
from .tls import WEBROOT, CertificatePaths
from .units import unit_running

CONF_DIR = "/etc/nginx/conf.d"
HTTP_SITE = f"{CONF_DIR}/flowerbed-http.conf"
HTTPS_SITE = f"{CONF_DIR}/flowerbed.conf"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
STOCK_DEFAULT = "/etc/nginx/sites-available/default"  # a conffile of nginx-common
LISTEN = re.compile(r"^\s*listen\s")
LOOPBACK = ("127.0.0.1", "::1")
# Where the dashboard's server counts failed logins: a loopback address of its own, so nginx
# gives requests to it (and only those) to the counting server, on the port 80 listener.
LOGIN_FAILURES_LISTEN = "127.0.0.80:80"


def origin_patterns(names: tuple[str, ...]) -> tuple[str, ...]:
    """Regexps for the dashboard's own origins (`https://name`; `*.x` is one label under x)."""
    return tuple(
        "https://"
        + (r"[a-z0-9-]+\." + re.escape(name[2:]) if name.startswith("*.") else re.escape(name))
        for name in names
    )


# --- the host's other sites -----------------------------------------------------------------


@dataclass(frozen=True)
class Neighbours:
    """What the host's other nginx sites decide for flowerbed's."""

    stock_default_enabled: bool  # Debian's default site, enabled and as nginx-common shipped it
    listen_ports: frozenset[int]  # ports other sites listen on

    def claims_default(self, port: int) -> bool:
        """flowerbed's server is `port`'s default only where no other site listens: there, the
        requests for names nobody serves (or an address) stay what they were."""
        return port not in self.listen_ports


ALONE = Neighbours(stock_default_enabled=False, listen_ports=frozenset())  # a host of its own

# Every `listen` line nginx loads, under its file's `# configuration file` line (`nginx -T`, so
# includes and nginx.conf count; if the configuration does not load, the sites' files as they
# are), filtered on the host: nothing else of the configuration leaves it. Then Debian's
# default site: the md5 nginx-common shipped, the file's own, where sites-enabled/default points.
NEIGHBOURS_SCRIPT = "; ".join(
    (
        "{ nginx -T 2>/dev/null || for f in /etc/nginx/sites-enabled/* /etc/nginx/conf.d/*.conf",
        'do [ -f "$f" ] && echo "# configuration file $f:" && cat "$f"',
        "done; } | grep -E '^# configuration file |^[[:space:]]*listen[[:space:]]'",
        "printf 'shipped '",
        "dpkg-query -W -f='${Conffiles}\\n' nginx-common 2>/dev/null"
        f" | awk '$1 == \"{STOCK_DEFAULT}\" {{print $2}}'",
        f"printf '\\npresent '; md5sum {STOCK_DEFAULT} 2>/dev/null | cut -d' ' -f1",
        f"printf '\\nenabled '; readlink -f {DEFAULT_SITE} 2>/dev/null",
        "echo",
    )
)
FILE_HEADER = "# configuration file "


class NginxNeighbours(FactBase):
    """The ports other sites listen on and whether Debian's default site is as shipped."""

    def command(self) -> StringCommand:
        return StringCommand("sh", "-c", shlex.quote(NEIGHBOURS_SCRIPT))

    @staticmethod
    def default() -> Neighbours:
        return ALONE

    def process(self, output: list[str]) -> Neighbours:
        found = dict(
            line.split(" ", 1)
            for line in output
            if line.split(" ", 1)[0] in ("shipped", "present", "enabled") and " " in line
        )
        shipped, present = found.get("shipped", "").strip(), found.get("present", "").strip()
        stock = bool(shipped) and shipped == present
        enabled = found.get("enabled", "").strip() == STOCK_DEFAULT
        ours = {HTTP_SITE, HTTPS_SITE} | ({DEFAULT_SITE} if stock and enabled else set())
        ports, current = set(), ""
        for line in output:
            if line.startswith(FILE_HEADER):
                current = line[len(FILE_HEADER) :].rstrip(":")
            elif current not in ours and LISTEN.match(line):
                ports.add(listen_port(line))
        return Neighbours(stock and enabled, frozenset(ports))


def listen_port(line: str) -> int:
    """The port of a `listen` line: `80`, `[::]:443 ssl`, `10.0.0.1:8080`, `unix:...` (0)."""
    address = line.split("listen", 1)[1].split(";")[0].split()[0]
    if address.startswith("unix:"):
        return 0
    port = address.rpartition(":")[2] if ":" in address else address
    return int(port) if port.isdigit() else 80


def http_site_text(site: Dashboard, neighbours: Neighbours = ALONE) -> str:
    return render(
        "nginx-http.conf.j2",
        site=site,
        webroot=WEBROOT,
        default_server=neighbours.claims_default(80),
    )


def dashboard_context(site: Dashboard, proxy: DashboardProxy, in_site: bool = False) -> dict:
    """What the dashboard's templates (nginx-dashboard-*.conf.j2) need, in either placement."""
    return {
        "site": site,
        "in_site": in_site,
        "nginx": proxy.nginx,
        "htpasswd": HTPASSWD,
        "proxy_login": proxy.flower.proxy_login_nginx,
        "allowed_sources": proxy.firewall.allowed_sources,
        "monitoring_sources": proxy.firewall.monitoring_sources,
        "admin_sources": proxy.firewall.admin_sources,
        "local_sources": LOOPBACK,
        "origins": origin_patterns(site.names),
        "failures_listen": LOGIN_FAILURES_LISTEN,
        "source_prefix_map": SOURCE_PREFIX_MAP,
        "ban": BAN,
        **decoy_context(),
    }


def https_site_text(site: Dashboard, proxy: DashboardProxy, neighbours: Neighbours = ALONE) -> str:
    return render(
        "nginx-https.conf.j2",
        **dashboard_context(site, proxy),
        default_server=neighbours.claims_default(443),
        certificate=CertificatePaths(),
    )


# --- operations -----------------------------------------------------------------------------


def checked_or_restored(path: str, backup: str | None, relink: bool = False) -> StringCommand:
    """nginx accepts the whole configuration, or `path` goes back to `backup` (and, `relink`,
    Debian's default site is enabled again) and this fails."""
    restore = command("mv", "-f", backup, path) if backup else command("rm", "-f", path)
    if relink:
        restore = StringCommand(restore, ";", command("ln", "-sfn", STOCK_DEFAULT, DEFAULT_SITE))
    keep = command("rm", "-f", backup) if backup else command("true")
    kept = f"flowerbed: nginx -t failed, {path} is back as it was; nginx serves what it served"
    return StringCommand(
        "if", command("nginx", "-t", "-q"), ";", "then", keep, ";",
        "else", restore, ";", command("echo", kept), ">&2;", "exit", "1", ";", "fi",
    )  # fmt: skip


SiteText = Callable[[Neighbours], str]


def nginx_file(name: str, path: str, text: SiteText, disable_stock_default: bool = False):
    """`path` holds what `text` renders for the host's other sites, and nginx accepts it."""
    facts.expect(NginxNeighbours)
    facts.expect(PathStates, paths=(path, DEFAULT_SITE))
    return nginx_config(
        name=name, path=path, text=text, disable_stock_default=disable_stock_default
    )


@operation()
def nginx_config(path: str, text: SiteText, disable_stock_default: bool = False):
    """
    Ensure `path` holds the site rendered for the host's other sites, and nginx accepts the
    configuration with it; a file that fails `nginx -t` is taken back out (the previous one
    restored) and the host fails. With `disable_stock_default`, Debian's default site is
    disabled while it is the file nginx-common shipped (an edited one is the operator's).
    """
    neighbours = facts.ask(NginxNeighbours)
    current = facts.ask(PathStates, paths=(path, DEFAULT_SITE))
    stock = disable_stock_default and neighbours.stock_default_enabled
    removals = (
        list(entry_commands(Absent(DEFAULT_SITE), current.get(DEFAULT_SITE))) if stock else []
    )
    upload = list(entry_commands(RootFile(path, text(neighbours)), current.get(path)))
    if not upload and not removals:
        host.noop(f"{path} is up to date")
        return
    yield from removals
    if not upload:
        return  # (the default site alone: nothing of flowerbed's changed, nothing to check)
    backup = f"{path}.flowerbed-old" if current.get(path) else None
    if backup:
        yield command("cp", "-p", path, backup)
    yield from upload
    yield checked_or_restored(path, backup, relink=bool(removals))


CHECK_AND_RELOAD = StringCommand(
    command("nginx", "-t", "-q"), "&&", command("systemctl", "reload", "nginx")
)


def reload_nginx(name: str, *changes: OperationMeta) -> OperationMeta:
    """One `nginx -t` and reload, only if one of `changes` changed something."""
    return server.shell(name=name, commands=[CHECK_AND_RELOAD], _if=any_changed(*changes))


# --- deploys --------------------------------------------------------------------------------


@deploy("nginx: port 80")
def nginx_http(site: Dashboard) -> None:
    """nginx (installed by the edge) runs and answers the ACME challenge on port 80 (and
    redirects the rest)."""
    unit_running("nginx is enabled and running", "nginx")
    http = nginx_file(
        "Port 80 site: ACME challenge, redirect to HTTPS (Debian's unedited default disabled)",
        HTTP_SITE,
        lambda neighbours: http_site_text(site, neighbours),
        disable_stock_default=True,
    )
    reload_nginx("Test and reload nginx (port 80 site changed)", http)


@deploy("nginx: the dashboard")
def nginx_https(site: Dashboard, proxy: DashboardProxy, *changes: OperationMeta) -> None:
    """The HTTPS site in front of Flower; reloaded if it, the certificate or the login names
    changed."""
    https = nginx_file(
        "HTTPS site: TLS, logins, Flower's socket",
        HTTPS_SITE,
        lambda neighbours: https_site_text(site, proxy, neighbours),
    )
    reload_nginx(
        "Test and reload nginx (site, certificate or login names changed)", https, *changes
    )
