"""A consumer's own pyinfra project deploys flowerbed from its wheel: pip install + one call.

The wheel is built from this repository's tracked files (tests/package_helpers.py) and
installed into a fresh venv outside the repository. The venv has no network: its
dependencies (pyinfra, jinja2, ...) come from the repo venv's site-packages through a .pth
file, appended after the venv's own site-packages, so `flowerbed` itself can only come from
the wheel (asserted). The consumer project, in a temporary directory, has its own inventory
for a fresh lab host, group data with only the keys that have no safe default (plus this
lab's proxy and ACME directory), a key of its own that flowerbed once used (`fqdn`), and a
deploy.py with an operation of its own using its own `nginx_user` next to deploy_flowerbed().
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import Lab
from deploy_helpers import DeployResult
from package_helpers import build_wheel, missing_from_wheel

from flowerbed.probe import https_get

pytestmark = pytest.mark.lab

OWN_FILE = "/etc/myapp/nginx-user.conf"

CONSUMER_DEPLOY = (
    '''\
"""The consumer's deploy: an operation of its own, then flowerbed in one call."""
from io import StringIO

from pyinfra import host
from pyinfra.operations import files

from flowerbed import deploy_flowerbed

files.directory(name="My app's config directory", path="/etc/myapp", mode="755")
files.put(
    name="My app's own nginx user",
    src=StringIO(f"user {host.data.nginx_user}; # for {host.data.fqdn}\\n"),
    dest="'''
    + OWN_FILE
    + """",
    mode="644",
)
deploy_flowerbed()
"""
)


def consumer_venv(work: Path) -> Path:
    """A fresh venv holding the wheel; dependencies from the repo venv (see the docstring)."""
    wheel = build_wheel(work)
    assert missing_from_wheel(wheel) == [], "templates, host scripts, locks and defaults"
    venv = work / "venv"
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([base_python, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
               "--no-index", "--quiet", wheel]  # fmt: skip
    subprocess.run(install, check=True, timeout=120, capture_output=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "dependencies-from-repo-venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return python


def consumer_project(lab: Lab, project: Path, host: dict) -> None:
    (project / "group_data").mkdir(parents=True)
    (project / "certs").mkdir()
    # the lab's ACME CA bundle as the consumer keeps it: a path relative to the project
    (project / "certs" / "acme-ca.pem").write_text(Path(lab.state["acme"]["ca_bundle"]).read_text())
    (project / "inventory.py").write_text(
        f"dashboards = [({host['name']!r}, {{\n"
        f"    'ssh_hostname': {host['address']!r}, 'ssh_user': 'root',\n"
        f"    'ssh_key': {lab.state['ssh_key']!r},\n"
        "    'ssh_strict_host_key_checking': 'no', 'ssh_known_hosts_file': '/dev/null',\n"
        f"    'flower_fqdn': {host['fqdn']!r},\n"
        "})]\n"
    )
    (project / "group_data" / "all.py").write_text(
        "# the consumer's own keys\n"
        "nginx_user = 'www-data'\n"
        "fqdn = 'app.example.com'\n"
        "# flowerbed: only what has no safe default\n"
        f"flower_allowed_sources = {lab.state['allowed_sources']!r}\n"
        f"flower_admin_sources = ['{lab.state['bridge']['address']}/32']\n"
        "# this lab: PyPI only through its proxy, certificates from its ACME CA\n"
        f"flower_egress_proxy = {lab.state['proxy']!r}\n"
        f"flower_tls_acme_directory = {lab.state['acme']['directory']!r}\n"
        "flower_tls_acme_ca_bundle = 'certs/acme-ca.pem'\n"
    )
    (project / "deploy.py").write_text(CONSUMER_DEPLOY)


def consumer_deploy(lab: Lab, python: Path, project: Path) -> DeployResult:
    args = [str(python), "-m", "pyinfra", "inventory.py", "deploy.py", "-y", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PYINFRA_PROGRESS": "off", "FLOWERBED_ENV_FILE": lab.state["secrets_file"]}
    started = time.monotonic()
    done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    return DeployResult(args, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def test_a_consumer_project_deploys_flowerbed_from_its_wheel(lab: Lab, fresh_host, tmp_path):
    python = consumer_venv(tmp_path)
    project = tmp_path / "consumer"
    imported = subprocess.run(
        [python, "-c", "import flowerbed.resources as r; print(r.__file__, r.TEMPLATES)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert imported.count(str(tmp_path / "venv" / "lib")) == 2, imported

    host = fresh_host()
    consumer_project(lab, project, host)
    first = consumer_deploy(lab, python, project)
    assert first.ok, first.explain()
    print(f"consumer's first deploy: {first.seconds:.1f} s")

    user, password = lab.dashboard_login
    root = lab.state["acme"]["root"]
    assert https_get(host["fqdn"], "/", ca_bundle=root, login=None).status == 401
    assert https_get(host["fqdn"], "/", ca_bundle=root, login=(user, password)).status == 200
    own = lab.ssh(host["name"], ["cat", OWN_FILE], check=True).stdout
    assert own == "user www-data; # for app.example.com\n", "the consumer's own keys, its own"

    second = consumer_deploy(lab, python, project)
    assert second.ok and second.totals["success"] == 0, second.totals
