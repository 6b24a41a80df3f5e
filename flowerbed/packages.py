"""How hosts reach package registries: apt and pip through an egress proxy, extra CAs trusted.

Shared by every concern that installs packages (Flower's venv here; nginx/certbot later).
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from .render import render
from .resources import local_path
from .settings import Egress

APT_PROXY_CONF = "/etc/apt/apt.conf.d/80flowerbed-proxy"
EXTRA_CA_DIR = "/usr/local/share/ca-certificates/flowerbed"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@deploy("Package sources")
def package_sources(egress: Egress) -> None:
    """apt uses the egress proxy (if any) and the system trusts the extra CAs (if any)."""
    if egress.egress_proxy:
        files.put(
            name="Route apt through the egress proxy",
            src=StringIO(render("apt-proxy.conf.j2", proxy=egress.egress_proxy)),
            dest=APT_PROXY_CONF,
            user="root",
            group="root",
            mode="644",
        )
    else:
        files.file(name="No apt egress proxy", path=APT_PROXY_CONF, present=False)

    uploads = [
        files.put(
            name=f"Trust the CA {Path(local).name}",
            src=str(local_path(local)),
            dest=f"{EXTRA_CA_DIR}/{Path(local).stem}.crt",
            user="root",
            group="root",
            mode="644",
        )
        for local in egress.egress_ca_certificates
    ]
    if uploads:
        server.shell(
            name="Rebuild the system CA bundle",
            commands=["update-ca-certificates"],
            _if=any_changed(*uploads),
        )


@deploy("System packages")
def system_packages(packages: list[str]) -> None:
    """The Debian packages are installed; apt's lists are refreshed only when one is missing."""
    apt.update(name="Refresh apt lists (a package is missing)", _if=lambda: missing(packages))
    apt.packages(name=f"Install {', '.join(packages)}", packages=packages, no_recommends=True)


def missing(packages: list[str]) -> bool:
    installed = host.get_fact(DebPackages)
    return any(package not in installed for package in packages)


def pip_conf(egress: Egress) -> str:
    """pip's configuration for a venv: proxy, index and the system CA bundle."""
    return render("pip.conf.j2", egress=egress, ca_bundle=SYSTEM_CA_BUNDLE)
