"""The code's own layout (issue 20): the pre-flight stands on an input layer that changes no
host, below the deploy modules. No lab."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys

from package_helpers import REPO


def deploy_parts(module: str) -> list[str]:
    """The pyinfra operations and deploys `module` defines (pyinfra's decorators set `_inner`)."""
    defined = vars(importlib.import_module(module))
    return [name for name, value in defined.items()
            if hasattr(value, "_inner") and getattr(value, "__module__", "") == module]  # fmt: skip


def imported_by(module: str) -> list[str]:
    """Every flowerbed module that importing `module` imports, in a fresh interpreter."""
    code = (f"import sys, {module}\n"
            "print(*sorted(m for m in sys.modules if m.split('.')[0] == 'flowerbed'))")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    return run.stdout.split()


def test_the_check_finds_a_deploy_module():
    """What the test below looks for is there to find: auth.py writes htpasswd files."""
    assert "htpasswd_file" in deploy_parts("flowerbed.auth")
    assert "flowerbed.auth" in imported_by("flowerbed.edge")


def test_the_preflight_imports_no_deploy_module():
    imported = imported_by("flowerbed.preflight")
    assert "flowerbed.inputs" in imported
    deploys = {module: parts for module in imported if (parts := deploy_parts(module))}
    assert not deploys, f"flowerbed.preflight imports modules that change hosts: {deploys}"


def test_verifys_fleet_report_asks_no_host():
    """The fleet's table and JSON apart from the checks that gather the verdicts."""
    assert not deploy_parts("flowerbed.fleet_report")
    assert "flowerbed.verify" not in imported_by("flowerbed.fleet_report")


WHOLE = re.compile(r"\bSettings\b")


def whole_settings_takers(module: str) -> list[str]:
    """The functions `module` defines (a deploy or operation unwrapped) with a parameter that
    takes the whole `Settings` (annotations are text: `from __future__ import annotations`)."""
    found = []
    for name, value in vars(importlib.import_module(module)).items():
        function = getattr(value, "_inner", value)
        if inspect.isfunction(function) and function.__module__ == module:
            hints = {k: str(v) for k, v in function.__annotations__.items() if k != "return"}
            found += [name] if any(WHOLE.search(hint) for hint in hints.values()) else []
    return found


def test_the_check_finds_a_whole_settings_taker():
    """verify.py's instance layers read every section: an operator's run, not a deploy part."""
    assert "instances_checked" in whole_settings_takers("flowerbed.verify")


def test_the_deploy_parts_take_their_own_sections():
    """Every module the deploys call into: its parts take the settings sections they read (or a
    small bundle of them: FlowerRun, DashboardProxy), never the whole `Settings`."""
    modules = [module for module in imported_by("flowerbed.deploy") if deploy_parts(module)]
    assert {"flowerbed.flower", "flowerbed.edge", "flowerbed.ban"} <= set(modules)
    takers = {module: found for module in modules if (found := whole_settings_takers(module))}
    assert not takers, f"deploy parts that take the whole Settings: {takers}"
