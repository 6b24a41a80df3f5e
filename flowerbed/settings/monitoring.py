"""Monitoring (flower_monitoring_*): a host of the inventory that scrapes the dashboards with
Prometheus, probes their certificates and mails alerts through Alertmanager (the deploy:
flowerbed/monitoring.py).

Off by default. A dashboard names the host that watches it in flower_monitoring_host (set it for
every host, e.g. in group data: the monitoring host names itself); that host runs the monitoring
part, and its address joins each dashboard's flower_monitoring_sources (`join_monitoring_source`,
called by the preflight for every host) so nginx serves it /metrics without a login and the
firewall lets it in. Nothing else changes for the dashboards.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..alert_rules import check_value
from ..resources import DEFAULTS
from ..validation import SettingsError
from .checks import Check, boolean, env_name, expect, setting, string_list, text, url
from .verify import pem_file

if TYPE_CHECKING:
    from . import Settings

MONITORING = "flower_monitoring_"
DURATION = r"(\d+(ms|s|m|h|d|w|y))+"
SMARTHOST = r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):\d{1,5}|"
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


def duration(example: str) -> Check:
    return text(DURATION, f"a Prometheus duration such as {example}")


def rule_thresholds() -> Check:
    """{threshold: value} over flowerbed's rule defaults (flowerbed/alert_rules.py)."""

    def check(key: str, value: Any) -> tuple[tuple[str, str], ...]:
        expect(key, value, dict, 'a dict of rule thresholds, e.g. {"workers_missing_for": "10m"}')
        checked = []
        for threshold, setting_ in value.items():
            try:
                checked.append((threshold, check_value(str(threshold), str(setting_))))
            except ValueError as error:
                raise SettingsError(
                    key, str(error), "see `monitoring/render_rules.py --list`"
                ) from None
        return tuple(checked)

    return check


def ip_address(optional: bool = True) -> Check:
    hint = "an IPv4 or IPv6 address ('' = the host's ssh_hostname, if that is one)"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if not value and optional:
            return ""
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise SettingsError(key, f"{value!r} is not an IP address", f"use {hint}") from None

    return check


@dataclass(frozen=True)
class Monitoring:
    """The monitoring part: which host watches a dashboard, and (on that host) how it alerts."""

    host: str = setting(
        text(r"[A-Za-z0-9_.@:-]*", "a host's name in the inventory ('' = none)"),
        "the inventory name of the host that monitors this one ('' = no monitoring, the default)",
    )
    only: bool = setting(boolean(), "True: this host runs no dashboard of its own")
    address: str = setting(
        ip_address(),
        "the monitoring host's address as the dashboards see its scrapes "
        "('' = its ssh_hostname, which must then be an IP address)",
    )
    scrape_interval: str = setting(duration("30s"), "how often Prometheus scrapes and probes")
    evaluation_interval: str = setting(duration("30s"), "how often Prometheus evaluates rules")
    retention: str = setting(duration("15d"), "how long Prometheus keeps its samples")
    rules: tuple[tuple[str, str], ...] = setting(
        rule_thresholds(), "the alert rules' thresholds (monitoring/render_rules.py --list)"
    )
    ca_bundle: str = setting(
        pem_file(), "the CA the dashboards' certificates chain to ('' = the system's)"
    )
    smtp_smarthost: str = setting(
        text(SMARTHOST, "host:port, e.g. smtp.example.com:587"),
        "the SMTP server Alertmanager sends through, with STARTTLS ('' = no e-mail)",
    )
    smtp_from: str = setting(text(f"{EMAIL}|", "an e-mail address"), "the alerts' sender")
    smtp_user: str = setting(text(r"[^\s:]*", "a login name"), "the SMTP login's user")
    smtp_password_env: str = setting(
        env_name(optional=True), "the variable in .env that holds the SMTP login's password"
    )
    smtp_ca_bundle: str = setting(
        pem_file(), "the CA the SMTP server's certificate chains to ('' = the system's)"
    )
    mail_to: tuple[str, ...] = setting(
        string_list(text(EMAIL, "an e-mail address")), "who gets the alerts' mails"
    )
    webhook_url: str = setting(
        url(("https", "http")), "a webhook receiver too, e.g. a chat bridge ('' = none)"
    )
    group_wait: str = setting(
        duration("30s"), "wait for a group's other alerts before its first mail"
    )
    group_interval: str = setting(duration("5m"), "wait before mailing a group's new alerts")
    repeat_interval: str = setting(duration("4h"), "mail a still-firing alert again after this")

    prefix = MONITORING


def check_monitoring(s: Settings) -> Iterator[SettingsError]:
    """A receiver is complete: e-mail needs a server, a sender and recipients, and a login is a
    user with its password's variable."""
    m = s.monitoring
    mail = {"smtp_smarthost": m.smtp_smarthost, "smtp_from": m.smtp_from, "mail_to": m.mail_to}
    if any(mail.values()) and not all(mail.values()):
        missing = [MONITORING + key for key, value in mail.items() if not value]
        yield SettingsError(
            missing[0],
            "e-mail alerts need an SMTP server, a sender and recipients",
            f"set {', '.join(missing)} too, or none of the three",
        )
    if bool(m.smtp_user) != bool(m.smtp_password_env):
        yield SettingsError(
            MONITORING + ("smtp_password_env" if m.smtp_user else "smtp_user"),
            "an SMTP login is a user and the variable holding its password",
            f"set both {MONITORING}smtp_user and {MONITORING}smtp_password_env, or neither",
        )


# --- the monitoring host's address joins each dashboard's flower_monitoring_sources ----------


def monitoring_address(name: str, data: Mapping[str, Any]) -> str:
    """The address the monitoring host `name` (its data: `data`) scrapes from."""
    address = data.get(MONITORING + "address") or data.get("ssh_hostname") or name
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise SettingsError(
            MONITORING + "host",
            f"the monitoring host {name}'s address is unknown: its ssh_hostname {address!r} is "
            "not an IP address",
            f"set {MONITORING}address for {name} (the address its scrapes come from)",
        ) from None


def join_monitoring_source(
    data: Mapping[str, Any], lookup: Callable[[str], Mapping[str, Any] | None]
) -> dict[str, Any]:
    """A host's data with the address of the monitoring host it names (flower_monitoring_host)
    in flower_monitoring_sources, unless a network there holds it already. `lookup(name)`: that
    host's data in the inventory, or None. Raises SettingsError."""
    name = data.get(MONITORING + "host", DEFAULTS.get(MONITORING + "host", ""))
    if not isinstance(name, str) or not name:
        return dict(data)
    watcher = lookup(name)
    if watcher is None:
        raise SettingsError(
            MONITORING + "host",
            f"{name!r} is not a host of the inventory",
            "name the monitoring host as the inventory names it, or set '' (no monitoring)",
        )
    address = ipaddress.ip_address(monitoring_address(name, watcher))
    sources = list(data.get("flower_monitoring_sources", DEFAULTS["flower_monitoring_sources"]))
    for source in sources:
        try:
            if address in ipaddress.ip_network(str(source).strip(), strict=False):
                return dict(data)
        except ValueError:
            continue  # the sources' own check reports it
    bits = 32 if address.version == 4 else 128
    return {**data, "flower_monitoring_sources": [*sources, f"{address}/{bits}"]}
