"""The setup guide's configuration (issue 18): Flower under /flower/ inside the app's own nginx
site, with the app's certificate, on a fresh host of its own.

Before flowerbed the host serves an app on its name over HTTPS (a certificate from a CA of this
test's own) and redirects port 80. Then, in turn:
- flowerbed without the include line: the deploy prints the line to add, the app is untouched,
  and verify.py says the line is missing;
- with flower_existing_site_include: the line is added (one marked line, nothing else of the
  file changes), Flower answers under /flower/ with the guard, the throttles, the logins and the
  /metrics policy, the app answers the same bytes, a second run changes nothing, verify.py is
  green; an unknown name costs what a login's wrong password does (the decoy, within 0.5-2); a
  real browser uses the dashboard and a page elsewhere cannot drive it;
- the mode off (Flower on a name of its own): the app's file is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Lab
from deploy_helpers import run_deploy
from labkit.services import publish_dns
from test_browser import (  # noqa: F401 (fixtures, used by name)
    WORKER,
    api,
    chromium_in_namespace,
    elsewhere,
    hostile_page_changes_nothing,
    login,
    page,
    pool_processes,
    screenshot,
    sync_api,
    wait_until_started,
)
from test_login_ban import wrong_password_times
from test_verify import verify

pytestmark = pytest.mark.lab

APP_FILE = "/etc/nginx/sites-available/app"
EVERYONE = ["0.0.0.0/0", "::/0"]
IN_SITE = {
    "flower_existing_site": APP_FILE,
    "flower_url_prefix": "flower",
    # 443 and 80 are the app's: open to its audience (Flower's path admits the allowed alone)
    "flower_firewall_openings": [
        {"port": 443, "sources": EVERYONE, "purpose": "the app"},
        {"port": 80, "sources": EVERYONE, "purpose": "the app, redirect"},
    ],
}
ADDED = {**IN_SITE, "flower_existing_site_include": True}
APP_SITE = """server {
    listen 80;
    listen [::]:80;
    server_name %(fqdn)s;
    return 301 https://$host$request_uri;
}

server {
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name %(fqdn)s;
    ssl_certificate /etc/ssl/app.crt;
    ssl_certificate_key /etc/ssl/app.key;
    location / { return 200 "the app %(token)s\\n"; }
    location /api/ { return 200 "the app API %(token)s\\n"; }
}"""  # (no newline at the end: the file must come back byte for byte all the same)
APP_PATHS = ("/", "/api/x", "/flowers")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def app_certificate(directory: Path, fqdn: str) -> tuple[Path, str, str]:
    """A CA of the test's own (its file for verify.py) and the app's certificate and key."""
    names = ("ca.key", "ca.pem", "app.key", "app.csr", "app.crt")
    ca_key, ca, key, request, cert = (directory / n for n in names)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "30", "-subj", "/CN=flowerbed test app CA",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl("req", *ec, "-subj", f"/CN={fqdn}", "-keyout", str(key), "-out", str(request))
    extensions = directory / "san.ext"
    extensions.write_text(f"subjectAltName=DNS:{fqdn}\n")
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "90", "-extfile", str(extensions),
            "-out", str(cert))  # fmt: skip
    return ca, cert.read_text(), key.read_text()


@pytest.fixture(scope="module")
def app_host(lab: Lab, module_hosts, tmp_path_factory) -> dict:
    host = module_hosts(prefix="is")
    name, fqdn, token = host["name"], host["fqdn"], secrets.token_hex(8)
    ca, cert, key = app_certificate(tmp_path_factory.mktemp("app-ca"), fqdn)
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
    lab.ssh(name, f"{install} nginx", timeout=600, check=True)
    for step in (
        f"printf %s '{cert}' > /etc/ssl/app.crt",
        f"umask 077 && printf %s '{key}' > /etc/ssl/app.key",
        f"printf %s '{APP_SITE % {'fqdn': fqdn, 'token': token}}' > {APP_FILE}",
        f"ln -s {APP_FILE} /etc/nginx/sites-enabled/app",
        "nginx -t -q && systemctl reload nginx",
    ):
        lab.ssh(name, step, check=True)
    app = {"ca": str(ca), "token": token, "body": f"the app {token}\n".encode()}
    deadline = time.monotonic() + 30  # a reload's new workers take over shortly after it returns
    while https_get(host["address"], fqdn, "/")[1] != app["body"]:
        assert time.monotonic() < deadline, "the app never answered"
        time.sleep(0.5)
    return {**host, **app}


def https_get(address: str, fqdn: str, path: str, headers: str = "") -> tuple[str, bytes, str]:
    """(status line, body, the certificate's SHA-256) from `address`, asked for `fqdn` (SNI)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=fqdn) as tls,
    ):
        certificate = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        request = f"GET {path} HTTP/1.1\r\nHost: {fqdn}\r\n{headers}Connection: close\r\n\r\n"
        tls.sendall(request.encode())
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body, certificate


def app_answers(host: dict) -> dict:
    """What the app answers, by path (status, body, certificate), and its files' digests."""
    return {path: https_get(host["address"], host["fqdn"], path) for path in APP_PATHS}


def file_digest(lab: Lab, name: str) -> str:
    return lab.ssh(name, ["sha256sum", APP_FILE, "/etc/ssl/app.crt"], check=True).stdout


def curl(lab: Lab, host: dict, path: str, *args: str, namespace: str = "") -> str:
    """The status of https://<fqdn><path> (certificate checked against the app's CA)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", host["ca"],
            "--resolve", f"{host['fqdn']}:443:{host['address']}", *args,
            f"https://{host['fqdn']}{path}"]  # fmt: skip
    if namespace:
        return lab.in_namespace(namespace, argv).stdout
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def before(lab: Lab, app_host: dict) -> dict:
    """The app as it was before flowerbed: its answers and its files."""
    return {"answers": app_answers(app_host), "files": file_digest(lab, app_host["name"]),
            "text": lab.ssh(app_host["name"], ["cat", APP_FILE], check=True).stdout}  # fmt: skip


def test_without_the_include_line_the_deploy_prints_it_and_verify_misses_it(
    lab: Lab, app_host: dict, before: dict, tmp_path: Path
):
    assert before["answers"]["/"][1] == app_host["body"]
    deployed = run_deploy(app_host["name"], IN_SITE)
    assert deployed.ok, deployed.explain()
    line = "include /etc/nginx/snippets/flowerbed-flower.conf;"
    assert f"add this line to {APP_FILE}" in deployed.log and line in deployed.log
    assert file_digest(lab, app_host["name"]) == before["files"], "the app's file is untouched"
    assert app_answers(app_host) == before["answers"]
    trusted = {**IN_SITE, "flower_verify_ca_bundle": app_host["ca"]}
    checked = verify([app_host["name"]], tmp_path, trusted)
    assert checked.failing(app_host["name"]) >= {"site_include"}, checked.result.explain()
    assert line in checked.result.log or line in str(checked.summary)


def test_flower_under_the_apps_site_and_the_app_answers_the_same_bytes(
    lab: Lab, app_host: dict, before: dict, tmp_path: Path
):
    name = app_host["name"]
    deployed = run_deploy(name, ADDED)
    assert deployed.ok, deployed.explain()
    after = lab.ssh(name, ["cat", APP_FILE], check=True).stdout
    added = [line for line in after.splitlines() if line not in before["text"].splitlines()]
    assert added == ["    include /etc/nginx/snippets/flowerbed-flower.conf;  "
                     "# added by flowerbed (flower_existing_site_include)"]  # fmt: skip
    assert after.replace(added[0] + "\n", "", 1) == before["text"], "one line, nothing else"
    answers = app_answers(app_host)
    print(f"compared: {sum(len(a[1]) for a in answers.values())} bytes of the app's answers "
          f"on {len(APP_PATHS)} paths and its certificate: unchanged")  # fmt: skip
    assert answers == before["answers"]

    user, password = lab.dashboard_login
    login_args = ("-u", f"{user}:{password}")
    assert curl(lab, app_host, "/flower/workers", *login_args) == "200"
    assert curl(lab, app_host, "/flower/workers") == "401", "a login is asked for"
    assert curl(lab, app_host, "/flower/workers", *login_args, namespace="lab-allowed") == "200"
    assert curl(lab, app_host, "/flower/workers", *login_args, namespace="lab-denied") == "403"
    assert curl(lab, app_host, "/", namespace="lab-denied") == "200", "the app is everyone's"
    evil = ("-X", "POST", "-H", "Origin: https://evil.example")
    assert curl(lab, app_host, "/flower/api/task/revoke/x", *login_args, *evil) == "403"
    # /metrics: the lab machine is the monitoring source, lab-allowed is not (even logged in)
    assert curl(lab, app_host, "/flower/metrics") == "200"
    assert curl(lab, app_host, "/flower/metrics", *login_args, namespace="lab-allowed") == "403"
    again = run_deploy(name, ADDED)
    assert again.ok and again.totals["success"] == 0, again.explain()
    checked = verify([name], tmp_path, {**ADDED, "flower_verify_ca_bundle": app_host["ca"]})
    assert checked.ok, checked.result.explain()
    assert checked.summary["hosts"][name]["layers"]["site_include"]["ok"]


def test_an_unknown_name_costs_what_a_logins_wrong_password_does_in_the_site(
    lab: Lab, app_host: dict
):
    base = ["curl", "-m", "10", "--cacert", app_host["ca"], "--resolve",
            f"{app_host['fqdn']}:443:{app_host['address']}",
            f"https://{app_host['fqdn']}/flower/workers"]  # fmt: skip
    times = wrong_password_times(base, lab.dashboard_login[0])
    print(f"inside the site, wrong password, median to the first byte: known "
          f"{times['known'] * 1000:.1f} ms, unknown {times['unknown'] * 1000:.1f} ms, "
          f"ratio {times['ratio']:.2f}")  # fmt: skip
    assert 0.5 <= times["ratio"] <= 2, times
    log = lab.ssh(app_host["name"], ["cat", "/var/log/nginx/error.log"], check=True).stdout
    assert 'user "flowerbed+decoy": password mismatch' in log
    assert "was not found" not in log, "an unknown name was refused without a bcrypt check"


def test_a_browser_uses_flower_in_the_site_and_a_page_elsewhere_cannot_drive_it(
    sync_api,
    page,
    app_host: dict,
    elsewhere,
    tmp_path: Path,
):
    origin = f"https://{app_host['fqdn']}"
    site = f"{origin}/flower"
    response = page.goto(f"{site}/workers")
    assert response.status == 200, "the browser's login is accepted"
    page.get_by_text(WORKER).first.wait_for()
    screenshot(page, tmp_path, "1-workers-in-the-site")
    sent = page.request.post(f"{site}/api/task/send-task/flowerbed_demo.sleep",
                             data={"args": [300]}, headers={"Origin": origin})  # fmt: skip
    assert sent.ok, f"{sent.status} {sent.text()}"
    task_id = sent.json()["task-id"]
    try:
        wait_until_started(page, site, task_id)
        processes = pool_processes(page, site)
        hostile_page_changes_nothing(page, site, elsewhere, task_id, processes, tmp_path)
        page.goto(f"{site}/task/{task_id}")
        page.click("#task-terminate")  # the dashboard's own button, through the app's site
        sync_api.expect(page.locator("#task-terminate")).to_be_disabled()
        deadline = time.monotonic() + 60
        while api(page, site, f"/api/task/info/{task_id}")["state"] != "REVOKED":
            assert time.monotonic() < deadline, "the dashboard's own revoke did not revoke"
            time.sleep(2)
        screenshot(page, tmp_path, "2-revoked-in-the-site")
    finally:
        page.request.post(f"{site}/api/task/revoke/{task_id}", form={"terminate": "true"},
                          headers={"Origin": origin})  # fmt: skip


def test_the_mode_off_leaves_the_apps_site_as_it_was(lab: Lab, app_host: dict, before: dict):
    """Flower moves to a name of its own: the app's file comes back byte for byte."""
    name, own = app_host["name"], f"flower-{app_host['fqdn']}"
    publish_dns([{"fqdn": own, "address": app_host["address"]}])  # for the ACME challenge
    # the app's 443 then admits flower_allowed_sources alone: agreed
    moved = run_deploy(name, {"flower_fqdn": own, "flower_firewall_close_listeners": ["443/tcp"]})
    assert moved.ok, moved.explain()
    assert file_digest(lab, name) == before["files"]
    assert lab.ssh(name, ["cat", APP_FILE], check=True).stdout == before["text"]
    leftovers = lab.ssh(name, "grep -rlF 'added by flowerbed' /etc/nginx; ls /etc/nginx/snippets")
    assert "flowerbed" not in leftovers.stdout, leftovers.stdout
    assert app_answers(app_host) == before["answers"]
    assert lab.dashboard_status(own, app_host["address"]) == "200", "Flower on its own name"
