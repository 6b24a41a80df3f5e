"""nginx in front of Flower: one site per host, from flowerbed's own templates.

Two files in /etc/nginx/conf.d, so a first deploy can prove its names before any certificate
exists: flowerbed-http.conf (port 80: the ACME challenge from the webroot, a redirect to HTTPS
for everything else) and flowerbed.conf (port 443: TLS per Mozilla's "intermediate" profile,
the logins, and Flower's unix socket). Debian's default site is disabled; certbot never edits
these files (`certonly`).

A changed file goes live only through `nginx -t`: the new file replaces the old one, nginx
checks the whole configuration, and on failure the old file is put back and the host fails
with nginx's error, so nginx keeps serving the configuration it has. nginx reloads only when
a file, the certificate or the logins changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from . import facts
from .auth import HTPASSWD
from .hostfiles import Absent, PathStates, RootFile, entry_commands
from .render import render
from .settings import Settings, dns_name
from .shell import command
from .tls import WEBROOT, CertificatePaths
from .units import unit_running

CONF_DIR = "/etc/nginx/conf.d"
HTTP_SITE = f"{CONF_DIR}/flowerbed-http.conf"
HTTPS_SITE = f"{CONF_DIR}/flowerbed.conf"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
LOOPBACK = ("127.0.0.1", "::1")
# Where the dashboard's server counts failed logins: a loopback address of its own, so nginx
# gives requests to it (and only those) to the counting server, on the port 80 listener.
LOGIN_FAILURES_LISTEN = "127.0.0.80:80"


@dataclass(frozen=True)
class Dashboard:
    """What the templates need to know about the site."""

    names: tuple[str, ...]
    url_prefix: str  # Flower's, '' = at the root
    socket: str
    basic_auth: bool

    @property
    def fqdn(self) -> str:
        return self.names[0]

    @property
    def base(self) -> str:
        """Flower's location: '/' or '/<prefix>/' (Flower moves every route under its prefix)."""
        return f"/{self.url_prefix}/" if self.url_prefix else "/"


def site_names(settings: Settings, host_name: str) -> tuple[str, ...]:
    """fqdn (or, if unset, the host's inventory name) first, then the aliases."""
    fqdn = settings.site.fqdn or dns_name()("flower_fqdn (unset, so the host's name)", host_name)
    return (fqdn, *settings.site.server_aliases)


def origin_patterns(names: tuple[str, ...]) -> tuple[str, ...]:
    """Regexps for the dashboard's own origins (`https://name`; `*.x` is one label under x)."""
    return tuple(
        "https://"
        + (r"[a-z0-9-]+\." + re.escape(name[2:]) if name.startswith("*.") else re.escape(name))
        for name in names
    )


def http_site_text(site: Dashboard) -> str:
    return render("nginx-http.conf.j2", site=site, webroot=WEBROOT)


def https_site_text(site: Dashboard, settings: Settings) -> str:
    return render(
        "nginx-https.conf.j2",
        site=site,
        nginx=settings.nginx,
        certificate=CertificatePaths(),
        htpasswd=HTPASSWD,
        monitoring_sources=settings.firewall.monitoring_sources,
        local_sources=LOOPBACK,
        origins=origin_patterns(site.names),
        failures_listen=LOGIN_FAILURES_LISTEN,
    )


# --- operations -----------------------------------------------------------------------------


def checked_or_restored(path: str, backup: str | None) -> StringCommand:
    """nginx accepts the whole configuration, or `path` goes back to `backup` and this fails."""
    restore = command("mv", "-f", backup, path) if backup else command("rm", "-f", path)
    keep = command("rm", "-f", backup) if backup else command("true")
    kept = f"flowerbed: nginx -t failed, {path} is back as it was; nginx serves what it served"
    return StringCommand(
        "if", command("nginx", "-t", "-q"), ";", "then", keep, ";",
        "else", restore, ";", command("echo", kept), ">&2;", "exit", "1", ";", "fi",
    )  # fmt: skip


def nginx_file(name: str, path: str, content: str, remove: tuple[str, ...] = ()) -> OperationMeta:
    """`path` holds `content` and nginx accepts it (and the files in `remove` are gone)."""
    facts.expect(PathStates, paths=(path, *remove))
    return nginx_config(name=name, path=path, content=content, remove=remove)


@operation()
def nginx_config(path: str, content: str, remove: tuple[str, ...] = ()):
    """
    Ensure `path` holds `content` and nginx accepts the configuration with it; a file that
    fails `nginx -t` is taken back out (the previous one restored) and the host fails.
    """
    current = facts.ask(PathStates, paths=(path, *remove))
    removals = [c for gone in remove for c in entry_commands(Absent(gone), current.get(gone))]
    upload = list(entry_commands(RootFile(path, content), current.get(path)))
    if not upload and not removals:
        host.noop(f"{path} is up to date")
        return
    yield from removals
    if not upload:
        return
    backup = f"{path}.flowerbed-old" if current.get(path) else None
    if backup:
        yield command("cp", "-p", path, backup)
    yield from upload
    yield checked_or_restored(path, backup)


def reload_nginx(name: str, *changes: OperationMeta) -> OperationMeta:
    """One `nginx -t` and reload, only if one of `changes` changed something."""
    return server.shell(
        name=name,
        commands=[command("nginx", "-t", "-q"), command("systemctl", "reload", "nginx")],
        _if=any_changed(*changes),
    )


# --- deploys --------------------------------------------------------------------------------


@deploy("nginx: port 80")
def nginx_http(site: Dashboard) -> None:
    """nginx (installed by the edge) runs and answers the ACME challenge on port 80 (and
    redirects the rest)."""
    unit_running("nginx is enabled and running", "nginx")
    http = nginx_file(
        "Port 80 site: ACME challenge, redirect to HTTPS (Debian's default site disabled)",
        HTTP_SITE,
        http_site_text(site),
        remove=(DEFAULT_SITE,),
    )
    reload_nginx("Test and reload nginx (port 80 site changed)", http)


@deploy("nginx: the dashboard")
def nginx_https(site: Dashboard, settings: Settings, *changes: OperationMeta) -> None:
    """The HTTPS site in front of Flower; reloaded if it, the certificate or logins changed."""
    https = nginx_file(
        "HTTPS site: TLS, logins, Flower's socket", HTTPS_SITE, https_site_text(site, settings)
    )
    reload_nginx("Test and reload nginx (site, certificate or logins changed)", https, *changes)
