"""The code's own layout (issue 20): the pre-flight stands on an input layer that changes no
host, below the deploy modules. No lab."""

from __future__ import annotations

import importlib
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
