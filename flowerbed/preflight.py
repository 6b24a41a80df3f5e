"""Validate every targeted host's settings and secrets before any host is changed.

pyinfra runs deploy.py once per host (prepare stage, before execution). The first host to get
here checks them all, so one bad value anywhere stops the whole run with a clear message and
no operation runs anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyinfra.api import Host, Inventory
from pyinfra.api.exceptions import PyinfraError

from .edge import EdgeInputs, edge_inputs
from .secrets import FlowerSecrets, load_flower_secrets, load_operator_env
from .settings import Settings, SettingsError, load_settings


class InvalidDeploy(PyinfraError):
    """Shown by pyinfra's CLI as a one-line error, without a traceback."""


@dataclass(frozen=True)
class Checked:
    settings: Settings
    secrets: FlowerSecrets
    edge: EdgeInputs


_checked: dict[str, Checked] = {}


def check_host(host: Host) -> Checked:
    try:
        settings = load_settings(host.data.dict())
        return Checked(
            settings,
            load_flower_secrets(settings.flower, os.environ),
            edge_inputs(settings, host.name, os.environ),
        )
    except SettingsError as error:
        raise InvalidDeploy(f"host {host.name}: {error}") from error


def checked(host: Host, inventory: Inventory) -> Checked:
    """This host's settings and secrets, once every targeted host passed the checks."""
    if not _checked:
        load_operator_env()
        results = {h.name: check_host(h) for h in inventory.get_active_hosts()}
        _checked.update(results)
    return _checked[host.name]
