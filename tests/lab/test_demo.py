"""`make demo`, the README's first command, run as written: it brings the lab up (a running lab
is kept), deploys h1..h3 with inventory/lab.py and prints each dashboard's URL, the login and
the CA to trust. What it prints is what a client uses: each URL answers 200 over HTTPS with
that login and only that CA, 401 without the login. A second `make demo` changes nothing.

It deploys the shared hosts with the lab's data: tests/run_suite.py runs it alone. `make demo`
boots h1..h3 on trixie (`make lab-up`): under `make test DISTRO=mixed` that rebuilds h2 from
bookworm, so the fixture puts the shared hosts back on the distros they had, deployed.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, Lab, is_base_host, lab_cli
from deploy_helpers import grand_total, https_status, run_deploy
from doc_commands import documented

pytestmark = pytest.mark.lab

DEMO = "make demo"
URL = re.compile(r"^\s+(https://\S+/)\s+(.*)$", re.MULTILINE)
LOGIN = re.compile(r"^\s+login:\s+(\S+) / (\S+)\s", re.MULTILINE)
CA = re.compile(r"^\s+CA:\s+(\S+)\s", re.MULTILINE)


# Where the lab lives (lab/labkit/config.py): a user's shell has these as the suite's has them.
LAB_PLACE = {"FLOWERBED_LAB_DIR", "FLOWERBED_LAB_CACHE", "FLOWERBED_LAB_MIRROR"}


def make_demo() -> subprocess.CompletedProcess:
    """The README's command in bash from the repository, as typed in a shell of its own: not
    a sub-make of `make test`, without its DISTRO, and without the suite's FLOWERBED_*
    variables (a secret the demo needs comes from the lab's files, not from the suite)."""
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DISTRO", "HOSTS"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in outer and (not k.startswith("FLOWERBED") or k in LAB_PLACE)
    }
    return subprocess.run(
        ["bash", "-c", documented(DEMO).text], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=1800,
    )  # fmt: skip


def shown(done: subprocess.CompletedProcess, secret: str) -> str:
    """The run's output for an assertion's message, without the lab's password."""
    text = f"exit {done.returncode}\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    return text.replace(secret, "<password>") if secret else text


@pytest.fixture
def shared_hosts_put_back(lab: Lab):
    """The shared hosts' distros before; after, any `make demo` changed is rebuilt on its
    distro and deployed again, as the tests after this one expect them."""
    before = {h["name"]: h["distro"] for h in lab.base_hosts}
    yield
    lab.state = Lab.load().state
    after = {h["name"]: h["distro"] for h in lab.base_hosts}
    if after != before:
        for name, distro in sorted(before.items()):  # the releases they had, set or not
            if after.get(name) != distro:
                lab_cli("host-up", name, "--distro", distro)
        lab.state = Lab.load().state
        deployed = run_deploy(sorted(before))
        assert deployed.ok, deployed.explain()


def test_make_demo_prints_a_url_and_login_that_answer_and_a_second_run_changes_nothing(
    lab: Lab, shared_hosts_put_back
):
    others = [h["name"] for h in Lab.load().state["hosts"] if not is_base_host(h["name"])]
    assert not others, f"make demo deploys every lab host: {others} are another test's"
    password = lab.dashboard_login[1]
    first = make_demo()
    assert first.returncode == 0, shown(first, password)
    print(f"first make demo: {grand_total(first.stdout + first.stderr)}")
    urls = URL.findall(first.stdout)
    (login,) = LOGIN.findall(first.stdout)
    (ca,) = CA.findall(first.stdout)
    names = sorted(h["fqdn"] for h in Lab.load().base_hosts)
    assert sorted(url.split("/")[2] for url, _ in urls) == names, shown(first, password)
    printed_is_the_labs = login == lab.dashboard_login  # compared here: never shown
    assert printed_is_the_labs, "the login printed is the lab's (.lab/lab.env)"
    assert Path(ca).resolve() == Path(lab.state["acme"]["root"]).resolve(), "the lab's root CA"
    for url, said in urls:
        assert said.startswith("OK, workers: "), shown(first, password)
        with_login, without = https_status(url, ca, ":".join(login)), https_status(url, ca, None)
        assert (with_login, without) == ("200", "401"), url
        api = https_status(url + "api/workers", ca, ":".join(login))
        assert api == "200", url

    second = make_demo()
    assert second.returncode == 0, shown(second, password)
    totals = grand_total(second.stdout + second.stderr)
    print(f"second make demo: {totals}")
    assert totals["success"] == "-" and totals["error"] == "-", totals
    assert totals["hosts"] != "-", "the second run deployed the hosts again"
    again = [url for url, _ in URL.findall(second.stdout)]
    assert again == [url for url, _ in urls], shown(second, password)
