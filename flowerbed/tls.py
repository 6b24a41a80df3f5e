"""The site's certificate: certbot (Debian's package) `certonly`, renewed by certbot.timer.

One lineage, `flowerbed`, holds every name of the site (flower_fqdn + flower_server_aliases).
certbot runs only when that lineage does not match what the data asks for: other names, another
ACME directory, another way of proving the names, or an expired certificate. Names are proven over
HTTP-01 (webroot: nginx serves /.well-known/acme-challenge/ from WEBROOT on port 80) or DNS-01
(a certbot DNS plugin with its credentials, or the operator's hook script).

certbot.timer renews; the deploy hook goes live only through `nginx -t` and a reload. A
private ACME directory's CA bundle is uploaded and given to certbot as REQUESTS_CA_BUNDLE, at
issuance and in certbot.service (a drop-in), so renewals reach the same directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, systemd

from .packages import system_packages
from .render import render
from .resources import HOST_SCRIPTS
from .secrets import Secret, read_secret, secret_file
from .settings import SettingsError, Tls
from .shell import command

CERT_NAME = "flowerbed"
LIVE_DIR = f"/etc/letsencrypt/live/{CERT_NAME}"
RENEWAL_CONF = f"/etc/letsencrypt/renewal/{CERT_NAME}.conf"
FLOWERBED_DIR = "/etc/letsencrypt/flowerbed"  # what flowerbed gives certbot
ACME_CA_BUNDLE = f"{FLOWERBED_DIR}/acme-ca.pem"
DNS_HOOK = f"{FLOWERBED_DIR}/dns-hook"
DNS_CREDENTIALS = f"{FLOWERBED_DIR}/dns-credentials.ini"
WEBROOT = "/var/lib/flowerbed/acme"
DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/flowerbed-nginx"
DEPLOY_HOOK_SOURCE = HOST_SCRIPTS / "certbot-deploy-hook"
CERTBOT_DROP_IN = "/etc/systemd/system/certbot.service.d/flowerbed.conf"


@dataclass(frozen=True)
class CertificatePaths:
    fullchain: str = f"{LIVE_DIR}/fullchain.pem"
    key: str = f"{LIVE_DIR}/privkey.pem"


@dataclass(frozen=True)
class Lineage:
    """What certbot holds for CERT_NAME: the certificate and how it renews."""

    names: tuple[str, ...]
    not_after: datetime
    serial: str
    server: str
    authenticator: str


@dataclass(frozen=True)
class CertificateRequest:
    names: tuple[str, ...]
    tls: Tls

    def reason_to_issue(self, lineage: Lineage | None, now: datetime) -> str | None:
        """Why certbot must run, or None when the certificate is exactly what is asked for."""
        if lineage is None:
            return "no certificate yet"
        if sorted(lineage.names) != sorted(self.names):
            return f"names {', '.join(lineage.names)} -> {', '.join(self.names)}"
        if lineage.server != self.tls.acme_directory:
            return f"ACME directory {lineage.server} -> {self.tls.acme_directory}"
        if lineage.authenticator != self.tls.authenticator:
            return f"challenge {lineage.authenticator} -> {self.tls.authenticator}"
        if lineage.not_after <= now:
            return "the certificate has expired"
        return None


class TlsLineage(FactBase):
    """flowerbed's certificate lineage (names, expiry, serial, server, authenticator) or None."""

    def command(self) -> StringCommand:
        cert = f"{LIVE_DIR}/cert.pem"
        return StringCommand(
            command("test", "-f", cert), "||", "exit 0;",
            command("openssl", "x509", "-in", cert, "-noout", "-serial", "-enddate",
                    "-ext", "subjectAltName"), ";",
            command("grep", "-E", "^(server|authenticator) = ", RENEWAL_CONF), "||", "true",
        )  # fmt: skip

    def process(self, output: list[str]) -> Lineage | None:
        return parse_lineage(output)


def parse_lineage(lines: list[str]) -> Lineage | None:
    values: dict[str, str] = {}
    names: list[str] = []
    for line in (line.strip() for line in lines):
        if line.startswith("DNS:"):
            names += [name.strip().removeprefix("DNS:") for name in line.split(",")]
        elif "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    if not values.get("notAfter"):
        return None
    not_after = datetime.strptime(values["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    return Lineage(
        names=tuple(names),
        not_after=not_after,
        serial=values.get("serial", ""),
        server=values.get("server", ""),
        authenticator=values.get("authenticator", ""),
    )


def certbot_argv(request: CertificateRequest) -> list[str]:
    """`certbot certonly` for exactly the requested names (replacing the lineage's names)."""
    tls = request.tls
    env = ["env", f"REQUESTS_CA_BUNDLE={ACME_CA_BUNDLE}"] if tls.acme_ca_bundle else []
    account = [f"--email={tls.email}"] if tls.email else ["--register-unsafely-without-email"]
    names = [f"--domain={name}" for name in request.names]
    return [
        *env, "certbot", "certonly", "--non-interactive", "--agree-tos",
        f"--cert-name={CERT_NAME}", f"--server={tls.acme_directory}",
        "--force-renewal",  # only called when the lineage does not match
        *account, *proof_arguments(tls), *names,
    ]  # fmt: skip


def proof_arguments(tls: Tls) -> list[str]:
    if tls.challenge == "http-01":
        return ["--webroot", f"--webroot-path={WEBROOT}"]
    if tls.dns_plugin:
        plugin = f"--dns-{tls.dns_plugin}"
        credentials = [f"{plugin}-credentials={DNS_CREDENTIALS}"] if tls.dns_credentials_env else []
        return [plugin, *credentials]
    return [
        "--manual", "--preferred-challenges=dns",
        f"--manual-auth-hook={DNS_HOOK} auth", f"--manual-cleanup-hook={DNS_HOOK} cleanup",
    ]  # fmt: skip


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
    return Secret(f"${tls.dns_credentials_env}", Path(path).read_text())


@operation()
def certificate(request: CertificateRequest):
    """The lineage holds a valid certificate for exactly the requested names; else certbot."""
    lineage = host.get_fact(TlsLineage)
    reason = request.reason_to_issue(lineage, datetime.now(UTC))
    if reason is None:
        host.noop(f"certificate for {', '.join(request.names)} is valid")
        return
    host.log(f"Will request a certificate from {request.tls.acme_directory} ({reason})")
    yield command(*certbot_argv(request))


# --- deploys --------------------------------------------------------------------------------


@deploy("certbot")
def certbot(tls: Tls, credentials: Secret | None) -> None:
    """certbot with what it needs to reach the ACME directory, prove the names and renew."""
    plugin = [f"python3-certbot-dns-{tls.dns_plugin}"] if tls.dns_plugin else []
    system_packages(["certbot", *plugin])
    files.directory(name="ACME webroot (served on port 80)", path=WEBROOT, mode="755")
    files.directory(name="flowerbed's certbot files", path=FLOWERBED_DIR, mode="700")
    acme_ca_bundle(tls)
    dns_proof(tls, credentials)
    files.put(
        name="Renewal deploy hook: nginx -t, then reload",
        src=str(DEPLOY_HOOK_SOURCE),
        dest=DEPLOY_HOOK,
        mode="755",
    )
    systemd.service(
        name="certbot.timer renews the certificate",
        service="certbot.timer",
        running=True,
        enabled=True,
    )


def acme_ca_bundle(tls: Tls) -> None:
    """certbot trusts a private ACME directory's CA, at issuance and in certbot.service."""
    if tls.acme_ca_bundle:
        files.put(
            name="CA bundle of the ACME directory",
            src=tls.acme_ca_bundle,
            dest=ACME_CA_BUNDLE,
            mode="644",
        )
        drop_in = files.put(
            name="certbot.service uses that CA bundle",
            src=StringIO(render("certbot-service-flowerbed.conf.j2", ca_bundle=ACME_CA_BUNDLE)),
            dest=CERTBOT_DROP_IN,
            mode="644",
        )
    else:
        files.file(name="No ACME CA bundle", path=ACME_CA_BUNDLE, present=False)
        drop_in = files.file(
            name="certbot.service: system CAs", path=CERTBOT_DROP_IN, present=False
        )
    systemd.daemon_reload(name="Reload systemd (certbot drop-in changed)", _if=drop_in.did_change)


def dns_proof(tls: Tls, credentials: Secret | None) -> None:
    """The DNS-01 hook script or the plugin's credentials (root-only), when DNS-01 is used."""
    if tls.dns_hook:
        files.put(name="DNS-01 hook script", src=tls.dns_hook, dest=DNS_HOOK, mode="700")
    else:
        files.file(name="No DNS-01 hook script", path=DNS_HOOK, present=False)
    if credentials:
        secret_file(name="DNS plugin credentials", path=DNS_CREDENTIALS, content=credentials)
    else:
        files.file(name="No DNS plugin credentials", path=DNS_CREDENTIALS, present=False)


@deploy("TLS certificate")
def tls_certificate(request: CertificateRequest) -> OperationMeta:
    return certificate(
        name="TLS certificate (certbot only when it does not match)",
        request=request,
    )
