"""The README's "Deploying to your own servers", followed as a new user would, against a fresh
lab host booted to stand in for "my server".

In a copy of the checkout (its files git does not ignore, and the venv `make setup` made), the
README's Steps block runs command by command, as written, in bash with the venv first on PATH
(`source .venv/bin/activate`):

- `cp .env.example .env && chmod 600 .env`, then the two secrets filled in as a user would: the
  lab's broker URL and a login of the test's own;
- `cp inventory/prod.py inventory/mine.py`, then `$EDITOR inventory/mine.py` with $EDITOR a
  script that fills `dashboards` with the host, as the README's example shows it: `ssh_user
  "deploy"` with `_sudo` (the host has that user with passwordless sudo, and root's SSH login
  refused: tests/lab/test_sudo.py's way), `flower_fqdn` and the two required keys;
- the preview, the deploy (Enter pressed at pyinfra's prompt), verify.py, and the last deploy
  "for real".

The one change to the commands: the value of `--data flower_tls_acme_directory=` is the lab's
ACME CA's directory instead of `letsencrypt-staging`, which the lab cannot reach. Besides the
README's data, the host's entry holds what the lab needs in place of the internet: its address
and the lab's SSH key, the lab's proxy to PyPI, the lab's ACME CA for the deploy "for real"
(the same CA as the staging stand-in, so that last deploy is the second run and must change
nothing: the switch from staging to production itself is not exercised), its root for
verify.py's HTTPS checks (a real CA is in the system's store) and the failed tasks the lab's
demo app makes on purpose. What a client sees is asserted over HTTPS with the lab's root as the
only trusted CA: 200 with the login, 401 without.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Lab, run
from deploy_helpers import grand_total, https_status
from doc_commands import documented
from package_helpers import checkout_sources
from test_sudo import make_deploy_user, ssh_as

pytestmark = pytest.mark.lab

# The README's Steps block, in order (tests/unit/test_doc_commands_units.py checks it holds these).
STAGING = "--data flower_tls_acme_directory=letsencrypt-staging"
ENV_FILE = "cp .env.example .env && chmod 600 .env"
INVENTORY = "cp inventory/prod.py inventory/mine.py"
EDIT = "$EDITOR inventory/mine.py"
PREVIEW = (
    "pyinfra inventory/mine.py deploy.py --dry --diff "
    "--data flower_tls_acme_directory=letsencrypt-staging"
)
DEPLOY = "pyinfra inventory/mine.py deploy.py --data flower_tls_acme_directory=letsencrypt-staging"
VERIFY = "pyinfra inventory/mine.py verify.py -y"
FOR_REAL = "pyinfra inventory/mine.py deploy.py"
STEPS = (ENV_FILE, INVENTORY, EDIT, PREVIEW, DEPLOY, VERIFY, FOR_REAL)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

EDITOR = """\
#!{python}
# $EDITOR for the test: `dashboards = []` becomes the host, as the README's example shows it
import sys
from pathlib import Path

path = Path(sys.argv[1])
text = path.read_text()
assert text.count("\\ndashboards = []\\n") == 1, "inventory/prod.py holds no host until edited"
path.write_text(text.replace("\\ndashboards = []\\n", "\\ndashboards = " + {entry!r} + "\\n"))
"""


def host_entry(lab: Lab, host: dict) -> str:
    """`dashboards` as a user writes it for this host: the README's data, then the lab's."""
    data = {
        "ssh_user": "deploy",
        "_sudo": True,
        "flower_fqdn": host["fqdn"],
        "flower_allowed_sources": lab.state["allowed_sources"],  # the two required keys
        "flower_admin_sources": [f"{lab.state['bridge']['address']}/32"],
        # the lab in place of the internet (see the module's docstring)
        "ssh_hostname": host["address"],
        "ssh_key": lab.state["ssh_key"],
        "ssh_strict_host_key_checking": "no",
        "ssh_known_hosts_file": "/dev/null",
        "flower_egress_proxy": lab.state["proxy"],
        "flower_tls_acme_directory": lab.state["acme"]["directory"],
        "flower_tls_acme_ca_bundle": lab.state["acme"]["ca_bundle"],
        "flower_verify_ca_bundle": lab.state["acme"]["root"],
        "flower_verify_max_failed_tasks": 1000,
    }
    return repr([(host["name"], data)])


def fill_env_file(path: Path, broker_url: str, login: str) -> None:
    """The two secrets, typed over the samples' values as a user would."""
    text = path.read_text()
    for name, value in (("FLOWERBED_BROKER_URL", broker_url), ("FLOWERBED_DASHBOARD_USERS", login)):
        text, count = re.subn(rf"^{name}=.*$", lambda _, v=f"{name}={value}": v, text, flags=re.M)
        assert count == 1, f".env.example sets {name} once"
    path.write_text(text)


def users_shell(checkout: Path, editor: Path) -> dict[str, str]:
    """A new user's shell after `source .venv/bin/activate`: no flowerbed variable of the
    suite's (the secrets come from .env), no outer make."""
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VIRTUAL_ENV", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in outer and not k.startswith("FLOWERBED")}
    venv = checkout / ".venv"
    return env | {
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}:{env['PATH']}",
        "EDITOR": str(editor),
        "PYINFRA_PROGRESS": "off",
    }


class Steps:
    """The README's commands, each run as written in the checkout's copy."""

    def __init__(self, checkout: Path, env: dict[str, str], acme_directory: str):
        self.checkout, self.env, self.acme_directory = checkout, env, acme_directory

    def run(self, command: str, answer: str = "") -> subprocess.CompletedProcess:
        text = documented(command).text
        if STAGING in text:  # the one change to the commands
            text = text.replace(STAGING, f"--data flower_tls_acme_directory={self.acme_directory}")
        done = subprocess.run(
            ["bash", "-c", text], cwd=self.checkout, env=self.env, input=answer,
            capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        done.stdout, done.stderr = ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
        return done


def status(lab: Lab, host: dict, login: str | None) -> str:
    """What curl gets from https://<fqdn>/ at the host, trusting only the lab's root."""
    fqdn = host["fqdn"]
    resolve = f"{fqdn}:443:{host['address']}"
    return https_status(f"https://{fqdn}/", lab.state["acme"]["root"], login, resolve)


def test_the_readme_steps_deploy_a_fresh_host_as_my_server(lab: Lab, fresh_host, tmp_path):
    host = fresh_host()
    make_deploy_user(lab, host["name"])
    assert run(ssh_as(lab, host, "root", "true")).returncode != 0, "root cannot log in"
    checkout = checkout_sources(tmp_path / "flowerbed", prefixes=("",))
    (checkout / ".venv").symlink_to(REPO / ".venv")  # what `make setup` made
    editor = tmp_path / "editor"
    editor.write_text(EDITOR.format(python=sys.executable, entry=host_entry(lab, host)))
    editor.chmod(0o755)
    steps = Steps(checkout, users_shell(checkout, editor), lab.state["acme"]["directory"])
    login = f"alice:{secrets.token_urlsafe(18)}"

    for command in (ENV_FILE, INVENTORY, EDIT):
        done = steps.run(command)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    assert (checkout / ".env").stat().st_mode & 0o777 == 0o600
    fill_env_file(checkout / ".env", lab.secrets["FLOWERBED_BROKER_URL"], login)

    preview = steps.run(PREVIEW)
    output = preview.stdout + preview.stderr
    assert preview.returncode == 0, output
    assert "Detected changes" in output and "Beginning operation run" not in output, output
    untouched = run(ssh_as(lab, host, "deploy", "sudo -n test -e /etc/nginx/flowerbed.htpasswd"))
    assert untouched.returncode == 1, "the preview wrote no login file"

    deployed = steps.run(DEPLOY, answer="\n")  # Enter at "Press enter to execute..."
    assert deployed.returncode == 0, deployed.stderr[-6000:]
    first = grand_total(deployed.stdout + deployed.stderr)
    assert first["success"] != "-" and first["error"] == "-", first
    print(f"the README's deploy: {first}")

    # (statuses in variables: an assertion's message never shows the login)
    answers = [status(lab, host, login), status(lab, host, None),
               status(lab, host, f"alice:{secrets.token_urlsafe(18)}")]  # fmt: skip
    assert answers == ["200", "401", "401"], "the login, none, a wrong password, through nginx"

    verified = steps.run(VERIFY)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-4000:]
    (row,) = [line for line in verified.stdout.splitlines() if line.startswith(f"{host['name']} ")]
    assert row.split()[-1] == "OK", verified.stdout

    again = steps.run(FOR_REAL, answer="\n")
    assert again.returncode == 0, again.stderr[-6000:]
    second = grand_total(again.stdout + again.stderr)
    assert second["success"] == "-" and second["error"] == "-", f"changed: {second}"
    after = status(lab, host, login)
    assert after == "200", "the login, after the last deploy"
