"""Every use flowerbed makes of pyinfra outside its public API: here, and nowhere else.

Public, and used anywhere in flowerbed: the names `pyinfra.api` exports, operations and facts,
`host`, `state`, `inventory`, `logger`, and `pyinfra.api.operation.OperationMeta`: the object
every operation returns (in pyinfra's API reference: `changed`, `did_change()`), imported only
to name that type. Judged public too: `pyinfra.operations.util.any_changed`, a helper over
those objects that lives with the operations (nginx.py, flower.py).

What is not public is used here only, each use behind a guard. A guard holds when the installed
pyinfra is in the tested range (TESTED, what pyproject.toml allows) AND every pyinfra function
it relies on is still the one it was written against (the sha256 of its source, RECORDED).
`install()` checks the guards; flowerbed's own entry points call it (the @deploy functions
through flowerbed/deploy.py's `this_host`, and the verify.py and rotate.py runs), never an
import. A guard that does not hold leaves pyinfra's own behaviour, correct and slower, and
`install()` logs one line naming what is off:

- "operation order": pyinfra orders operations by the line numbers of their call stack
  (`pyinfra.api.util.get_operation_order_from_stack`), found with `inspect.stack()`, which
  reads every frame's source file: on a no-op of 10 hosts the largest part of the controller's
  CPU. The same numbers come from the frames themselves (`operation_order`). The replacement is
  process-wide (pyinfra calls it by its name in `pyinfra.api.operation`), so it computes the
  fast order only for operations that flowerbed's code calls, and calls pyinfra's own for all
  others. Without: pyinfra's own for every operation.
- "global arguments": `pyinfra.api.arguments.pop_global_arguments` and
  `CONNECTOR_ARGUMENT_KEYS` say how pyinfra would run a command here (_sudo...): flowerbed.quiet
  runs its command with them, flowerbed.facts keys its batches by them. Without: the
  operation's own arguments (`host.current_op_global_arguments`, complete inside an operation)
  or the host's data, and facts batches are not reused across asks.
- "operation results": `state.ops` tells how many of the host's operations changed
  something, so facts fetched in one batch are kept until a change. Without: each fact is
  fetched when it is asked, as pyinfra does.
- "ssh socket": TCP_NODELAY on paramiko's socket (`host.connector.client`). Pyinfra's SSH
  connector leaves Nagle's algorithm on: every command ends with two small packets in a row,
  and the second waits for the host's delayed ACK (up to 40 ms; measured on the lab 50 ms a
  command, 87 ms with input; with TCP_NODELAY, what OpenSSH sets, 6 ms). Without: as pyinfra.
- "ssh connect timeout": the firewall's NEW SSH connection (pyinfra's SSH connector for the
  same host) connects with a short timeout (`make_paramiko_kwargs`). Without: pyinfra's
  CONNECT_TIMEOUT.
- "argument types": `pyinfra.api.arguments.all_global_arguments` runs `typing.get_type_hints`
  over pyinfra's argument TypedDicts at every call, and `pop_global_arguments` calls it for
  every operation on every host (0.09 ms a call on an idle machine here, 0.35 ms under load).
  Its answer depends on pyinfra's own classes only, never on a run's context, so it is computed
  once per process and a new copy handed to each caller, whoever's the operation (0.0001 ms).
  (`pyinfra.api.facts` imported its own reference when it loaded and keeps it.) This guard's
  fingerprinted function is the one it replaces: `install()` checks it once, before.
  Without: pyinfra's own, computed at each call.
- "diff display": `--diff` of flowerbed's files as files.put shows them (`format_text`,
  `generate_color_diff`). Without: a plain unified diff.

Used as they are, without a fallback (nothing of pyinfra's would do the same; what pyproject
allows keeps them, and tests/unit/test_pyinfra_fence_units.py checks their shape): the base
class of custom commands `PyinfraCommand` (the firewall's confirmation over a new connection
needs the connector arguments, which a FunctionCommand does not get), `SSHConnector` (that new
connection, and telling an SSH host from others), `host.current_op_global_arguments`.

After testing a new pyinfra: `python -m flowerbed.pyinfra_internals` prints the fingerprints
to record, then widen TESTED and pyproject.toml together.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import re
import socket
import sys
from typing import Any

import pyinfra
from pyinfra import logger
from pyinfra.api.arguments import all_global_arguments
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.util import PYINFRA_INSTALL_DIR, get_operation_order_from_stack
from pyinfra.connectors.ssh import SSHConnector

__all__ = ["PyinfraCommand", "SSHConnector"]

TESTED = ("3.10.0", "3.11")  # >= the first, < the second: pyproject.toml allows the same
PYINFRAS_OWN = get_operation_order_from_stack
PYINFRAS_ARGUMENT_TYPES = all_global_arguments

# what each guard relies on: "module:qualified name" -> sha256 of its source (16 hex digits),
# as in pyinfra 3.10.0
RECORDED: dict[str, dict[str, str]] = {
    "operation order": {
        "pyinfra.api.util:get_operation_order_from_stack": "f4807f61585570e0",
        "pyinfra.api.operation:solve_operation_consistency": "957d69ba543777fe",
    },
    "global arguments": {
        "pyinfra.api.arguments:pop_global_arguments": "a12a311539ff5068",
        "pyinfra.api.arguments:CONNECTOR_ARGUMENT_KEYS": "f32366fb815e4841",
    },
    "operation results": {
        "pyinfra.api.state:State.get_op_data_for_host": "bc15cd0a645ddba2",
        "pyinfra.api.operation:OperationMeta.is_complete": "8357151f8acc0dfc",
        "pyinfra.api.operation:OperationMeta.did_change": "d32c6e33bd51c599",
    },
    "ssh socket": {
        "pyinfra.connectors.ssh:SSHConnector._connect": "762639d6ffc6c5a9",
    },
    "ssh connect timeout": {
        "pyinfra.connectors.ssh:SSHConnector.make_paramiko_kwargs": "2adb0b9401ccf9f2",
    },
    "argument types": {
        "pyinfra.api.arguments:all_global_arguments": "f7afbc472d78c5d2",
    },
    "diff display": {
        "pyinfra.api.output:format_text": "99b77a99f314cce9",
        "pyinfra.operations.util.files:generate_color_diff": "4317b5bc02574638",
    },
}

# the connector arguments pyinfra documents (Global Arguments): used when "global arguments"
# does not hold
DOCUMENTED_CONNECTOR_ARGUMENTS = (
    "_sudo", "_sudo_user", "_use_sudo_login", "_sudo_password", "_preserve_sudo_env",
    "_su_user", "_use_su_login", "_preserve_su_env", "_su_shell", "_doas", "_doas_user",
    "_shell_executable", "_chdir", "_env", "_success_exit_codes", "_timeout", "_get_pty",
    "_stdin",
)  # fmt: skip

_applied: dict[str, bool] = {}  # guard -> holds; empty until install()


# --- the guards -------------------------------------------------------------------------------


def installed_version() -> str:
    try:
        return importlib.metadata.version("pyinfra")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _release(version: str) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def in_tested_range(version: str) -> bool:
    release = _release(version)
    return release is not None and _release(TESTED[0]) <= release < _release(TESTED[1])


def _resolve(name: str) -> Any:
    module, _, attributes = name.partition(":")
    found: Any = importlib.import_module(module)
    for attribute in attributes.split("."):
        found = getattr(found, attribute)
    return found


def fingerprint(name: str) -> str:
    """sha256 (16 hex digits) of the source of what `name` names (a list: of its sorted items);
    '' when it is gone or its source cannot be read."""
    try:
        found = _resolve(name)
        text = repr(sorted(found)) if isinstance(found, list) else inspect.getsource(found)
    except (ImportError, AttributeError, OSError, TypeError):
        return ""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check(guard: str, version: str | None = None) -> list[str]:
    """What keeps `guard` from holding: [] when it holds."""
    version = version or installed_version()
    if not in_tested_range(version):
        return [f"pyinfra {version} is not in the tested range >={TESTED[0]},<{TESTED[1]}"]
    return [
        f"{name} changed"
        for name, recorded in RECORDED[guard].items()
        if fingerprint(name) != recorded
    ]


def install() -> dict[str, bool]:
    """Check every guard once and apply what holds; one log line for what does not."""
    if _applied:
        return dict(_applied)
    version = installed_version()
    problems: list[str] = []
    for guard in RECORDED:
        found = check(guard, version)
        _applied[guard] = not found
        problems += [problem for problem in found if problem not in problems]
    if _applied["operation order"]:
        _operation_module().get_operation_order_from_stack = _order_for_flowerbeds_operations
    if _applied["argument types"]:
        _arguments_module().all_global_arguments = _argument_types_once()
    off = [guard for guard, holds in _applied.items() if not holds]
    if off:
        logger.warning(
            f"flowerbed: {'; '.join(problems)}: pyinfra's own behaviour (correct, slower) for "
            f"{', '.join(off)}"
        )
    return dict(_applied)


def uninstall() -> None:
    """Back to pyinfra's own behaviour everywhere (tests)."""
    _operation_module().get_operation_order_from_stack = PYINFRAS_OWN
    _arguments_module().all_global_arguments = PYINFRAS_ARGUMENT_TYPES
    _applied.clear()


def applied(guard: str) -> bool:
    return _applied.get(guard, False)


def _operation_module():
    # the module: `pyinfra.api.operation` as an attribute is the decorator of that name
    return importlib.import_module("pyinfra.api.operation")


def _arguments_module():
    return importlib.import_module("pyinfra.api.arguments")


def _argument_types_once():
    """pyinfra's `all_global_arguments`, computed now, its answer copied to every caller."""
    types = tuple(PYINFRAS_ARGUMENT_TYPES())

    def all_global_arguments() -> list[tuple[str, type]]:
        return list(types)

    return all_global_arguments


# --- operation order --------------------------------------------------------------------------


def operation_order(state, frame=None) -> list[int]:
    """The line numbers pyinfra's `get_operation_order_from_stack` gives for this call stack:
    the calls from the first frame in the deploy file down, pyinfra's own frames left out."""
    frames = []
    frame = frame or sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()

    start = 0
    if state.current_deploy_filename:
        # not found: pyinfra keeps only the innermost frame, its own, which it then leaves out
        start = next(
            (i for i, outer in enumerate(frames)
             if outer.f_code.co_filename == state.current_deploy_filename),
            len(frames),
        )  # fmt: skip

    line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    line_numbers += [
        outer.f_lineno
        for outer in frames[start:]
        if not outer.f_code.co_filename.startswith(PYINFRA_INSTALL_DIR)
    ]
    return line_numbers


# where flowerbed's code is, as frames name it
FLOWERBED_DIR = os.path.dirname(operation_order.__code__.co_filename) + os.sep


def _order_for_flowerbeds_operations(state) -> list[int]:
    """What pyinfra calls once "operation order" is installed: `operation_order` for an
    operation that flowerbed's code calls, pyinfra's own for any other."""
    caller = sys._getframe(1)
    outer = caller
    while outer is not None and outer.f_code.co_filename.startswith(PYINFRA_INSTALL_DIR):
        outer = outer.f_back
    if outer is not None and outer.f_code.co_filename.startswith(FLOWERBED_DIR):
        return operation_order(state, caller)
    deploy_file = state.current_deploy_filename
    counted = not deploy_file
    while outer is not None and not counted:
        counted = outer.f_code.co_filename == deploy_file
        outer = outer.f_back
    line_numbers = PYINFRAS_OWN(state)  # it also counts this frame: the innermost not its own
    if counted:
        line_numbers.pop()
    return line_numbers


# --- global arguments, operation results ------------------------------------------------------


def current_op_arguments(host) -> dict | None:
    """The running operation's global arguments (_sudo...), None outside an operation."""
    return host.current_op_global_arguments


def connector_arguments(state, host) -> dict:
    """How pyinfra would run a command here: the operation's arguments, else the host's."""
    current = dict(current_op_arguments(host) or {})
    if applied("global arguments"):
        from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments

        arguments, _ = pop_global_arguments(state, host, current)
        return {key: value for key, value in arguments.items() if key in CONNECTOR_ARGUMENT_KEYS}
    found = {}
    for key in DOCUMENTED_CONNECTOR_ARGUMENTS:
        value = current[key] if key in current else host.data.get(key)
        if value is not None:
            found[key] = value
    return found


def default_arguments(state, host) -> dict | None:
    """The global arguments pyinfra gives a fact asked outside an operation (the host's data,
    the config); None when that cannot be told."""
    if not applied("global arguments"):
        return None
    from pyinfra.api.arguments import pop_global_arguments

    arguments, _ = pop_global_arguments(state, host, {})
    return arguments


def changed_operations(state, host) -> Any:
    """How many of the host's operations have run and changed something; when that cannot be
    told, a value never equal to an earlier one (as if every operation changed something)."""
    if not applied("operation results"):
        return object()
    return sum(
        1
        for data in state.ops.get(host, {}).values()
        if data.operation_meta.is_complete() and data.operation_meta.did_change()
    )


# --- connections ------------------------------------------------------------------------------


def is_ssh_host(host) -> bool:
    return isinstance(host.connector, SSHConnector)


def connector_name(host) -> str:
    return type(host.connector).__name__


def send_without_delay(host) -> None:
    """Set TCP_NODELAY on the host's SSH socket; a no-op for other connectors, a host not
    connected, or a connection that is not a TCP socket of its own (a ProxyCommand)."""
    if not applied("ssh socket"):
        return
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    sock = getattr(transport, "sock", None)
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):  # the connection still works, at the old speed
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ShortTimeoutSSHConnector(SSHConnector):
    connect_timeout: float = 0

    def make_paramiko_kwargs(self) -> dict:
        return {**super().make_paramiko_kwargs(), "timeout": self.connect_timeout}


def ssh_connector_class() -> type[SSHConnector]:
    return _ShortTimeoutSSHConnector if applied("ssh connect timeout") else SSHConnector


def new_ssh_connector(state, host, connect_timeout: float) -> SSHConnector:
    """pyinfra's SSH connector for the same host (address, port, user, key, ssh config), not
    connected yet; with `connect_timeout` when "ssh connect timeout" holds."""
    connector = ssh_connector_class()(state, host)
    connector.connect_timeout = connect_timeout  # read by _ShortTimeoutSSHConnector only
    return connector


def close_ssh_connector(connector: SSHConnector) -> None:
    """Close a connection `new_ssh_connector` opened (pyinfra's `disconnect` keeps it open)."""
    connector.client.close()


# --- diff display -----------------------------------------------------------------------------


def bold(text: str) -> str:
    if not applied("diff display"):
        return text
    from pyinfra.api.output import format_text

    return format_text(text, bold=True)


def diff_lines(current: list[str], desired: list[str]):
    """The lines of a diff from `current` to `desired`, as files.put shows them."""
    if not applied("diff display"):
        return (line.rstrip("\n") for line in difflib.unified_diff(current, desired, n=2))
    from pyinfra.operations.util.files import generate_color_diff

    return generate_color_diff(current, desired)


if __name__ == "__main__":
    print(f"pyinfra {installed_version()}")
    for guard, names in RECORDED.items():
        print(f'    "{guard}": {{')
        for name in names:
            print(f'        "{name}": "{fingerprint(name)}",')
        print("    },")
