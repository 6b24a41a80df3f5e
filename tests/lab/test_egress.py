"""Hosts behind a TLS-intercepting egress proxy, with a private PyPI mirror.

One fresh host for the module. Its egress proxy is lab/intercepting_proxy.py: every HTTPS
connection through it is decrypted and re-signed by a CA this test makes, as corporate
proxies do, so nothing that does not trust that CA gets through. Its PyPI is
lab/pip_index.py: a simple index of the locked wheels, over HTTPS with a certificate from the
same CA (a private mirror behind the same proxy). The deploy gets:

    flower_egress_proxy = <the intercepting proxy>
    flower_egress_ca_certificates = [<its CA>]
    flower_pip_index_url = <the mirror>/simple/

Before the deploy the host refuses the proxy's certificates (apt and Python); after it, apt
over HTTPS, the venv's pip (to the mirror and to pypi.org) and Python all go through, the
proxy saw each of them decrypted, and the venv's every package came from the mirror.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Lab
from deploy_helpers import DeployResult, run_deploy

pytestmark = pytest.mark.lab

LOCK = REPO / "flowerbed" / "locks" / "flower-2.2.0.txt"
TRUSTED_CA = "/usr/local/share/ca-certificates/flowerbed/ca.crt"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
VENV = "/opt/flower/venv"
PYPI = "https://pypi.org/simple/"


@dataclass
class Egress:
    proxy_url: str
    ca: Path
    proxy_log: Path
    index_url: str
    index_log: Path

    @property
    def data(self) -> dict:
        """The deploy's data for a host behind this proxy, using this mirror."""
        return {
            "flower_egress_proxy": self.proxy_url,
            "flower_egress_ca_certificates": [str(self.ca)],
            "flower_pip_index_url": self.index_url,
        }

    def connects(self) -> list[dict]:
        return [json.loads(line) for line in self.proxy_log.read_text().splitlines()]

    def intercepted(self, host: str) -> bool:
        return any(c["host"] == host and c["intercepted"] for c in self.connects())

    def refused(self, host: str) -> bool:
        return any(c["host"] == host and not c["intercepted"] for c in self.connects())


def start(command: list[str], timeout: float = 300) -> tuple[subprocess.Popen, dict]:
    """A lab server started by this test; returns it and the JSON line it prints when ready."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # pip_index.py downloads first: bounded by its own timeout
    assert line, f"{command[1]} exited before listening ({process.wait(timeout)})"
    return process, json.loads(line)


@pytest.fixture(scope="module")
def egress(lab: Lab, tmp_path_factory) -> Egress:
    work = tmp_path_factory.mktemp("egress")
    bridge = lab.state["bridge"]["address"]
    upstream = lab.state["proxy"].removeprefix("http://")
    ca_dir, index_dir = work / "ca", work / "index"
    python = sys.executable
    proxy, listening = start(
        [python, "lab/intercepting_proxy.py", "--ca-dir", str(ca_dir), "--listen", bridge,
         "--upstream", upstream, "--direct", bridge, "--log", str(work / "proxy.log")]
    )  # fmt: skip
    index = None
    try:
        index, serving = start(
            [python, "lab/pip_index.py", "--lock", str(LOCK), "--dir", str(index_dir),
             "--ca-dir", str(ca_dir), "--listen", bridge]
        )  # fmt: skip
        yield Egress(
            proxy_url=f"http://{bridge}:{listening['port']}",
            ca=Path(listening["ca"]),
            proxy_log=work / "proxy.log",
            index_url=serving["url"],
            index_log=index_dir / "requests.log",
        )
    finally:
        for process in (index, proxy):
            if process:
                process.terminate()
                process.wait(10)


def apt_fetch(lab: Lab, name: str, *options: str):
    """apt's own HTTPS transport fetching the distribution's Release file."""
    url = "https://deb.debian.org/debian/dists/$(. /etc/os-release; echo $VERSION_CODENAME)/Release"
    helper = "/usr/lib/apt/apt-helper"
    return lab.ssh(name, f"{helper} {' '.join(options)} download-file {url} /tmp/Release")


def python_fetch(lab: Lab, name: str, proxy: str):
    """The system's Python (the system CA bundle) through the proxy."""
    code = f"import urllib.request; urllib.request.urlopen({PYPI + 'six/'!r}, timeout=30)"
    return lab.ssh(name, f"https_proxy={proxy} python3 -c {json.dumps(code)}")


@dataclass
class Deployed:
    name: str
    result: DeployResult
    apt_before: subprocess.CompletedProcess
    python_before: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def behind_proxy(lab: Lab, module_hosts, egress: Egress) -> Deployed:
    name = module_hosts()["name"]
    apt_before = apt_fetch(lab, name, "-o", f"Acquire::https::Proxy={egress.proxy_url}")
    python_before = python_fetch(lab, name, egress.proxy_url)
    result = run_deploy([name], egress.data)
    assert result.ok, result.explain()
    print(f"deploy behind the intercepting proxy, from the mirror: {result.seconds:.1f} s")
    return Deployed(name, result, apt_before, python_before)


def test_before_the_deploy_the_host_refuses_the_proxys_certificates(behind_proxy, egress):
    assert behind_proxy.apt_before.returncode != 0, "apt refused the proxy's certificate"
    assert "certificate" in behind_proxy.apt_before.stdout + behind_proxy.apt_before.stderr
    assert behind_proxy.python_before.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in behind_proxy.python_before.stderr
    assert egress.refused("deb.debian.org") and egress.refused("pypi.org")


def test_the_ca_is_uploaded_and_in_the_system_trust_store(lab: Lab, behind_proxy, egress):
    name = behind_proxy.name
    stat = lab.ssh(name, ["stat", "-c", "%a %U:%G", TRUSTED_CA], check=True).stdout.strip()
    assert stat == "644 root:root"
    uploaded = lab.ssh(name, ["cat", TRUSTED_CA], check=True).stdout
    assert uploaded == egress.ca.read_text()
    body = "".join(egress.ca.read_text().splitlines()[1:-1])
    bundle = lab.ssh(name, ["cat", SYSTEM_BUNDLE], check=True).stdout
    assert body in "".join(bundle.splitlines()), "update-ca-certificates added it"


def test_apt_trusts_the_ca_over_https_through_the_proxy(lab: Lab, behind_proxy, egress):
    fetched = apt_fetch(lab, behind_proxy.name)  # the deploy's apt proxy configuration
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert egress.intercepted("deb.debian.org"), "apt's HTTPS went through the interception"


def test_pip_trusts_the_ca_and_the_venv_came_from_the_mirror(lab: Lab, behind_proxy, egress):
    mirror = egress.index_url.split("//")[1].split("/")[0].rsplit(":", 1)[0]
    assert egress.intercepted(mirror), "pip reached the mirror through the interception"
    listed = lab.ssh(behind_proxy.name, [f"{VENV}/bin/pip", "list", "--format=json"], check=True)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    installed -= {"pip", "setuptools", "wheel"}
    served = [p for p in egress.index_log.read_text().splitlines() if p.startswith("/files/")]
    fetched = {Path(p).name.split("-")[0].lower().replace("_", "-") for p in served}
    assert "flower" in installed and installed <= fetched, installed - fetched
    # the venv's pip, as configured (proxy, CA bundle), also reaches pypi.org itself
    download = [f"{VENV}/bin/pip", "download", "--no-deps", "-d", "/tmp/pip-check"]
    pypi = lab.ssh(behind_proxy.name, [*download, "--index-url", PYPI, "six==1.17.0"], timeout=120)
    assert pypi.returncode == 0, pypi.stdout + pypi.stderr
    assert egress.intercepted("pypi.org") and egress.intercepted("files.pythonhosted.org")


def test_the_systems_python_trusts_the_ca_after_the_deploy(lab: Lab, behind_proxy, egress):
    after = python_fetch(lab, behind_proxy.name, egress.proxy_url)
    assert after.returncode == 0, after.stderr


def test_a_second_run_behind_the_proxy_changes_nothing(behind_proxy, egress):
    again = run_deploy([behind_proxy.name], egress.data)
    assert again.ok and again.totals["success"] == 0, again.explain()
    print(f"no-op behind the proxy: {again.seconds:.1f} s")
