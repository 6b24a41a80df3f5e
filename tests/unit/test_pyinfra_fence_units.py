"""The fence around pyinfra's internals (flowerbed/pyinfra_internals.py): the only module that
uses pyinfra outside its public API; its shortcuts are installed by flowerbed's entry points on
the tested pyinfra only, and anywhere else leave pyinfra's own behaviour with one log line.
tests/unit/test_speed_units.py runs the operation-order and speed tests on each pyinfra."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from fence_helpers import CHANGED, fake_changed_functions
from pyinfra.api import Host
from pyinfra.api.command import PyinfraCommand
from pyinfra.connectors.ssh import SSHConnector

from flowerbed import pyinfra_internals as internals
from flowerbed import runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def not_installed():
    internals.uninstall()
    yield
    internals.uninstall()


def fence_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("flowerbed:")]


def operation_module():
    return importlib.import_module("pyinfra.api.operation")


def arguments_module():
    return importlib.import_module("pyinfra.api.arguments")


def test_on_the_tested_pyinfra_every_shortcut_is_installed(caplog):
    caplog.set_level(logging.INFO)
    assert internals.install() == dict.fromkeys(internals.RECORDED, True)
    assert operation_module().get_operation_order_from_stack is not internals.PYINFRAS_OWN
    assert fence_lines(caplog) == []


def test_an_unknown_version_keeps_pyinfras_own_behaviour_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(internals, "installed_version", lambda: "3.11.0")
    assert internals.install() == dict.fromkeys(internals.RECORDED, False)
    internals.install()  # every deploy function and run calls it: still one line
    [line] = fence_lines(caplog)
    assert "pyinfra 3.11.0 is not in the tested range >=3.10.0,<3.11" in line
    assert "pyinfra's own behaviour (correct, slower)" in line
    assert all(guard in line for guard in internals.RECORDED)
    assert_pyinfras_own_behaviour()


def assert_pyinfras_own_behaviour() -> None:
    assert operation_module().get_operation_order_from_stack is internals.PYINFRAS_OWN
    assert arguments_module().all_global_arguments.__module__ != internals.__name__
    # facts are not kept past one ask: the count of changes is never the same twice
    state = SimpleNamespace(ops={})
    assert internals.changed_operations(state, "h") != internals.changed_operations(state, "h")
    assert internals.default_arguments(state, "h") is None
    host = SimpleNamespace(
        current_op_global_arguments={"_sudo": True, "_ignore_errors": True, "name": "x"},
        data=SimpleNamespace(get=lambda key: {"_sudo_user": "flower"}.get(key)),
    )
    assert internals.connector_arguments(state, host) == {"_sudo": True, "_sudo_user": "flower"}
    assert internals.ssh_connector_class() is SSHConnector
    assert internals.bold("path") == "path"
    assert list(internals.diff_lines(["a\n"], ["b\n"]))[-2:] == ["-a", "+b"]


@pytest.mark.parametrize("guard", list(CHANGED))
def test_a_changed_function_is_noticed(monkeypatch, caplog, guard):
    fake_changed_functions(monkeypatch, [guard])
    assert internals.install() == {other: other != guard for other in internals.RECORDED}
    [line] = fence_lines(caplog)
    owner, name = CHANGED[guard]
    assert f"{name} changed" in line and line.endswith(f"for {guard}")


def test_every_changed_function_keeps_pyinfras_own_behaviour(monkeypatch, caplog):
    fake_changed_functions(monkeypatch)
    assert internals.install() == dict.fromkeys(internals.RECORDED, False)
    assert len(fence_lines(caplog)) == 1
    assert_pyinfras_own_behaviour()


def test_the_installed_shortcuts(monkeypatch):
    internals.install()
    done = SimpleNamespace(is_complete=lambda: True, did_change=lambda: True)
    same = SimpleNamespace(is_complete=lambda: True, did_change=lambda: False)
    ops = {
        "h": {"a": SimpleNamespace(operation_meta=done), "b": SimpleNamespace(operation_meta=same)}
    }
    assert internals.changed_operations(SimpleNamespace(ops=ops), "h") == 1
    assert internals.ssh_connector_class().__mro__[1] is SSHConnector
    cached = arguments_module().all_global_arguments
    assert cached is not internals.PYINFRAS_ARGUMENT_TYPES
    assert cached() == internals.PYINFRAS_ARGUMENT_TYPES() and cached() is not cached()


@pytest.mark.parametrize(
    ("version", "tested"),
    [("3.10.0", True), ("3.10.7", True), ("3.9.9", False), ("3.11.0", False), ("4.0", False),
     ("3.11.0rc1", False), ("unknown", False)],
)  # fmt: skip
def test_the_tested_range(version, tested):
    assert internals.in_tested_range(version) is tested


def test_pyproject_allows_exactly_the_tested_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [pyinfra] = [d for d in project["dependencies"] if re.match(r"pyinfra\b", d)]
    assert pyinfra == f"pyinfra>={internals.TESTED[0]},<{internals.TESTED[1]}"
    locked = re.search(r"^pyinfra==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    assert internals.in_tested_range(locked.group(1)), "the lock's pyinfra is the tested one"
    assert locked.group(1) == internals.installed_version()


# what the rest of flowerbed may import from pyinfra: its public API
PUBLIC = {
    "pyinfra": {"host", "state", "inventory", "logger"},
    "pyinfra.api": set(importlib.import_module("pyinfra.api").__dict__) - {"api"},
    "pyinfra.api.operation": {"OperationMeta"},  # what every operation returns
    "pyinfra.operations.util": {"any_changed"},
}
# attributes of host and state that are pyinfra's internals
INTERNAL_ATTRIBUTES = {"ops", "connector", "client", "current_op_global_arguments", "is_cli"}


def test_nothing_else_in_flowerbed_reaches_into_pyinfra():
    found = []
    for path in sorted((REPO / "flowerbed").rglob("*.py")):
        if path.name == "pyinfra_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [f"{path.name}: import {a.name}" for a in node.names if "." in a.name
                          and a.name.startswith("pyinfra")]  # fmt: skip
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module.split(".")[0] == "pyinfra")
            ):
                module = node.module
                if module.startswith(("pyinfra.operations.", "pyinfra.facts.")) and (
                    module != "pyinfra.operations.util"
                ):
                    continue  # operations and facts
                if module in ("pyinfra.operations", "pyinfra.facts"):
                    continue
                found += [
                    f"{path.name}: from {module} import {a.name}"
                    for a in node.names
                    if a.name not in PUBLIC.get(module, set())
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr in INTERNAL_ATTRIBUTES
                and ast.unparse(node) != "http.client"
            ):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert found == []


def test_the_uses_without_a_fallback_keep_their_shape():
    """What flowerbed uses as it is: the firewall's custom command is executed with the
    connector arguments; the running operation's arguments are on the host."""
    parameters = list(inspect.signature(PyinfraCommand.execute).parameters)
    assert parameters == ["self", "state", "host", "connector_arguments"]
    assert "current_op_global_arguments" in Host.__annotations__
    assert callable(SSHConnector.make_paramiko_kwargs) and callable(SSHConnector.connect)


def test_importing_flowerbed_installs_nothing():
    code = (
        "import importlib, flowerbed.deploy, flowerbed.facts, flowerbed.quiet, flowerbed.verify\n"
        "from flowerbed import pyinfra_internals as i\n"
        "m = importlib.import_module('pyinfra.api.operation')\n"
        "assert m.get_operation_order_from_stack is i.PYINFRAS_OWN and not i._applied\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_flowerbeds_entry_points_install_it():
    deploy = (REPO / "flowerbed" / "deploy.py").read_text()
    assert "    install()\n    return checked(host, inventory)" in deploy
    assert deploy.count("this_host()") >= 6, "every @deploy function starts with this_host()"
    for run in (runs.verify, runs.rotate):  # the repository's verify.py and rotate.py call them
        assert "\n    install()" in inspect.getsource(run), run.__name__
