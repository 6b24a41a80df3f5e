"""The edge's inputs (flowerbed.edge): the site's names, the dashboard's logins, the DNS
plugin's credentials, checked for one host before any host changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings, SettingsError, Tls, dns_name, duplicate_names
from ..validation import Problems
from .instances import SiteInstance, site_instances
from .logins import Login, checked_logins
from .secrets import Secret, read_secret


@dataclass(frozen=True)
class Dashboard:
    """What the templates need to know about the site."""

    names: tuple[str, ...]
    url_prefix: str  # Flower's, '' = at the root
    socket: str
    basic_auth: bool
    instances: tuple[SiteInstance, ...] = ()  # more Flowers under paths of their own

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


@dataclass(frozen=True)
class EdgeInputs:
    """The edge's checked inputs for one host: its site and the operator's secrets for it."""

    site: Dashboard
    logins: tuple[Login, ...]
    dns_credentials: Secret | None


def edge_inputs(settings: Settings, host_name: str, environ: Mapping[str, str]) -> EdgeInputs:
    """The edge's inputs, checked; every problem at once (SettingsErrors)."""
    problems, inputs = Problems(), {}
    # incomplete: a setting these need may have failed its own check already
    with problems.check(incomplete=True):
        inputs["site"] = dashboard_site(settings, host_name)
    with problems.check(incomplete=True):
        inputs["logins"] = checked_logins(settings.auth, environ)
    with problems.check(incomplete=True):
        inputs["dns_credentials"] = dns_credentials(settings.tls, environ)
    problems.raise_any()
    return EdgeInputs(**inputs)


def dashboard_site(settings: Settings, host_name: str) -> Dashboard:
    names = site_names(settings, host_name)
    if not settings.site.fqdn:  # the host's name stands in for the fqdn: no alias may repeat it
        for error in duplicate_names(names[0], names[1:]):
            raise error
    return Dashboard(
        names=names,
        url_prefix=settings.options.url_prefix,
        socket=settings.flower.socket,
        basic_auth=settings.auth.mode == "basic",
        instances=site_instances(settings),
    )


def dns_credentials(tls: Tls, environ: Mapping[str, str]) -> Secret | None:
    """The DNS plugin's credentials file (its path: the variable flower_tls_dns_credentials_env)."""
    if not tls.dns_credentials_env:
        return None
    path = read_secret("flower_tls_dns_credentials_env", tls.dns_credentials_env, environ).value
    if not os.path.isfile(path):
        raise SettingsError(
            "flower_tls_dns_credentials_env",
            f"${tls.dns_credentials_env} names {path}, which is not a file",
            "point it at the DNS plugin's credentials .ini",
        )
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "cannot be read"
        raise SettingsError(
            "flower_tls_dns_credentials_env",
            f"${tls.dns_credentials_env} names {path}, which {why}",
            "point it at the DNS plugin's credentials .ini (a text file of key = value lines)",
        ) from None
    return Secret(f"${tls.dns_credentials_env}", text)
