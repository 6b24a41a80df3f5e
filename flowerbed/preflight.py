"""Validate every targeted host's settings and secrets before any host is changed.

pyinfra runs deploy.py once per host (prepare stage, before execution). The first host to get
here checks them all and reports every problem of every host at once (a value that is wrong
for several hosts once, naming them all), so no operation runs anywhere until all are fixed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyinfra.api import DeployError, Host, Inventory

from .inputs.edge import EdgeInputs, edge_inputs
from .inputs.instances import InstanceInputs, instance_inputs
from .inputs.secrets import FlowerSecrets, load_flower_secrets, load_operator_env
from .pyinfra_internals import send_without_delay
from .resources import DEFAULTS
from .settings import Settings, SettingsError, validate, with_defaults
from .settings.monitoring import join_monitoring_source
from .validation import shown


class InvalidDeploy(DeployError):
    """Shown by pyinfra's CLI as an error without a traceback: every problem, one a line."""


@dataclass(frozen=True)
class Checked:
    settings: Settings
    secrets: FlowerSecrets
    edge: EdgeInputs
    instances: tuple[InstanceInputs, ...] = ()


_checked: dict[str, Checked] = {}


def host_problems(
    host: Host, environ: Mapping[str, str] = os.environ
) -> tuple[Checked | None, list[SettingsError]]:
    """One host's data, then the secrets it names: all problems, the checked inputs if none."""
    data, joined = host_data(host)
    settings, problems = validate(data, explicit_keys(host))
    problems.errors.extend(joined)
    data_errors = len(problems.errors)
    # a key that failed: its default stands in, so the checks that need it still run
    dependent, stand_ins = with_defaults(settings) if data_errors else (settings, [])
    inputs = {}
    with problems.check(incomplete=data_errors > 0):
        site = dependent.site.fqdn or host.name  # each host's own cookie secret
        inputs["secrets"] = load_flower_secrets(dependent.flower, environ, site)
    with problems.check(incomplete=data_errors > 0):
        inputs["edge"] = edge_inputs(dependent, host.name, environ)
    with problems.check(incomplete=data_errors > 0):
        inputs["instances"] = instance_inputs(dependent, environ)
    refused = {_base(error.key) for error in problems.errors[:data_errors]}
    problems.errors[data_errors:] = [  # a refused key is reported once, by its own check
        error for error in problems.errors[data_errors:] if _base(error.key) not in refused
    ]
    for error in problems.errors[data_errors:]:
        error.source = "the variable's value, from the environment or .env" + (
            f"; checked as if {', '.join(stand_ins)} "
            + ("held their defaults" if len(stand_ins) > 1 else "held its default")
            if stand_ins
            else ""
        )
    if problems.errors:
        return None, problems.errors
    return Checked(settings, **inputs), []


def host_data(host: Host) -> tuple[dict, list[SettingsError]]:
    """The host's data, its monitoring host's address joined to flower_monitoring_sources
    (flowerbed/settings/monitoring.py); or its data as it is, and why that failed."""
    inventory = getattr(host, "inventory", None)

    def lookup(name: str) -> dict | None:
        other = inventory.get_host(name, None) if inventory is not None else None
        return other.data.dict() if other is not None else None

    try:
        return join_monitoring_source(host.data.dict(), lookup), []
    except SettingsError as error:
        return host.data.dict(), [error]


def explicit_keys(host: Host) -> set[str] | None:
    """The keys the operator set for this host: in --data, the inventory or a group's data, or
    changed in group_data/all.py (which otherwise holds flowerbed's defaults)."""
    inventory = getattr(host, "inventory", None)
    if inventory is None:
        return None
    return {
        *inventory.get_override_data(),
        *inventory.get_host_data(host.name),
        *inventory.get_groups_data(host.groups),
        *(k for k, v in inventory.get_data().items() if DEFAULTS.get(k, inventory) != v),
    }


def check_host(host: Host) -> Checked:
    return check_hosts([host])[host.name]


def check_hosts(
    hosts: Iterable[Host], environ: Mapping[str, str] = os.environ
) -> dict[str, Checked]:
    """Every host's Checked, or InvalidDeploy listing every problem of every host."""
    results: dict[str, Checked] = {}
    found: dict[str, list[str]] = {}  # message -> hosts, in the order found
    for host in hosts:
        checked, errors = host_problems(host, environ)
        if checked:
            results[host.name] = checked
        for error in errors:
            source = getattr(error, "source", "") or _source(host, error.key)
            message = f"{error} ({source})" if source else str(error)
            found.setdefault(message, []).append(host.name)
    if found:
        raise InvalidDeploy(report(found))
    return results


def report(found: dict[str, list[str]]) -> str:
    lines = [
        f"{'hosts' if len(hosts) > 1 else 'host'} {', '.join(hosts)}: {message}"
        for message, hosts in found.items()
    ]
    count = f"{len(lines)} problem{'s' if len(lines) > 1 else ''}"
    return f"{count} in the deploy data or secrets; no host was changed.\n" + "\n".join(lines)


def _source(host: Host, key: str) -> str:
    """Where the host's value for `key` comes from, so the operator knows what to edit."""
    inventory = getattr(host, "inventory", None)
    base = _base(key)
    if inventory is None or not base:
        return ""
    if base in inventory.get_override_data():
        return "set by --data"
    if base in inventory.get_host_data(host.name):
        return f"set in the inventory for host {host.name}"
    for group in reversed(list(host.groups)):
        if base in inventory.get_group_data(group):
            return f"set for group {group!r}: group_data/{group}.py or the inventory"
    if base in inventory.get_data() and DEFAULTS.get(base, inventory) != inventory.get_data()[base]:
        return "set in group_data/all.py"
    if base in DEFAULTS:  # never set: blame no file
        return f"not set: flowerbed's default {shown(DEFAULTS[base])}"
    return ""


def _base(key: str) -> str:
    """The data key an error's key is about: flower_admin_sources for flower_admin_sources[0]."""
    return re.match(r"[a-z0-9_]*", key).group()


def checked(host: Host, inventory: Inventory) -> Checked:
    """This host's settings and secrets, once every targeted host passed the checks; the
    host's SSH connection sends without delay from here on (flowerbed/pyinfra_internals.py)."""
    send_without_delay(host)
    if not _checked:
        try:
            load_operator_env()
        except SettingsError as error:
            raise InvalidDeploy(str(error)) from None
        active = inventory.get_active_hosts()
        _checked.update(check_hosts([h for h in inventory if h in active]))  # inventory order
    return _checked[host.name]
