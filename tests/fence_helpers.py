"""A pyinfra whose functions flowerbed replaces or relies on have changed (same behaviour, new
source): what flowerbed/pyinfra_internals.py must notice, for the fence's tests; and the
repository's deploy.py run the way pyinfra's CLI runs it, up to its checks."""

from __future__ import annotations

import pyinfra
import pyinfra.api.arguments
import pyinfra.api.util
import pyinfra.operations.util.files
import pytest
from pyinfra.api import Config, Inventory
from pyinfra.api.state import State
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state
from pyinfra_cli.exceptions import UnexpectedExternalError
from pyinfra_cli.util import exec_file

import flowerbed.deploy

# one changed function per guard (flowerbed/pyinfra_internals.py RECORDED)
CHANGED = {
    "operation order": (pyinfra.api.util, "get_operation_order_from_stack"),
    "global arguments": (pyinfra.api.arguments, "pop_global_arguments"),
    "operation results": (State, "get_op_data_for_host"),
    "ssh socket": (SSHConnector, "_connect"),
    "ssh connect timeout": (SSHConnector, "make_paramiko_kwargs"),
    "argument types": (pyinfra.api.arguments, "all_global_arguments"),
    "diff display": (pyinfra.operations.util.files, "generate_color_diff"),
}


def fake_changed_functions(monkeypatch, guards=tuple(CHANGED)) -> None:
    for guard in guards:
        owner, name = CHANGED[guard]
        original = getattr(owner, name)

        def changed(*args, __original=original, **kwargs):
            # a new release's version of it: it does the same, its source differs
            return __original(*args, **kwargs)

        monkeypatch.setattr(owner, name, changed)


class StoppedAfterInstall(Exception):
    """The deploy's next step after installing the shortcuts: the test stops the run there."""


def run_deploy_py_until_its_checks(monkeypatch, deploy_file: str) -> None:
    """The repository's deploy.py executed for one host the way `pyinfra INVENTORY deploy.py`
    does (pyinfra_cli's exec_file, in the CLI's state and host context), stopped where the
    deploy checks the hosts' settings: whatever flowerbed installs into pyinfra by then, its
    own entry point installed, not the test."""
    monkeypatch.setattr(pyinfra, "is_cli", True)
    monkeypatch.setattr(flowerbed.deploy, "checked", stop_here)
    inventory = Inventory((["fence-host"], {}))
    state = State(inventory, Config())
    state.current_deploy_filename = deploy_file
    host = inventory.get_host("fence-host")
    with (
        ctx_state.use(state),
        ctx_inventory.use(inventory),
        ctx_config.use(state.config),
        ctx_host.use(host),
        pytest.raises(UnexpectedExternalError) as stopped,
    ):
        exec_file(deploy_file)
    assert isinstance(stopped.value.exception, StoppedAfterInstall), stopped.value.exception


def stop_here(host, inventory):
    raise StoppedAfterInstall(host.name)
