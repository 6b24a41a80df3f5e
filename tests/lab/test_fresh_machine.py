"""A fresh Debian machine, as issue 20's "Done when" has it, stood in for by fresh lab hosts:

- `make test-unit` passes from a clean clone on a fresh Debian 12 host, as root, with nothing
  installed beforehand but what `.ci/run` installs (make): the target installs the rest (the
  venv from the lock, the Debian packages the unit tests run). The clone is the checkout's
  files git does not ignore, committed in a repository of their own (the wheel is built from
  git's file list). The host reaches apt and PyPI only through the lab's proxy.
- The lab's OIDC provider (lab/oidc: oidc-provider from the committed lock), installed by
  Debian 12's own npm (`npm ci`), runs on Debian's own Node.js, 12's and 13's (13's host gets
  the installed packages: one install of Debian's npm, 363 packages, per run, not two), and a
  client gets through the flow Flower's
  Okta login takes: the sign-in form (a wrong password gets it again with 401), a code at the
  dashboard's redirect, tokens for the code with the client's secret, the user's e-mail from
  userinfo. Its config is made by lab/oidc_provider.py's own `provider_config`.

The machine's CA variables (PIP_CERT, NODE_EXTRA_CA_CERTS...) go to the host's commands: this
machine reaches registries through a TLS-inspecting proxy whose CA the hosts trust
(the lab recipe); a machine on the open internet needs none of them.
"""

from __future__ import annotations

import base64
import http.cookiejar
import io
import json
import os
import re
import secrets
import shlex
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import LAB_CLI, REPO, Lab, run
from doc_commands import documented
from package_helpers import checkout_sources
from polling import until

sys.path.insert(0, str(REPO / "lab"))
import oidc_provider  # noqa: E402
from labkit.process import port_open  # noqa: E402
from labkit.services import make_acme_listener_cert  # noqa: E402

pytestmark = pytest.mark.lab

CA_VARIABLES = ("PIP_CERT", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
CLONE = "/root/flowerbed"
OIDC_DIR = "/opt/lab-oidc"
DEBIAN_NODE = {"bookworm": "18.", "trixie": "20."}  # the major each release's nodejs has
REDIRECT = f"https://h1.{oidc_provider.DOMAIN}/login"
SUMMARY = re.compile(r"^=+ (.* in [0-9.]+s.*) =+$", re.MULTILINE)
APT = "apt-get update -q && apt-get install -y -q --no-install-recommends"
NPM_HOST = "bookworm"  # the release whose npm installs the provider (see `provider_modules`)


@pytest.fixture(scope="module")
def debian_host(module_hosts):
    """A fresh host of a given release, booted once for the module."""
    booted: dict[str, dict] = {}

    def host(distro: str) -> dict:
        if distro not in booted:
            booted[distro] = module_hosts(distro)
        return booted[distro]

    return host


def host_env(lab: Lab) -> str:
    """`env NAME=value...` for a host's command: the lab's proxy, the machine's CA variables."""
    values = {"http_proxy": lab.state["proxy"], "https_proxy": lab.state["proxy"]}
    values |= {name: os.environ[name] for name in CA_VARIABLES if name in os.environ}
    return shlex.join(["env", *(f"{k}={v}" for k, v in values.items())])


def put_tree(name: str, files: dict[str, bytes | Path], dest: str) -> None:
    """Copy files (a name in the tree: its bytes, or a file or directory to add) to `dest`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for arcname, content in files.items():
            if isinstance(content, Path):
                tar.add(content, arcname=arcname)
            else:
                info = tarfile.TarInfo(arcname)
                info.size, info.mode = len(content), 0o600
                tar.addfile(info, io.BytesIO(content))
    put_archive(name, buffer.getvalue(), dest)


def put_archive(name: str, archive: bytes, dest: str) -> None:
    """Unpack a gzipped tar archive in `dest` on the host."""
    command = f"mkdir -p {shlex.quote(dest)} && tar -xz -C {shlex.quote(dest)}"
    done = subprocess.run(
        [*LAB_CLI, "ssh", name, command], input=archive, capture_output=True, timeout=300,
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()


def clean_clone(tmp_path: Path) -> Path:
    """The checkout's files git does not ignore, as the one commit of a repository."""
    clone = checkout_sources(tmp_path / "flowerbed", prefixes=("",))
    git = ["git", "-C", str(clone), "-c", "user.name=lab", "-c", "user.email=lab@flowerbed.test"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "a clean clone"]):
        run([*git, *args], check=True)
    return clone


def test_make_test_unit_passes_on_a_fresh_debian_12(lab: Lab, debian_host, tmp_path: Path):
    host = debian_host("bookworm")
    name = host["name"]
    put_tree(name, {".": clean_clone(tmp_path)}, CLONE)
    prepared = lab.ssh(name, "apt-get update -q && apt-get install -y -q make", 600)
    assert prepared.returncode == 0, prepared.stderr[-3000:]

    started = time.monotonic()
    command = documented("make test-unit").text  # the README's, as written
    tested = lab.ssh(name, f"cd {CLONE} && {host_env(lab)} {command}", timeout=1800)
    took = time.monotonic() - started
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output[-8000:]
    (summary,) = SUMMARY.findall(tested.stdout)  # pytest's last line (apt's notes go to stderr)
    outcomes = set(re.findall(r"\d+ (\w+)", summary))  # a skip hides a missing dependency
    assert "passed" in outcomes and outcomes <= {
        "passed",
        "deselected",
        "warnings",
        "warning",
        "xfailed",
    }, summary
    print(f"make test-unit on a fresh Debian 12 host: {summary} ({took:.0f} s with its installs)")


class Browser:
    """An HTTPS client that keeps cookies and never follows a redirect (the test does)."""

    class _Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    def __init__(self, ca: Path):
        context = ssl.create_default_context(cafile=str(ca))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            self._Stay(),
        )

    def open(self, url: str, form: dict | None = None, headers: dict | None = None):
        """(status, Location or "", body) of one request; a form is POSTed."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as answer:
                return answer.status, "", answer.read().decode()
        except urllib.error.HTTPError as answer:
            location = answer.headers.get("Location", "")
            location = urllib.parse.urljoin(url, location) if location else ""
            return answer.code, location, answer.read().decode()

    def follow(self, url: str, until_prefix: str, hops: int = 8) -> str:
        """Follow redirects from `url` to the first one starting with `until_prefix`."""
        for _ in range(hops):
            status, location, body = self.open(url)
            assert status in (302, 303) and location, f"{url}: {status} {body[:300]}"
            if location.startswith(until_prefix):
                return location
            url = location
        raise AssertionError(f"no redirect to {until_prefix} within {hops} hops")


def sign_in_form(browser: Browser, issuer: str, state: str) -> str:
    """The sign-in form's action, reached from the dashboards' authorization request."""
    query = urllib.parse.urlencode(
        {"client_id": oidc_provider.CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
         "scope": "openid email", "state": state}
    )  # fmt: skip
    status, form_page, _ = browser.open(f"{issuer}/v1/authorize?{query}")
    # to the provider's own sign-in; an error goes back to the dashboard's redirect instead
    assert status in (302, 303), f"the authorization request: {status}"
    assert form_page.startswith(f"{issuer}/interaction/"), form_page
    status, _, body = browser.open(form_page)
    assert status == 200 and 'name="password"' in body, f"the sign-in form: {status} {body[:300]}"
    action = re.search(r'<form method="post" action="([^"]+)"', body)
    assert action, body
    return urllib.parse.urljoin(form_page, action.group(1))


def package_files() -> dict[str, Path]:
    package = oidc_provider.PACKAGE
    return {name: package / name for name in ("package.json", "package-lock.json", "provider.mjs")}


@pytest.fixture(scope="module")
def provider_modules(lab: Lab, debian_host) -> bytes:
    """lab/oidc's node_modules as Debian 12's own npm installs them (`npm ci`, the lab's
    arguments) on the Debian 12 host, archived: Debian 13's host runs them with its own nodejs
    (plain JavaScript, no install scripts), so the run pays for one npm of 363 packages, not two."""
    name = debian_host(NPM_HOST)["name"]
    installed = lab.ssh(name, f"{APT} nodejs npm", 900)  # as `make machine-packages` does
    assert installed.returncode == 0, installed.stderr[-3000:]
    put_tree(name, package_files(), OIDC_DIR)
    npm = lab.ssh(
        name, f"cd {OIDC_DIR} && {host_env(lab)} npm {shlex.join(oidc_provider.NPM_CI)}", 900
    )
    assert npm.returncode == 0, npm.stdout[-2000:] + npm.stderr[-3000:]
    archive = subprocess.run(
        [*LAB_CLI, "ssh", name, f"tar -cz -C {OIDC_DIR} node_modules"], capture_output=True,
        timeout=300, cwd=REPO,
    )  # fmt: skip
    assert archive.returncode == 0 and archive.stdout, archive.stderr.decode()
    return archive.stdout


def start_provider(lab: Lab, name: str, address: str, tmp_path: Path) -> tuple[str, dict, Path]:
    """provider.mjs on the host under a transient unit, its node_modules in place; (issuer,
    values, CA)."""
    issuer = f"https://{address}:{oidc_provider.PORT}/oauth2"
    tls = tmp_path / "tls"
    tls.mkdir()
    make_acme_listener_cert(tls, address)
    values = {oidc_provider.CLIENT_SECRET_ENV: secrets.token_urlsafe(24)}
    values |= {
        oidc_provider.password_env(u): secrets.token_urlsafe(18)
        for u in oidc_provider.USERS.values()
    }
    config = oidc_provider.provider_config(
        issuer, address, Path(OIDC_DIR) / "tls", values, oidc_provider.USERS.values()
    )
    put_tree(name, {
        **package_files(),
        "tls/cert.pem": tls / "cert.pem",
        "tls/key.pem": tls / "key.pem",
        "config.json": json.dumps(config).encode(),
    }, OIDC_DIR)  # fmt: skip
    started = lab.ssh(name, ["systemd-run", "--unit=lab-oidc", f"--working-directory={OIDC_DIR}",
                             "/usr/bin/node", "provider.mjs", "config.json"])  # fmt: skip
    assert started.returncode == 0, started.stderr

    try:
        port = oidc_provider.PORT
        until(lambda: port_open(address, port), 60, f"the provider on {address}:{port}")
    except AssertionError as timeout:
        journal = lab.ssh(name, "journalctl -u lab-oidc --no-pager -n 40").stdout
        raise AssertionError(f"{timeout}\n{journal}") from None
    return issuer, values, tls / "ca.pem"


@pytest.mark.parametrize("distro", sorted(DEBIAN_NODE))
def test_the_oidc_provider_runs_on_debians_own_nodejs(
    lab: Lab, debian_host, provider_modules: bytes, distro, tmp_path
):
    host = debian_host(distro)
    name, address = host["name"], host["address"]
    if distro != NPM_HOST:
        installed = lab.ssh(name, f"{APT} nodejs", 900)
        assert installed.returncode == 0, installed.stderr[-3000:]
        put_archive(name, provider_modules, OIDC_DIR)
    package = lab.ssh(
        name, "dpkg-query -W -f '${Version} ${Maintainer}\n' nodejs; node --version", check=True
    )
    version, node = package.stdout.splitlines()
    assert "Debian" in version and node.startswith(f"v{DEBIAN_NODE[distro]}"), package.stdout
    print(f"{distro}: nodejs {version}, node {node}")

    issuer, values, ca = start_provider(lab, name, address, tmp_path)
    alice, mallory = (oidc_provider.USERS[role] for role in ("allowed", "refused"))
    browser = Browser(ca)
    action = sign_in_form(browser, issuer, state="s1")
    status, _, body = browser.open(
        action, {"login": alice, "password": values[oidc_provider.password_env(mallory)]}
    )
    assert status == 401 and "Wrong username or password." in body, "another user's password"

    action = sign_in_form(browser, issuer, state="s2")
    status, resume, _ = browser.open(
        action, {"login": alice, "password": values[oidc_provider.password_env(alice)]}
    )
    assert status in (302, 303), f"the sign-in: {status}"
    back = urllib.parse.urlsplit(browser.follow(resume, REDIRECT))
    answer = dict(urllib.parse.parse_qsl(back.query))
    assert answer.get("state") == "s2" and answer.get("code"), back.query

    secret = values[oidc_provider.CLIENT_SECRET_ENV]
    token_status, _, token_body = browser.open(f"{issuer}/v1/token", {
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
        "client_id": oidc_provider.CLIENT_ID, "client_secret": secret,
    })  # fmt: skip
    assert token_status == 200, token_body
    tokens = json.loads(token_body)
    claims = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[1] + "=="))
    assert (claims["iss"], claims["aud"], claims["sub"]) == (issuer, oidc_provider.CLIENT_ID, alice)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    info_status, _, info = browser.open(f"{issuer}/v1/userinfo", headers=bearer)
    assert info_status == 200 and json.loads(info)["email"] == f"{alice}@{oidc_provider.DOMAIN}", (
        info
    )
