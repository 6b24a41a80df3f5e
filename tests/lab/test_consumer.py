"""A consumer's own pyinfra project deploys flowerbed from its wheel: pip install + one call.

The wheel is built from this repository's tracked files (tests/package_helpers.py) and
installed into a fresh venv outside the repository. The venv has no network: its
dependencies (pyinfra, jinja2, ...) come from the repo venv's site-packages through a .pth
file, appended after the venv's own site-packages, so `flowerbed` itself can only come from
the wheel (asserted). The consumer project, in a temporary directory, has its own inventory
for a fresh lab host, group data with only the keys that have no safe default (plus this
lab's proxy, ACME directory and CA, and the failed tasks its demo app makes on purpose), a key
of its own that flowerbed once used (`fqdn`), and a deploy.py with an operation of its own
using its own `nginx_user` next to deploy_flowerbed(). Then it runs the verify run from the
wheel as the README shows (`pyinfra inventory/prod.py flowerbed.runs.verify -y`, with the
`pyinfra` command pip would have put in the venv).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, Lab
from deploy_helpers import DeployResult
from doc_commands import documented
from package_helpers import build_wheel, missing_from_wheel, venv_with_repo_dependencies

from flowerbed.probe import https_get

pytestmark = pytest.mark.lab

OWN_FILE = "/etc/myapp/nginx-user.conf"
VERIFY_FROM_THE_WHEEL = "pyinfra inventory/prod.py flowerbed.runs.verify -y"
PYINFRA_SCRIPT = "import sys\n\nfrom pyinfra_cli.main import main\n\nsys.exit(main())\n"

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
    python, _ = venv_with_repo_dependencies(work / "venv")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
               "--no-index", "--quiet", wheel]  # fmt: skip
    subprocess.run(install, check=True, timeout=120, capture_output=True)
    return python


def consumer_project(lab: Lab, project: Path, host: dict) -> None:
    (project / "group_data").mkdir(parents=True)
    (project / "certs").mkdir()
    # the lab's ACME CA bundle as the consumer keeps it: a path relative to the project
    (project / "certs" / "acme-ca.pem").write_text(Path(lab.state["acme"]["ca_bundle"]).read_text())
    (project / "inventory").mkdir()
    (project / "inventory" / "prod.py").write_text(
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
        "# the verify run trusts the lab's ACME root; the demo app fails tasks on purpose\n"
        f"flower_verify_ca_bundle = {lab.state['acme']['root']!r}\n"
        "flower_verify_max_failed_tasks = 1000\n"
    )
    (project / "deploy.py").write_text(CONSUMER_DEPLOY)


def consumer_deploy(lab: Lab, python: Path, project: Path) -> DeployResult:
    args = [str(python), "-m", "pyinfra", "inventory/prod.py", "deploy.py", "-y", "--json"]
    started = time.monotonic()
    done = subprocess.run(
        args, cwd=project, env=consumer_env(lab), capture_output=True, text=True, timeout=900
    )
    return DeployResult(args, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def consumer_env(lab: Lab, venv: Path | None = None) -> dict[str, str]:
    """The consumer's shell: no trace of the repo venv; with `venv`, that one on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PYINFRA_PROGRESS": "off", "FLOWERBED_ENV_FILE": lab.state["secrets_file"]}
    if venv:
        path = [p for p in env["PATH"].split(":") if not p.startswith(str(REPO))]
        env |= {"PATH": ":".join([str(venv / "bin"), *path]), "VIRTUAL_ENV": str(venv)}
    return env


def pyinfra_command(python: Path) -> None:
    """The `pyinfra` command pip writes into a venv when it installs pyinfra (here its
    dependencies come from the repo venv, without their scripts)."""
    script = python.parent / "pyinfra"
    script.write_text(f"#!{python}\n{PYINFRA_SCRIPT}")
    script.chmod(0o755)


def verify_from_the_wheel(lab: Lab, python: Path, project: Path) -> subprocess.CompletedProcess:
    """The README's command for a project with only the wheel, as written."""
    pyinfra_command(python)
    return subprocess.run(
        ["bash", "-c", documented(VERIFY_FROM_THE_WHEEL).text], cwd=project,
        env=consumer_env(lab, python.parent.parent), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


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

    verified = verify_from_the_wheel(lab, python, project)
    output = verified.stdout + verified.stderr
    assert verified.returncode == 0, output
    (row,) = [line for line in verified.stdout.splitlines() if line.startswith(f"{host['name']} ")]
    assert row.split()[-1] == "OK" and "!" not in row, output
    assert not (project / "verify.py").exists(), "the run came from the wheel, not a file"
