"""The edge: what a browser meets. nginx on port 80, the certificate, the logins, the HTTPS site.

Order matters on a first deploy: nginx must answer the ACME challenge on port 80 before a
certificate exists, and the HTTPS site can only be tested (`nginx -t`) once it does. A host
whose certificate request fails stops there and keeps serving what it served before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyinfra.api import deploy
from pyinfra.operations import files

from .auth import HTPASSWD, Login, dashboard_logins, htpasswd_file
from .nginx import Dashboard, nginx_http, nginx_https, site_names
from .secrets import Secret
from .settings import Settings
from .tls import CertificateRequest, certbot, dns_credentials, tls_certificate


@dataclass(frozen=True)
class EdgeInputs:
    """The edge's checked inputs for one host: its site and the operator's secrets for it."""

    site: Dashboard
    logins: tuple[Login, ...]
    dns_credentials: Secret | None


def edge_inputs(settings: Settings, host_name: str, environ: Mapping[str, str]) -> EdgeInputs:
    return EdgeInputs(
        site=dashboard_site(settings, host_name),
        logins=dashboard_logins(settings.auth, environ),
        dns_credentials=dns_credentials(settings.tls, environ),
    )


def dashboard_site(settings: Settings, host_name: str) -> Dashboard:
    return Dashboard(
        names=site_names(settings, host_name),
        url_prefix=settings.options.url_prefix,
        socket=settings.flower.socket,
        basic_auth=settings.auth.mode == "basic",
    )


@deploy("Edge: nginx, TLS, logins")
def edge(settings: Settings, inputs: EdgeInputs) -> None:
    site = inputs.site
    nginx_http(site)
    certbot(settings.tls, inputs.dns_credentials)
    certificate = tls_certificate(CertificateRequest(site.names, settings.tls))
    if site.basic_auth:
        logins = htpasswd_file(
            name="Dashboard logins (bcrypt)", path=HTPASSWD, logins=inputs.logins
        )
    else:
        logins = files.file(
            name="No nginx logins (Flower does OAuth)", path=HTPASSWD, present=False
        )
    nginx_https(site, settings, certificate, logins)
