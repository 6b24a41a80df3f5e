"""How hosts reach package registries: apt and pip through an egress proxy, extra CAs trusted;
and the Debian packages each concern needs.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server

from . import facts
from .hostfiles import Absent, RootFile, changed, root_files
from .render import render
from .resources import local_path
from .settings import Egress
from .shell import command

APT_PROXY_CONF = "/etc/apt/apt.conf.d/80flowerbed-proxy"
EXTRA_CA_DIR = "/usr/local/share/ca-certificates/flowerbed"
# The packages flowerbed installed (they were missing), one a line: what remove.py may purge
INSTALLED_RECORD_DIR = "/var/lib/flowerbed"
INSTALLED_RECORD = f"{INSTALLED_RECORD_DIR}/apt-installed"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@deploy("Package sources")
def package_sources(egress: Egress) -> None:
    """apt uses the egress proxy (if any) and the system trusts the extra CAs (if any)."""
    proxy = (
        RootFile(APT_PROXY_CONF, render("apt-proxy.conf.j2", proxy=egress.egress_proxy))
        if egress.egress_proxy
        else Absent(APT_PROXY_CONF)
    )
    certificates = [
        RootFile(f"{EXTRA_CA_DIR}/{Path(local).stem}.crt", local_path(local))
        for local in egress.egress_ca_certificates
    ]
    root_files("apt's egress proxy and the extra CAs to trust", [proxy, *certificates])
    if certificates:
        server.shell(
            name="Rebuild the system CA bundle",
            commands=["update-ca-certificates"],
            _if=changed(*(certificate.path for certificate in certificates)),
        )


class InstalledPackages(FactBase):
    """Which of `packages` dpkg has installed."""

    merge_argument = "packages"  # with others of its kind, one command (flowerbed.facts)

    def command(self, packages: tuple[str, ...]) -> StringCommand:
        query = command("dpkg-query", "--show", "--showformat=${Package} ${db:Status-Abbrev}\\n")
        return StringCommand(query, *packages, "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> set:
        return set()

    def process(self, output: list[str]) -> set[str]:
        return {line.split()[0] for line in output if line.split()[1:2] == ["ii"]}


def system_packages(packages: list[str]) -> OperationMeta:
    """The Debian packages are installed; apt's lists are refreshed only when one is missing."""
    facts.expect(InstalledPackages, packages=tuple(packages))
    return apt_installed(name=f"Install {', '.join(packages)}", packages=tuple(packages))


@operation()
def apt_installed(packages: tuple[str, ...]):
    installed = facts.ask(InstalledPackages, packages=packages)
    missing = [package for package in packages if package not in installed]
    if not missing:
        host.noop(f"{', '.join(packages)}: installed")
        return
    yield command("apt-get", "update")
    yield command(
        "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "--yes",
        "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
        "install", "--no-install-recommends", *missing,
    )  # fmt: skip
    yield command("mkdir", "-p", INSTALLED_RECORD_DIR)
    yield StringCommand(command("printf", "%s\\n", *missing), ">>", INSTALLED_RECORD)


def pip_conf(egress: Egress) -> str:
    """pip's configuration for a venv: proxy, index and the system CA bundle."""
    return render("pip.conf.j2", egress=egress, ca_bundle=SYSTEM_CA_BUNDLE)
