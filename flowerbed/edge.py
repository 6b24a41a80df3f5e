"""The edge: what a browser meets. nginx on port 80, the certificate, the logins, the HTTPS site.

Order matters on a first deploy: nginx must answer the ACME challenge on port 80 before a
certificate exists, and the HTTPS site can only be tested (`nginx -t`) once it does. A host
whose certificate request fails stops there and keeps serving what it served before.
"""

from __future__ import annotations

from pyinfra.api import deploy

from .auth import HTPASSWD, htpasswd
from .ban import login_ban
from .decoy import HEADERS_MORE_PACKAGE, no_users_map, users_map
from .existing_site import nginx_in_no_site, nginx_in_site
from .hostfiles import Absent, root_files
from .inputs.edge import EdgeInputs
from .instances import (
    InstanceInputs,
    host_login_names,
    instances_htpasswds,
    others_names,
)
from .nginx import nginx_http, nginx_https
from .packages import system_packages
from .proxy_login import proxy_login
from .settings import Auth, DashboardProxy, Site, Tls
from .tls import CertificateRequest, certbot, certbot_packages, tls_certificate


@deploy("Edge: nginx, TLS, logins")
def edge(
    proxy: DashboardProxy,
    existing: Site,
    tls: Tls,
    auth: Auth,
    inputs: EdgeInputs,
    instances: tuple[InstanceInputs, ...] = (),
) -> None:
    """nginx in front of Flower: a site of flowerbed's own with a certificate from ACME, or the
    dashboard's locations inside the operator's site (`existing`: flower_existing_site). The
    users map names every Flower's logins (the instances' too: flowerbed.decoy)."""
    site, in_site = inputs.site, bool(existing.existing_site)
    decoy = [HEADERS_MORE_PACKAGE] if site.basic_auth else []  # more_set_input_headers
    system_packages(["nginx", *decoy, *([] if in_site else certbot_packages(tls))])
    if not in_site:
        nginx_in_no_site()
        nginx_http(site)
        certbot(tls, inputs.dns_credentials)
        certificate = tls_certificate(CertificateRequest(site.names, tls))
    names = ()
    if site.basic_auth:
        proxy_login(proxy.flower)  # what the HTTPS site includes (made by Flower's part)
        logins = host_login_names(inputs.logins, instances)
        others = others_names(logins, HTPASSWD)
        htpasswd("Dashboard logins (bcrypt)", HTPASSWD, inputs.logins, others)  # read per request
        instances_htpasswds(instances, logins)
        # a new name: a reload
        names = (users_map(name for held in logins.values() for name in held),)
    else:
        root_files("No nginx logins (Flower does OAuth)", [Absent(HTPASSWD)])
    if in_site:
        nginx_in_site(site, proxy, existing, *names)  # the site's own certificate
    else:
        nginx_https(site, proxy, certificate, *names)
    if not site.basic_auth:
        no_users_map()  # after the site that no longer includes it
    login_ban(auth, proxy.nginx, proxy.firewall)  # after nginx: it reads the log nginx writes
