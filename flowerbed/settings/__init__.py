"""The one validated data model every flowerbed module reads.

`load_settings(host.data.dict())` turns a host's data into frozen dataclasses, or raises
`SettingsError` naming the key, the problem and the fix. Every key has its default in
flowerbed/defaults.py (the repository's group_data/all.py), shipped with the package: data
only overrides them. Every key starts with `flower_`; a key with one of flowerbed's old names
(before the prefix) is an error naming its new name, unless it is the deploy's own key (see
renamed_keys).

A section is a frozen dataclass whose fields are data keys (`prefix + field name`); each field's
metadata holds the check that validates and normalises its value. Each concern's sections sit
in its own module, with the checks and rules only it uses:

  checks     the checks every section shares (types, ranges, names, paths, URLs, lists)
  egress     Egress: how hosts reach package registries
  flower     Flower (install, unit, secrets) and FlowerOptions (Flower's own options)
  firewall   Firewall: who may open which port
  edge       Site, Nginx, Tls, Auth: the dashboard's names, the proxy, certificates, logins
  oauth      OAuthProvider: what Flower's OAuth login handlers read
  verify     Verify: what the operator's runs (verify.py, rotate.py) expect of a host
  remove     Remove: what the removal run (remove.py) keeps
  rollout    Rollout: the batches and canary of a rollout (python -m flowerbed.rollout)
  monitoring Monitoring: the host that scrapes the dashboards and mails alerts
  instances  Instances: more Flowers on the host (flower_instances)
  takeover   Takeover: a hand-made Flower flowerbed takes over (its unit and state)

and this module puts them together: SECTIONS, the rules between keys (RULES), and loading.
A deploy part takes the sections it reads, not the whole Settings; where it reads several, a
small bundle of them: FlowerRun (one Flower's install, options and login mode) and
DashboardProxy (what nginx's dashboard templates read).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from ..resources import DEFAULTS
from ..validation import Problems, SettingsError, reject_control_characters
from .checks import Check
from .edge import (
    LETS_ENCRYPT,
    Auth,
    Nginx,
    Site,
    Tls,
    check_edge,
    check_nginx_snippets,
    dns_name,
    duplicate_names,
)
from .egress import Egress, check_egress
from .firewall import Firewall, PortOpening, check_firewall
from .flower import BROKER_SCHEMES, MANAGED_KEYS, Flower, FlowerOptions, check_flower, local_app_dir
from .instances import Instance, Instances, check_instances
from .monitoring import Monitoring, check_monitoring
from .oauth import GITHUB, GITLAB, OKTA, OAuthProvider, check_oauth_provider
from .remove import Remove
from .rollout import Rollout, rollout_knobs
from .takeover import Takeover, check_takeover
from .verify import Verify, operator_checks

__all__ = [  # what the operation modules, the operator's runs and the tests import from here
    "BROKER_SCHEMES", "GITHUB", "GITLAB", "LETS_ENCRYPT", "OKTA", "OWNED_PREFIXES", "RENAMED",
    "Auth", "DashboardProxy", "Egress", "Firewall", "Flower", "FlowerOptions", "FlowerRun",
    "Instance", "Instances", "Nginx", "OAuthProvider", "PortOpening", "Remove", "Rollout",
    "Settings", "SettingsError", "Site", "Takeover", "Tls", "Verify",
    "dns_name", "duplicate_names", "known_keys",
    "load_settings", "local_app_dir", "operator_checks", "rollout_knobs", "validate",
    "with_defaults",
]  # fmt: skip


# Data keys under these prefixes belong to flowerbed: an unknown one is an error. Every other
# key (a consumer's own nginx_*, tls_*, fqdn ...) is left alone.
OWNED_PREFIXES = ("flower_", "flowerbed_")


# flowerbed's keys before they all moved under flower_ (issue 9): old name -> new name.
RENAMED = {
    old: f"flower_{old}"
    for old in (
        "egress_proxy", "egress_ca_certificates", "pip_index_url", "allowed_sources",
        "admin_sources", "acme_sources", "firewall_ssh_port", "firewall_rollback_seconds",
        "firewall_allow_ssh_from_anywhere", "firewall_allow_metrics_from_anywhere", "fqdn",
        "server_aliases", "monitoring_sources", "nginx_hsts_max_age",
        "nginx_hsts_include_subdomains", "nginx_proxy_read_timeout", "nginx_server_snippets",
        "nginx_login_failures_per_minute", "nginx_login_failures_burst",
        "nginx_requests_per_second", "nginx_requests_burst", "tls_acme_directory",
        "tls_acme_ca_bundle", "tls_email", "tls_challenge", "tls_dns_plugin",
        "tls_dns_credentials_env", "tls_dns_hook", "auth_mode", "auth_users_env",
        "verify_ca_bundle", "verify_summary_file", "verify_cert_min_days", "verify_exposure_max",
        "verify_min_workers_online", "verify_max_workers_offline", "verify_max_failed_tasks",
        "verify_max_task_seconds", "verify_max_queue_length", "verify_expected_tasks",
    )
}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """A host's data, validated: one attribute per section."""

    egress: Egress
    options: FlowerOptions
    flower: Flower
    firewall: Firewall
    site: Site
    nginx: Nginx
    tls: Tls
    auth: Auth
    oauth_provider: OAuthProvider
    verify: Verify
    remove: Remove
    rollout: Rollout
    monitoring: Monitoring
    instances: Instances
    takeover: Takeover

    @property
    def flower_run(self) -> FlowerRun:
        return FlowerRun(self.flower, self.options, self.auth)

    @property
    def dashboard_proxy(self) -> DashboardProxy:
        return DashboardProxy(self.nginx, self.firewall, self.flower)


@dataclass(frozen=True)
class FlowerRun:
    """One Flower as flowerbed runs it, the main one or an instance (flowerbed.instances): its
    install and unit, its own options, and where the logins are (which environment files its
    unit and health check read)."""

    flower: Flower
    options: FlowerOptions
    auth: Auth


@dataclass(frozen=True)
class DashboardProxy:
    """What nginx's dashboard templates read: nginx's own settings, who may reach which
    location (the firewall's sources), and Flower's proxy login that nginx includes."""

    nginx: Nginx
    firewall: Firewall
    flower: Flower


# attribute -> section, in the order Settings lists them
SECTIONS: dict[str, type] = get_type_hints(Settings)
RULES = (
    check_egress, check_flower, check_firewall, check_edge, check_nginx_snippets,
    check_oauth_provider,
)  # fmt: skip
RULES += (check_monitoring, check_instances, check_takeover)


def known_keys() -> dict[str, Check]:
    return {
        section.prefix + f.name: f.metadata["check"]
        for section in SECTIONS.values()
        for f in fields(section)
    }


def load_settings(data: Mapping[str, Any]) -> Settings:
    """Validate one host's data (host.data.dict()) over the defaults into Settings, or raise
    SettingsErrors (a SettingsError) listing every problem."""
    settings, problems = validate(data)
    problems.raise_any()
    return settings


def validate(
    data: Mapping[str, Any], explicit: Collection[str] | None = None
) -> tuple[Settings, Problems]:
    """Every key's check and every rule between keys, all run: the problems found, and the
    settings (where a key failed, its section lacks that attribute). `data` overrides DEFAULTS;
    `explicit`: the keys the operator set (see renamed_keys)."""
    problems = Problems()
    checks = known_keys()
    problems.errors.extend(unknown_keys(data, checks))
    problems.errors.extend(renamed_keys(data, explicit))
    data = {**DEFAULTS, **data}
    settings = Settings(
        **{attr: _section(section, data, checks, problems) for attr, section in SECTIONS.items()}
    )
    incomplete = bool(problems.errors)
    for rule in RULES:
        with problems.check(incomplete):
            for error in rule(settings):
                problems.errors.append(error)
    return settings, problems


def _section(section: type, data: Mapping[str, Any], checks: dict[str, Check], problems: Problems):
    values = {}
    for f in fields(section):
        with problems.check():
            values[f.name] = _checked(data, section.prefix + f.name, checks)
    return _built(section, values)


def _built(section: type, values: dict[str, Any]):
    if len(values) == len(fields(section)):
        return section(**values)
    partial = object.__new__(section)  # rules that need a failed key are skipped
    for attribute, value in values.items():
        object.__setattr__(partial, attribute, value)
    return partial


def with_defaults(settings: Settings) -> tuple[Settings, list[str]]:
    """`settings` (from validate) where each key that failed its check holds its default, if
    that is valid: for the checks that depend on it (the secrets a key names, the logins of an
    auth mode), so that one run still reports their problems. Rules between keys never run on
    these. Also returns the keys whose default stands in."""
    checks, stand_ins, sections = known_keys(), [], {}
    for attribute, section in SECTIONS.items():
        current, values = getattr(settings, attribute), {}
        for f in fields(section):
            key = section.prefix + f.name
            if hasattr(current, f.name):
                values[f.name] = getattr(current, f.name)
            elif key in DEFAULTS:
                try:
                    values[f.name] = checks[key](key, DEFAULTS[key])
                    stand_ins.append(key)
                except SettingsError:
                    pass  # a default the operator must replace (flower_admin_sources): skipped
        sections[attribute] = _built(section, values)
    return Settings(**sections), stand_ins


def _checked(data: Mapping[str, Any], key: str, checks: dict[str, Check]) -> Any:
    if key not in data:
        raise SettingsError(key, "missing", "define it with its default in group_data/all.py")
    reject_control_characters(key, data[key])
    return checks[key](key, data[key])


def renamed_keys(
    data: Mapping[str, Any], explicit: Collection[str] | None = None
) -> Iterator[SettingsError]:
    """An old name (`fqdn`) is an error naming its new one (`flower_fqdn`) unless the new name
    is set explicitly too: then the old one is the deploy's own key, never read by flowerbed.
    `explicit`: the keys the operator set; if unknown, those whose value is not the default."""
    if explicit is None:
        explicit = {key for key, value in data.items() if DEFAULTS.get(key, data) != value}
    for key in data:
        new = RENAMED.get(key)
        if new and new not in explicit:
            yield SettingsError(
                key,
                f"flowerbed's keys all start with flower_ now: this one is {new}",
                f"rename {key} to {new}; if {key} is your own deploy's key, not flowerbed's, "
                f"also set {new} (its default: {DEFAULTS[new]!r})",
            )


def unknown_keys(data: Mapping[str, Any], checks: Mapping[str, Check]) -> Iterator[SettingsError]:
    for key in data:
        if key in checks or key in RENAMED:
            continue
        if key in MANAGED_KEYS:
            yield SettingsError(key, f"not a setting: {MANAGED_KEYS[key]}", f"remove {key}")
            continue
        close = difflib.get_close_matches(key, checks, n=1, cutoff=0.8)
        if key.startswith(OWNED_PREFIXES) or close:
            hint = f"did you mean {close[0]!r}?" if close else "see group_data/all.py for every key"
            yield SettingsError(key, "unknown key", hint)
