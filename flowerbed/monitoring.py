"""The monitoring part (issue 22): a host of the inventory that watches the dashboards.

Debian's prometheus, prometheus-blackbox-exporter and prometheus-alertmanager, on the host that
the dashboards name in flower_monitoring_host (settings: flowerbed/settings/monitoring.py):

- Prometheus scrapes each such dashboard's /metrics through its nginx (the host's address is in
  the dashboards' flower_monitoring_sources: the preflight joins it), and loads flowerbed's
  rules (flowerbed/alert_rules.py) with flower_monitoring_rules;
- the blackbox exporter probes each dashboard's HTTPS /healthcheck and its certificate;
- Alertmanager mails each condition per host over SMTP with STARTTLS and a login (the password
  from .env, in a root-only file), resolved mails included, and posts to a webhook if set.

Every file that a service reads is uploaded beside its place, checked by the service's own
tool (promtool, amtool, the exporter's --config.check) and only then moved over the one in
use: a bad file never replaces a good one, and the host fails saying why. The services listen
on 127.0.0.1 only and run in a sandbox (systemd drop-ins, templates/monitoring-unit.conf.j2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pyinfra import host, inventory, state
from pyinfra.api import FileUploadCommand, Host, Inventory, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from . import alert_rules, facts
from .hostfiles import (
    Absent,
    PathStates,
    RootDirectory,
    RootFile,
    changed,
    mark_changed,
    root_files,
)
from .inputs.secrets import Secret, read_secret
from .packages import package_sources, system_packages
from .preflight import InvalidDeploy, checked
from .render import render
from .resources import DEFAULTS, local_path
from .secrets import checked_secret_file
from .settings import Monitoring, Settings, SettingsError
from .settings.monitoring import MONITORING
from .shell import command
from .units import unit_running

PACKAGES = ["prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"]
CONFIG_DIR = "/etc/prometheus/flowerbed"
PROMETHEUS_CONFIG = f"{CONFIG_DIR}/prometheus.yml"
RULES_FILE = f"{CONFIG_DIR}/flowerbed.rules.yml"
BLACKBOX_CONFIG = f"{CONFIG_DIR}/blackbox.yml"
ALERTMANAGER_CONFIG = f"{CONFIG_DIR}/alertmanager.yml"
MAIL_TEMPLATE = f"{CONFIG_DIR}/flowerbed.tmpl"
SMTP_PASSWORD_FILE = f"{CONFIG_DIR}/smtp-password"
DASHBOARDS_CA = f"{CONFIG_DIR}/dashboards-ca.pem"
SMTP_CA = f"{CONFIG_DIR}/smtp-ca.pem"
PROMETHEUS_PORT, ALERTMANAGER_PORT, BLACKBOX_PORT = 9090, 9093, 9115
LOOPBACK = "127.0.0.1"
STORAGE = "/var/lib/prometheus"


@dataclass(frozen=True)
class Service:
    unit: str
    exec_start: tuple[str, ...]
    state_directory: str = ""

    @property
    def dropin(self) -> str:
        return f"/etc/systemd/system/{self.unit}.service.d/flowerbed.conf"


def services(m: Monitoring) -> dict[str, Service]:
    """Debian's three units, each started with flowerbed's files and on loopback only."""
    return {
        "prometheus": Service(
            "prometheus",
            (
                "/usr/bin/prometheus",
                f"--config.file={PROMETHEUS_CONFIG}",
                f"--storage.tsdb.path={STORAGE}/metrics2/",
                f"--storage.tsdb.retention.time={m.retention}",
                f"--web.listen-address={LOOPBACK}:{PROMETHEUS_PORT}",
            ),  # fmt: skip
            "prometheus",
        ),
        "alertmanager": Service(
            "prometheus-alertmanager",
            (
                "/usr/bin/prometheus-alertmanager",
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"--storage.path={STORAGE}/alertmanager/",
                f"--web.listen-address={LOOPBACK}:{ALERTMANAGER_PORT}",
                "--cluster.listen-address=",  # no gossip port: a single Alertmanager
            ),  # fmt: skip
            "prometheus",
        ),
        "blackbox": Service(
            "prometheus-blackbox-exporter",
            (
                "/usr/bin/prometheus-blackbox-exporter",
                f"--config.file={BLACKBOX_CONFIG}",
                f"--web.listen-address={LOOPBACK}:{BLACKBOX_PORT}",
            ),  # fmt: skip
        ),
    }


# --- who watches whom -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A dashboard the monitoring host scrapes: its inventory name, site name and base path."""

    name: str
    fqdn: str
    base: str = "/"

    @property
    def url(self) -> str:
        return f"https://{self.fqdn}{self.base}"

    @property
    def probe_url(self) -> str:
        return f"{self.url}healthcheck"


def runs_dashboard(data: dict) -> bool:
    return not data.get(MONITORING + "only", False)


def monitored_by(name: str, inventory: Inventory) -> list[Target]:
    """The dashboards of the inventory that name `name` their monitoring host, in order."""
    targets = []
    for other in inventory:
        data = other.data.dict()
        if data.get(MONITORING + "host") != name or not runs_dashboard(data):
            continue
        prefix = str(data.get("flower_url_prefix") or "").strip("/")
        fqdn = data.get("flower_fqdn") or other.name
        targets.append(Target(other.name, fqdn, f"/{prefix}/" if prefix else "/"))
    return targets


def is_monitoring_host(this: Host, inventory: Inventory) -> bool:
    """Some host of the inventory (this one included) names this one its monitoring host."""
    return any(other.data.get(MONITORING + "host") == this.name for other in inventory)


# --- rendered files ----------------------------------------------------------------------------


def rules_text(m: Monitoring) -> str:
    return alert_rules.render(dict(m.rules))


def prometheus_text(m: Monitoring, targets: list[Target]) -> str:
    thresholds = {**alert_rules.DEFAULTS, **dict(m.rules)}
    return render(
        "monitoring-prometheus.yml.j2",
        m=m,
        targets=targets,
        job=thresholds["job"],
        probe_job=thresholds["probe_job"],
        rules_file=RULES_FILE,
        ca_file=DASHBOARDS_CA if m.ca_bundle else "",
        prometheus_port=PROMETHEUS_PORT,
        alertmanager_port=ALERTMANAGER_PORT,
        blackbox_port=BLACKBOX_PORT,
    )


def blackbox_text(m: Monitoring) -> str:
    return render("monitoring-blackbox.yml.j2", ca_file=DASHBOARDS_CA if m.ca_bundle else "")


def alertmanager_text(m: Monitoring) -> str:
    return render(
        "monitoring-alertmanager.yml.j2",
        m=m,
        password_file=SMTP_PASSWORD_FILE,
        mail_template=MAIL_TEMPLATE,
        smtp_ca_file=SMTP_CA if m.smtp_ca_bundle else "",
    )


def mail_template_text(targets: list[Target], monitoring_host: str) -> str:
    return render("monitoring-mail.tmpl.j2", targets=targets, monitoring_host=monitoring_host)


def dropin_text(service: Service) -> str:
    return render(
        "monitoring-unit.conf.j2",
        unit=service.unit,
        exec_start=" ".join(service.exec_start),
        state_directory=service.state_directory,
    )


def smtp_password(m: Monitoring, environ=os.environ) -> Secret | None:
    """The SMTP login's password from the operator's environment or .env (never shown)."""
    if not m.smtp_user:
        return None
    return read_secret(MONITORING + "smtp_password_env", m.smtp_password_env, environ)


# --- a file checked by its service's own tool before it replaces the one in use ---------------

Checker = tuple[str, ...]  # argv; "{}" in an argument stands for the staged file
CHECKERS: dict[str, Checker] = {
    PROMETHEUS_CONFIG: ("promtool", "check", "config", "--syntax-only", "{}"),
    RULES_FILE: ("promtool", "check", "rules", "{}"),
    BLACKBOX_CONFIG: ("prometheus-blackbox-exporter", "--config.check", "--config.file={}"),
    ALERTMANAGER_CONFIG: ("amtool", "check-config", "{}"),
}


def checked_file(name: str, path: str, text: str, **arguments) -> OperationMeta:
    """`path` holds `text`, checked first by its tool (CHECKERS)."""
    facts.expect(PathStates, paths=(path,))
    return checked_upload(name=name, path=path, text=text, checker=CHECKERS[path], **arguments)


@operation()
def checked_upload(path: str, text: str, checker: Checker):
    """
    Ensure `path` holds `text` (root:root 0644), uploaded to `<path>.flowerbed-new` first and
    checked there with `checker`: a file the tool refuses is removed and the host fails, the
    one in use untouched.
    """
    data = text.encode()
    current = facts.ask(PathStates, paths=(path,)).get(path)
    if current and current.sha256 == hashlib.sha256(data).hexdigest():
        host.noop(f"{path} is up to date")
        return
    if state.is_executing:
        mark_changed(path)
    staging = f"{path}.flowerbed-new"
    yield FileUploadCommand(
        BytesIO(data), staging, remote_temp_filename=host.get_temp_filename(staging)
    )
    check = command(*(arg.replace("{}", staging) for arg in checker))
    refused = f"flowerbed: {checker[0]} refused the new {path}; the one in use is unchanged"
    yield StringCommand(
        "if", check, ">&2;", "then", ":;", "else", command("rm", "-f", staging), ";",
        command("echo", refused), ">&2;", "exit", "1;", "fi",
    )  # fmt: skip
    yield command("chown", "root:root", staging)
    yield command("chmod", "644", staging)
    yield command("mv", "-f", staging, path)


def ca_entry(local: str, remote: str) -> RootFile | Absent:
    return RootFile(remote, local_path(local)) if local else Absent(remote)


# --- deploys -----------------------------------------------------------------------------------


@deploy("Monitoring: sandboxed units")
def monitoring_hardening(m: Monitoring) -> OperationMeta:
    """Drop-ins for Debian's units, written before the packages start them: flowerbed's files,
    loopback only, the sandbox; daemon-reload when one changed."""
    dropins = [RootFile(s.dropin, dropin_text(s)) for s in services(m).values()]
    written = root_files(
        "Drop-ins: flowerbed's configuration, loopback only, a sandbox",
        [*(RootDirectory(str(Path(d.path).parent)) for d in dropins), *dropins],
    )
    server.shell(
        name="Reload systemd (a monitoring drop-in changed)",
        commands=["systemctl daemon-reload"],
        _if=changed(*(d.path for d in dropins)),
    )
    return written


@deploy("Monitoring: packages")
def monitoring_packages(settings: Settings) -> None:
    """Debian's prometheus, alertmanager and blackbox exporter (apt through the egress)."""
    if settings.monitoring.only:  # a dashboard host has its package sources already
        package_sources(settings.egress)
    system_packages(PACKAGES)


@deploy("Monitoring: Prometheus")
def prometheus_config(m: Monitoring, targets: list[Target]) -> OperationMeta:
    """The dashboards' CA, then prometheus.yml checked with `promtool check config`."""
    ca = root_files(
        "The dashboards' CA for Prometheus and the blackbox exporter",
        [RootDirectory(CONFIG_DIR), ca_entry(m.ca_bundle, DASHBOARDS_CA)],
    )
    config = checked_file(
        "prometheus.yml: every dashboard's /metrics and HTTPS probe (promtool check config)",
        PROMETHEUS_CONFIG,
        prometheus_text(m, targets),
    )
    return ca, config


@deploy("Monitoring: alert rules")
def monitoring_rules(m: Monitoring) -> OperationMeta:
    """flowerbed's rules with flower_monitoring_rules, checked with `promtool check rules`."""
    return checked_file("flowerbed's alert rules (promtool check rules)", RULES_FILE, rules_text(m))


@deploy("Monitoring: blackbox exporter")
def monitoring_blackbox(m: Monitoring) -> OperationMeta:
    """The HTTPS probe's module, checked with the exporter's --config.check."""
    text = blackbox_text(m)
    return checked_file("The blackbox exporter's HTTPS probe", BLACKBOX_CONFIG, text)


@deploy("Monitoring: Alertmanager")
def monitoring_alertmanager(
    m: Monitoring, targets: list[Target], password: Secret | None
) -> tuple[OperationMeta, ...]:
    """Mails (and a webhook) per condition and host; the SMTP password in a file only root and
    Alertmanager's group read; alertmanager.yml checked with `amtool check-config`."""
    files = root_files(
        "Alertmanager's mail template and the SMTP server's CA",
        [
            RootFile(MAIL_TEMPLATE, mail_template_text(targets, host.name)),
            ca_entry(m.smtp_ca_bundle, SMTP_CA),
        ],
    )
    secret = ()
    if password:
        secret = (
            checked_secret_file(
                name="The SMTP login's password (content not shown)",
                path=SMTP_PASSWORD_FILE,
                content=password,
                group="prometheus",
                mode=640,
            ),
        )
    else:
        root_files("No SMTP password file (no login)", [Absent(SMTP_PASSWORD_FILE)])
    config = checked_file(
        "alertmanager.yml: e-mail over STARTTLS with a login, resolved mails (amtool)",
        ALERTMANAGER_CONFIG,
        alertmanager_text(m),
    )
    return (files, config, *secret)


def service_running(service: Service, restart_if: Callable[[], bool], *inputs) -> None:
    """Restarted for a new drop-in (after a failed start, e.g. the packages' own start without
    flowerbed's files yet), reloaded (SIGHUP) for new files; enabled and running."""
    unit = service.unit
    server.shell(
        name=f"Restart {unit} (its drop-in changed)",
        commands=[f"systemctl reset-failed {unit} 2>/dev/null; systemctl restart {unit}"],
        _if=restart_if,
    )
    server.shell(
        name=f"Reload {unit} (its configuration changed)",
        commands=[f"systemctl try-reload-or-restart {unit}"],
        _if=lambda: any_changed(*inputs)() and not restart_if(),
    )
    unit_running(f"{unit} is enabled and running", unit, reset_failed=True)


@deploy("Monitoring")
def monitoring(settings: Settings, targets: list[Target], password: Secret | None) -> None:
    """Every concern above in order, then each service (re)started or reloaded on change."""
    m = settings.monitoring
    monitoring_hardening(m)
    monitoring_packages(settings)
    ca, prometheus = prometheus_config(m, targets)
    rules = monitoring_rules(m)
    blackbox = monitoring_blackbox(m)
    alertmanager = monitoring_alertmanager(m, targets, password)
    units = services(m)
    for key, inputs in (
        ("blackbox", (blackbox, ca)),
        ("prometheus", (prometheus, rules, ca)),
        ("alertmanager", alertmanager),
    ):
        service_running(units[key], changed(units[key].dropin), *inputs)


def monitoring_inputs(
    settings: Settings, inventory: Inventory
) -> tuple[list[Target], Secret | None]:
    """The dashboards to scrape and the SMTP password, or SettingsError."""
    m = settings.monitoring
    if not (m.smtp_smarthost or m.webhook_url):
        raise SettingsError(
            MONITORING + "smtp_smarthost",
            f"{host.name} is a monitoring host with no receiver: its alerts would reach nobody",
            f"set {MONITORING}smtp_smarthost, _smtp_from and _mail_to, or {MONITORING}webhook_url",
        )
    return monitored_by(host.name, inventory), smtp_password(m)


@deploy("flowerbed: monitoring", data_defaults=DEFAULTS)
def deploy_monitoring() -> None:
    """Prometheus, the blackbox exporter and Alertmanager on this host, for every dashboard
    naming it in flower_monitoring_host (deploy.py runs it on such a host).

    + flower_monitoring_host: on the dashboards (and this host, if it runs one): this host
    + flower_monitoring_only: this host runs no dashboard
    + flower_monitoring_address: the address its scrapes come from ('' = its ssh_hostname)
    + flower_monitoring_scrape_interval, flower_monitoring_evaluation_interval,
      flower_monitoring_retention, flower_monitoring_rules, flower_monitoring_ca_bundle: Prometheus
    + flower_monitoring_smtp_smarthost, flower_monitoring_smtp_from, flower_monitoring_smtp_user,
      flower_monitoring_smtp_password_env, flower_monitoring_smtp_ca_bundle,
      flower_monitoring_mail_to, flower_monitoring_webhook_url, flower_monitoring_group_wait,
      flower_monitoring_group_interval, flower_monitoring_repeat_interval: Alertmanager

    + Example:

    .. code:: python

        from pyinfra import host, inventory
        from flowerbed.monitoring import deploy_monitoring, is_monitoring_host

        if is_monitoring_host(host, inventory):
            deploy_monitoring()
    """
    checked_host = checked(host, inventory)
    try:
        targets, password = monitoring_inputs(checked_host.settings, inventory)
    except SettingsError as error:
        raise InvalidDeploy(f"host {host.name}: {error}") from error
    monitoring(checked_host.settings, targets, password)
