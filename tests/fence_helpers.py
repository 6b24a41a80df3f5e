"""A pyinfra whose functions flowerbed replaces or relies on have changed (same behaviour, new
source): what flowerbed/pyinfra_internals.py must notice, for the fence's tests."""

from __future__ import annotations

import pyinfra.api.arguments
import pyinfra.api.util
import pyinfra.operations.util.files
from pyinfra.api.state import State
from pyinfra.connectors.ssh import SSHConnector

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
