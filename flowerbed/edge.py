"""The edge: what a browser meets. nginx on port 80, the certificate, the logins, the HTTPS site.

Order matters on a first deploy: nginx must answer the ACME challenge on port 80 before a
certificate exists, and the HTTPS site can only be tested (`nginx -t`) once it does. A host
whose certificate request fails stops there and keeps serving what it served before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyinfra.api import deploy

from .auth import HTPASSWD, Login, dashboard_logins, htpasswd
from .ban import login_ban
from .decoy import HEADERS_MORE_PACKAGE, no_users_map, users_map
from .existing_site import nginx_in_no_site, nginx_in_site
from .hostfiles import Absent, root_files
from .instances import (
    InstanceInputs,
    host_login_names,
    instances_htpasswds,
    others_names,
    site_instances,
)
from .nginx import Dashboard, nginx_http, nginx_https, site_names
from .packages import system_packages
from .proxy_login import proxy_login
from .secrets import Secret, check_password
from .settings import Auth, Settings, duplicate_names
from .tls import CertificateRequest, certbot, certbot_packages, dns_credentials, tls_certificate
from .validation import Problems


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


def checked_logins(auth: Auth, environ: Mapping[str, str]) -> tuple[Login, ...]:
    """The dashboard's logins, each with a password that is not weak."""
    logins = dashboard_logins(auth, environ)
    problems = Problems()
    for login in logins:
        with problems.check():
            check_password(
                "flower_auth_users_env", login.password, login.user, f"${auth.users_env}"
            )
    problems.raise_any()
    return logins


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


@deploy("Edge: nginx, TLS, logins")
def edge(
    settings: Settings, inputs: EdgeInputs, instances: tuple[InstanceInputs, ...] = ()
) -> None:
    """nginx in front of Flower: a site of flowerbed's own with a certificate from ACME, or the
    dashboard's locations inside the operator's site (flower_existing_site). The users map
    names every Flower's logins (the instances' too: flowerbed.decoy)."""
    site, in_site = inputs.site, bool(settings.site.existing_site)
    decoy = [HEADERS_MORE_PACKAGE] if site.basic_auth else []  # more_set_input_headers
    system_packages(["nginx", *decoy, *([] if in_site else certbot_packages(settings.tls))])
    if not in_site:
        nginx_in_no_site()
        nginx_http(site)
        certbot(settings.tls, inputs.dns_credentials)
        certificate = tls_certificate(CertificateRequest(site.names, settings.tls))
    names = ()
    if site.basic_auth:
        proxy_login(settings.flower)  # what the HTTPS site includes (made by Flower's part)
        logins = host_login_names(inputs.logins, instances)
        others = others_names(logins, HTPASSWD)
        htpasswd("Dashboard logins (bcrypt)", HTPASSWD, inputs.logins, others)  # read per request
        instances_htpasswds(instances, logins)
        # a new name: a reload
        names = (users_map(name for held in logins.values() for name in held),)
    else:
        root_files("No nginx logins (Flower does OAuth)", [Absent(HTPASSWD)])
    if in_site:
        nginx_in_site(site, settings, *names)  # the site's own certificate
    else:
        nginx_https(site, settings, certificate, *names)
    if not site.basic_auth:
        no_users_map()  # after the site that no longer includes it
    login_ban(settings)  # after nginx: it reads the log nginx writes
