"""Flower beside the host's other nginx sites (issue 18), on a fresh host of its own.

Before flowerbed, the host serves two sites: the operator's edited Debian default site
(port 80's default server) and an app on 443 with its own certificate. After the deploy both
answer with the same bytes and the same certificate, their files are untouched, flowerbed's
servers claim no default, Flower answers a login on its own name, and a second run changes
nothing. The firewall asks first: it would open 443, the app's port too, only to
flower_allowed_sources, so a deploy that does not agree (flower_firewall_close_listeners) is
refused.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import ssl
import subprocess
import time

import pytest
from conftest import Lab
from deploy_helpers import run_deploy

pytestmark = pytest.mark.lab

APP = "app.flowerbed.test"
# the app's port 443 is then open to flower_allowed_sources alone (the lab machine among them)
AGREED = {"flower_firewall_close_listeners": ["443/tcp"]}
SITE_FILES = ["/etc/nginx/sites-available/default", "/etc/nginx/sites-available/app",
              "/var/www/site-a/index.html", "/etc/ssl/app.crt"]  # fmt: skip
DEFAULT_SITE = """server {
    listen 80 default_server;
    listen [::]:80 default_server;
    root /var/www/site-a;
    index index.html;
}
"""
APP_SITE = """server {
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name %s;
    ssl_certificate /etc/ssl/app.crt;
    ssl_certificate_key /etc/ssl/app.key;
    location / { return 200 "the app %s\\n"; }
}
"""


@pytest.fixture(scope="module")
def busy_host(lab: Lab, module_hosts) -> dict:
    host = module_hosts(prefix="bs")
    name, token = host["name"], secrets.token_hex(8)
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
    lab.ssh(name, f"{install} nginx openssl", timeout=600, check=True)
    site_a = f"site A {token}\n"
    steps = [
        f"mkdir -p /var/www/site-a && printf %s '{site_a}' > /var/www/site-a/index.html",
        f"printf %s '{DEFAULT_SITE}' > /etc/nginx/sites-available/default",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
        f"-subj /CN={APP} -addext subjectAltName=DNS:{APP} "
        "-keyout /etc/ssl/app.key -out /etc/ssl/app.crt 2>/dev/null",
        f"printf %s '{APP_SITE % (APP, token)}' > /etc/nginx/sites-available/app",
        "ln -s /etc/nginx/sites-available/app /etc/nginx/sites-enabled/app",
        "nginx -t -q && systemctl reload nginx",
    ]
    for step in steps:
        lab.ssh(name, step, check=True)
    deadline = time.monotonic() + 30  # a reload's new workers take over shortly after it returns
    while http_body(host["address"], host["address"]) != site_a.encode():
        assert time.monotonic() < deadline, "the host's own site never answered"
        time.sleep(0.5)
    return {**host, "site_a": site_a, "app": f"the app {token}\n"}


def http_body(address: str, host_header: str) -> bytes:
    return subprocess.run(
        ["curl", "-s", "-H", f"Host: {host_header}", f"http://{address}/"],
        capture_output=True, timeout=20, check=True,
    ).stdout  # fmt: skip


def https_app(address: str) -> tuple[bytes, str]:
    """The app's body and its certificate's SHA-256, asked for by its name (SNI)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=APP) as tls,
    ):
        certificate = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {APP}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[1], certificate


def file_digests(lab: Lab, name: str) -> str:
    return lab.ssh(name, ["sha256sum", *SITE_FILES], check=True).stdout


def answers(busy: dict) -> dict:
    return {
        "site A by address": http_body(busy["address"], busy["address"]),
        "site A by another name": http_body(busy["address"], "nobody.example"),
        "the app and its certificate": https_app(busy["address"]),
    }


def test_other_sites_answer_the_same_bytes_and_flower_works(lab: Lab, busy_host: dict):
    name = busy_host["name"]
    before, files = answers(busy_host), file_digests(lab, name)
    assert before["site A by address"] == busy_host["site_a"].encode()
    assert before["the app and its certificate"][0] == busy_host["app"].encode()
    refused = run_deploy(name)
    assert not refused.ok and "another nginx site listens on 443 too" in refused.log, (
        "the firewall would open 443 only to flower_allowed_sources: the app is asked about"
    )
    assert answers(busy_host) == before
    deployed = run_deploy(name, AGREED)
    assert deployed.ok, deployed.explain()
    after = answers(busy_host)
    bodies = [after["site A by address"], after["site A by another name"],
              after["the app and its certificate"][0]]  # fmt: skip
    print(f"compared: {sum(map(len, bodies))} bytes of the other sites' answers, the app's "
          f"certificate and {len(SITE_FILES)} of their files: unchanged")  # fmt: skip
    assert after == before
    assert file_digests(lab, name) == files
    enabled = lab.ssh(name, ["ls", "/etc/nginx/sites-enabled"], check=True).stdout.split()
    assert sorted(enabled) == ["app", "default"], "the edited default site stays enabled"
    conf = lab.ssh(name, ["cat", "/etc/nginx/conf.d/flowerbed.conf",
                          "/etc/nginx/conf.d/flowerbed-http.conf"], check=True).stdout  # fmt: skip
    assert "default_server" not in conf
    fqdn = busy_host["fqdn"]
    assert redirects(busy_host), "port 80 redirects flowerbed's own name to HTTPS"
    assert lab.dashboard_status(fqdn, busy_host["address"]) == "200", (
        "Flower answers a login on its own name"
    )
    again = run_deploy(name, AGREED)
    assert again.ok and again.totals["success"] == 0, again.explain()


def redirects(busy: dict) -> bool:
    location = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
         "-H", f"Host: {busy['fqdn']}", f"http://{busy['address']}/x"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip
    return location == f"301 https://{busy['fqdn']}/x"
