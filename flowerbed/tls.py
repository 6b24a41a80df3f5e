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

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import systemd

from . import facts
from .hostfiles import Absent, RootDirectory, RootFile, changed, root_files
from .inputs.secrets import Secret
from .render import render
from .resources import HOST_SCRIPTS, local_path
from .secrets import checked_secret_file
from .settings import Tls
from .shell import command
from .units import unit_running

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
    """flowerbed's certificate lineage (names, expiry, serial, server, authenticator) or None.

    The certificate (public) is read here rather than by `openssl x509` on the host, whose
    start alone costs the host more CPU than every other check of a run together."""

    def command(self) -> StringCommand:
        cert = f"{LIVE_DIR}/cert.pem"
        return StringCommand(
            command("test", "-f", cert), "||", "exit 0;", command("cat", cert), ";",
            command("grep", "-E", "^(server|authenticator) = ", RENEWAL_CONF), "||", "true",
        )  # fmt: skip

    def process(self, output: list[str]) -> Lineage | None:
        pem = [line for line in output if line.startswith("-----") or PEM_BODY.fullmatch(line)]
        rest = [line for line in output if line not in pem]
        return parse_lineage([*certificate_lines("\n".join(pem)), *rest] if pem else output)


PEM_BODY = re.compile(r"[A-Za-z0-9+/=]{1,76}")


def certificate_lines(pem: str) -> list[str]:
    """What `openssl x509 -noout -serial -enddate -ext subjectAltName` prints about it."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return [
        f"serial={cert.serial_number:X}",
        f"notAfter={cert.not_valid_after_utc:%b %d %H:%M:%S %Y} GMT",
        ", ".join(f"DNS:{name}" for name in names),
    ]


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


@operation()
def certificate(request: CertificateRequest):
    """The lineage holds a valid certificate for exactly the requested names; else certbot."""
    lineage = facts.ask(TlsLineage)
    reason = request.reason_to_issue(lineage, datetime.now(UTC))
    if reason is None:
        host.noop(f"certificate for {', '.join(request.names)} is valid")
        return
    host.log(f"Will request a certificate from {request.tls.acme_directory} ({reason})")
    yield command(*certbot_argv(request))


# --- deploys --------------------------------------------------------------------------------


@deploy("certbot")
def certbot(tls: Tls, credentials: Secret | None) -> None:
    """certbot (installed: certbot_packages) with what it needs to reach the ACME directory,
    prove the names and renew."""
    root_files(
        "certbot's webroot, renewal hook, ACME CA bundle and DNS-01 files",
        [
            RootDirectory(WEBROOT),  # served on port 80
            RootDirectory(FLOWERBED_DIR, mode="700"),
            RootFile(DEPLOY_HOOK, DEPLOY_HOOK_SOURCE, mode="755"),  # nginx -t, then reload
            *acme_ca_bundle(tls),
            RootFile(DNS_HOOK, local_path(tls.dns_hook), mode="700")
            if tls.dns_hook
            else Absent(DNS_HOOK),
            *([] if credentials else [Absent(DNS_CREDENTIALS)]),
        ],
    )
    if credentials:
        checked_secret_file("DNS plugin credentials", DNS_CREDENTIALS, credentials)
    systemd.daemon_reload(
        name="Reload systemd (certbot drop-in changed)", _if=changed(CERTBOT_DROP_IN)
    )
    unit_running("certbot.timer renews the certificate", "certbot.timer")


def certbot_packages(tls: Tls) -> list[str]:
    return ["certbot", *([f"python3-certbot-dns-{tls.dns_plugin}"] if tls.dns_plugin else [])]


def acme_ca_bundle(tls: Tls) -> list:
    """certbot trusts a private ACME directory's CA, at issuance and in certbot.service."""
    if not tls.acme_ca_bundle:
        return [Absent(ACME_CA_BUNDLE), Absent(CERTBOT_DROP_IN)]
    drop_in = render("certbot-service-flowerbed.conf.j2", ca_bundle=ACME_CA_BUNDLE)
    return [
        RootFile(ACME_CA_BUNDLE, local_path(tls.acme_ca_bundle)),
        RootFile(CERTBOT_DROP_IN, drop_in),
    ]


@deploy("TLS certificate")
def tls_certificate(request: CertificateRequest) -> OperationMeta:
    facts.expect(TlsLineage)
    return certificate(
        name="TLS certificate (certbot only when it does not match)",
        request=request,
    )
