"""flowerbed as a package: its data, its keys, its one base for paths, its wheel. No lab.

The lab test that installs the wheel for a consumer project is tests/lab/test_consumer.py.
"""

from __future__ import annotations

import ast
import inspect
import pkgutil
import re
import textwrap

import pytest
from package_helpers import REPO, build_wheel, missing_from_wheel, wheel_files
from pem_helpers import ca_pem
from pyinfra.api import Inventory
from pyinfra_cli.commands import get_func_and_args
from settings_helpers import error_for, settings_with

import flowerbed
from flowerbed import runs
from flowerbed.deploy import PARTS, deploy_flowerbed
from flowerbed.monitoring import deploy_monitoring
from flowerbed.preflight import explicit_keys
from flowerbed.resources import DEFAULTS, HOST_SCRIPTS, LOCKS, TEMPLATES, local_path
from flowerbed.settings import RENAMED, known_keys, load_settings, local_app_dir

PACKAGE = REPO / "flowerbed"
RUNS = ("deploy", "verify", "rotate", "remove")  # the repository's runs: flowerbed.runs


# --- package data: one copy, found inside the package -----------------------------------------


@pytest.mark.parametrize(
    "link, target",
    [
        ("templates", "../templates"),
        ("files", "../files"),
        ("locks", "../locks"),
        ("defaults.py", "../group_data/all.py"),
    ],
)
def test_package_data_are_links_to_the_one_copy(link, target):
    assert (PACKAGE / link).is_symlink() and str((PACKAGE / link).readlink()) == target


def test_package_data_are_found_in_the_package():
    for found, name in ((TEMPLATES, "templates"), (HOST_SCRIPTS, "files"), (LOCKS, "locks")):
        assert found == PACKAGE / name and found.is_dir()
    assert DEFAULTS["flower_version"] == "2.2.0" and len(DEFAULTS) == len(
        [line for line in (REPO / "group_data" / "all.py").read_text().splitlines()
         if re.match(r"flower_\w+ = ", line)]
    )  # fmt: skip


def test_no_module_finds_files_through_the_repository():
    for module in PACKAGE.glob("*.py"):
        text = module.read_text()
        assert "__file__" not in text and ".parent.parent" not in text, module.name


def test_the_wheel_holds_templates_host_scripts_locks_and_defaults(tmp_path):
    wheel = build_wheel(tmp_path)
    assert missing_from_wheel(wheel) == []
    names = wheel_files(wheel)
    assert not [n for n in names if not n.startswith(("flowerbed/", "flowerbed-"))], names


# --- keys: one prefix, old names named --------------------------------------------------------


def test_every_key_has_the_prefix():
    assert all(key.startswith("flower_") for key in DEFAULTS)
    assert all(key.startswith("flower_") for key in known_keys())


@pytest.mark.parametrize("old", ["fqdn", "server_aliases", "nginx_hsts_max_age", "auth_mode"])
def test_an_old_name_names_its_new_name(old):
    value = DEFAULTS[RENAMED[old]]
    message = error_for(**{old: value})
    assert message.startswith(f"{old}: ") and RENAMED[old] in message
    assert f"rename {old} to {RENAMED[old]}" in message


def test_a_consumers_own_keys_are_left_alone():
    settings = settings_with(
        nginx_user="www-data",  # another role's nginx_ key: never ours
        tls_certificate="/etc/ssl/app.pem",
        fqdn="app.example.com",  # an old name of ours, but flower_fqdn is set: the deploy's own
        flower_fqdn="flower.example.com",
        nginx_hsts_max_age=300,
        flower_nginx_hsts_max_age=600,
    )
    assert settings.site.fqdn == "flower.example.com" and settings.nginx.hsts_max_age == 600


def test_explicit_means_set_by_the_operator_not_a_default_in_group_data():
    """In this repository group_data/all.py holds every default: a value there is only the
    operator's choice when it differs from the default."""
    all_data = {**DEFAULTS, "flower_nginx_hsts_max_age": 300}
    inventory = Inventory(
        ([("h1", {"fqdn": "app.example.com", "flower_tls_email": ""}), "h2"], all_data),
        override_data={"flower_auth_mode": "basic"},
    )
    h1, h2 = inventory.get_host("h1"), inventory.get_host("h2")
    explicit = explicit_keys(h1)
    assert {"flower_tls_email", "flower_nginx_hsts_max_age", "flower_auth_mode"} <= explicit
    assert "flower_fqdn" not in explicit and "flower_admin_sources" not in explicit_keys(h2)


# --- relative paths: one base, where pyinfra runs ---------------------------------------------


def test_relative_paths_resolve_from_where_pyinfra_runs(tmp_path, monkeypatch):
    for name in ("certs/proxy-ca.pem", "acme/ca.pem", "hooks/dns.sh", "apps/proj/pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "certs/proxy-ca.pem").write_bytes(ca_pem()[0])  # a CA must parse as one
    relative = {
        "flower_egress_ca_certificates": ["certs/proxy-ca.pem"],
        "flower_tls_acme_directory": "https://acme.internal.example/dir",
        "flower_tls_acme_ca_bundle": "acme/ca.pem",
        "flower_tls_challenge": "dns-01",
        "flower_tls_dns_hook": "hooks/dns.sh",
        "flower_app": "proj.celery:app",
        "flower_app_source": "apps/proj",
    }
    monkeypatch.chdir(tmp_path)
    settings = settings_with(**relative)
    assert settings.tls.acme_ca_bundle == str(tmp_path / "acme/ca.pem")
    assert settings.tls.dns_hook == str(tmp_path / "hooks/dns.sh")
    assert local_app_dir(settings.flower) == tmp_path / "apps/proj"
    assert local_path(settings.egress.egress_ca_certificates[0]) == tmp_path / "certs/proxy-ca.pem"

    monkeypatch.chdir(REPO)  # the same data from elsewhere: each of the four is not found
    message = error_for(**relative)
    for key in ("egress_ca_certificates[0]", "tls_acme_ca_bundle", "tls_dns_hook", "app_source"):
        assert re.search(rf"^flower_{re.escape(key)}: ", message, re.M), key


# --- the deploys and their documentation ------------------------------------------------------


def test_deploys_carry_the_defaults():
    for deployed in (deploy_flowerbed, *PARTS):
        assert deployed._inner.deploy_data is DEFAULTS


def test_each_part_documents_its_keys_and_an_example():
    documented = set()
    for part in (deploy_flowerbed, *PARTS, deploy_monitoring):
        doc = part.__doc__ or ""
        assert "Example" in doc and f"{part.__name__}()" in doc, part.__name__
        keys = set(re.findall(r"\bflower_\w+", doc))
        assert keys <= set(DEFAULTS), (part.__name__, keys - set(DEFAULTS))
        documented |= keys
    # the operator runs' keys (verify.py, rotate.py, remove.py, the rollout) are no deploy part's
    runs = ("flower_verify_", "flower_remove_", "flower_rollout_")
    every = {k for k in known_keys() if not k.startswith(runs)}
    assert every <= documented, sorted(every - documented)


def test_the_package_docstring_names_every_module():
    modules = [m.name for m in pkgutil.iter_modules(flowerbed.__path__)]
    assert len(modules) >= 20
    missing = [m for m in modules if not re.search(rf"\b{m}:", flowerbed.__doc__)]
    assert not missing, f"flowerbed/__init__.py's docstring does not name {missing}"


def test_the_repository_deploy_is_the_one_call():
    tree = ast.parse(textwrap.dedent(inspect.getsource(runs.deploy)))
    calls = [n.value.func.id for n in ast.walk(tree) if isinstance(n, ast.Expr)
             and isinstance(n.value, ast.Call)]  # fmt: skip
    # the dashboards' one call, and the monitoring part on the host they name (issue 22)
    assert calls == ["deploy_flowerbed", "deploy_monitoring"]


@pytest.mark.parametrize("run", RUNS)
def test_each_repository_run_is_its_docstring_and_one_call_into_the_wheel(run):
    docstring, imported, called = ast.parse((REPO / f"{run}.py").read_text()).body
    assert isinstance(docstring.value, ast.Constant), "the run's usage, for the operator"
    assert ast.unparse(imported) == f"from flowerbed.runs import {run}"
    assert ast.unparse(called) == f"{run}()"
    assert f"pyinfra inventory/prod.py flowerbed.runs.{run}" in docstring.value.value
    assert f"pyinfra inventory/prod.py flowerbed.runs.{run}" in runs.__doc__


@pytest.mark.parametrize("run", RUNS)
def test_pyinfras_command_line_runs_each_run_by_its_name(run):
    """What `pyinfra INVENTORY flowerbed.runs.<run>` calls per host: the run itself."""
    function, arguments = get_func_and_args([f"flowerbed.runs.{run}"])
    assert function is getattr(runs, run) and arguments == ([], {})


def test_the_defaults_alone_need_only_the_operators_choices():
    required = {"flower_allowed_sources": ["203.0.113.0/24"], "flower_admin_sources": ["::1/128"]}
    assert load_settings(required).flower.version == DEFAULTS["flower_version"]
    with pytest.raises(ValueError, match="flower_allowed_sources: an empty list"):
        load_settings({})
