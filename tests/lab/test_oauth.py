"""OAuth end to end: a fresh host in flower_auth_mode "oauth" against the lab's OpenID Connect
provider.

The provider (lab/oidc_provider.py: oidc-provider with Okta's routes) runs on the bridge; the
host is deployed with Flower's OktaLoginHandler pointed at it, trusting its CA through the
deploy's own flower_egress_ca_certificates. A real browser (Debian's chromium in lab-allowed, as in
test_browser.py) signs in there: `alice` is allowed by flower_auth, `mallory` is not.
"""

from __future__ import annotations

import subprocess
import time
import urllib.parse
from pathlib import Path

import lab_worker
import pytest
from conftest import LAB_CLI, REPO, Lab, lab_cli
from deploy_helpers import DeployResult, assert_no_secret, run_deploy
from test_browser import (
    CHROMIUM_FLAGS,
    TIMEOUT_MS,
    WORKER,
    chromium_in_namespace,
    elsewhere,
    pool_processes,
    screenshot,
    sync_api,
    worker_online,
)
from test_edge import curl as edge_curl

from flowerbed.settings import OKTA

pytestmark = pytest.mark.lab

FIXTURES = (chromium_in_namespace, elsewhere, sync_api)  # test_browser.py's, used here too
ENV_FILE = "/etc/flower/flower.env"


@pytest.fixture(scope="module")
def oidc(lab: Lab) -> dict:
    """The lab's provider, started for these tests (`lab.py oidc-up` is idempotent)."""
    lab_cli("oidc-up")
    lab.state = Lab.load().state
    return lab.state["oidc"]


@pytest.fixture(scope="module")
def oauth_deploy(lab: Lab, oidc: dict, module_hosts) -> tuple[str, DeployResult]:
    """A fresh host deployed in OAuth mode: (its name, the first deploy's result)."""
    host = module_hosts(prefix="oa")
    result = run_deploy([host["name"]], data=oauth_data(host, oidc))
    assert result.ok, result.explain()
    print(f"first OAuth deploy: {result.seconds:.1f} s")
    return host["name"], result


def oauth_data(host: dict, oidc: dict) -> dict:
    return {
        "flower_auth_mode": "oauth",
        "flower_unauthenticated_api": False,
        "flower_healthcheck_min_workers": 0,
        "flower_auth": oidc["users"]["allowed"]["email"],
        "flower_auth_provider": OKTA,
        "flower_oauth2_okta_base_url": oidc["base_url"],
        "flower_oauth2_key": oidc["client_id"],
        "flower_oauth2_redirect_uri": f"https://{host['fqdn']}/login",
        "flower_oauth2_secret_env": oidc["client_secret_env"],
        "flower_cookie_secret_env": oidc["cookie_secret_env"],
        "flower_egress_ca_certificates": [oidc["ca"]],
    }


@pytest.fixture(scope="module")
def oauth_host(oauth_deploy) -> str:
    return oauth_deploy[0]


@pytest.fixture(scope="module")
def site(lab: Lab, oauth_host: str) -> str:
    return f"https://{lab.host(oauth_host)['fqdn']}"


@pytest.fixture(scope="module")
def oauth_secrets(lab: Lab, oidc: dict) -> dict[str, str]:
    values = {name: lab.secrets[oidc[f"{name}_env"]] for name in ("client_secret", "cookie_secret")}
    assert all(len(value) >= 32 for value in values.values()), "the lab made real secrets"
    return values


@pytest.fixture
def browser(sync_api, chromium_in_namespace: str, tmp_path: Path):
    """A fresh browser profile in lab-allowed (no basic-auth credentials: the login is OAuth)."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_in_namespace,
            headless=True,
            args=CHROMIUM_FLAGS,
            ignore_https_errors=True,  # the lab's CAs are not in chromium's store
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


def sign_in(page, site: str, user: dict, password: str, tmp_path: Path, step: str):
    """Open the dashboard, get sent to the provider, sign in: Flower's answer to the callback."""
    page.goto(f"{site}/")
    page.locator("#username").wait_for()
    assert page.url.startswith("https://10.77.0.1:9443/oauth2/interaction/"), page.url
    screenshot(page, tmp_path, f"{step}-provider")
    page.fill("#username", user["login"])
    page.fill("#password", password)
    with page.expect_response(lambda r: r.url.startswith(f"{site}/login?code=")) as callback:
        page.click("#sign-in")
    page.wait_for_load_state()
    screenshot(page, tmp_path, f"{step}-back")
    return callback.value


def password(lab: Lab, user: dict) -> str:
    return lab.secrets[user["password_env"]]


def api_workers(context, site: str):
    return context.request.get(f"{site}/api/workers", max_redirects=0, timeout=TIMEOUT_MS)


def assert_sent_to_login(response, site: str) -> None:
    """Flower's answer to a GET without its user cookie (tornado's @authenticated): the login."""
    location = urllib.parse.urljoin(f"{site}/", response.headers.get("location", ""))
    assert (response.status, WORKER in response.text()) == (302, False), response.status
    assert location.startswith(f"{site}/login?next="), location


def test_the_allowed_user_signs_in_and_sees_the_lab_worker(
    lab: Lab, oidc: dict, site: str, browser, tmp_path: Path
):
    page = browser.pages[0]
    alice = oidc["users"]["allowed"]
    callback = sign_in(page, site, alice, password(lab, alice), tmp_path, "1-alice")
    assert callback.status == 302, "Flower accepted the provider's answer"
    page.goto(f"{site}/workers")
    page.get_by_text(WORKER).first.wait_for()
    screenshot(page, tmp_path, "2-workers")
    response = api_workers(browser, site)
    assert response.status == 200 and WORKER in response.json()


def test_the_other_user_is_refused(lab: Lab, oidc: dict, site: str, browser, tmp_path: Path):
    page = browser.pages[0]
    mallory = oidc["users"]["refused"]
    callback = sign_in(page, site, mallory, password(lab, mallory), tmp_path, "1-mallory")
    assert callback.status == 403, "Flower refuses an e-mail flower_auth does not allow"
    assert "Access denied" in page.inner_text("body")
    assert_sent_to_login(api_workers(browser, site), site)


def test_a_wrong_password_never_reaches_flower(
    lab: Lab, oidc: dict, site: str, browser, tmp_path: Path
):
    page = browser.pages[0]
    page.goto(f"{site}/")
    page.fill("#username", oidc["users"]["allowed"]["login"])
    page.fill("#password", "not-the-password")
    with page.expect_response(lambda r: "/interaction/" in r.url) as answer:
        page.click("#sign-in")
    assert answer.value.status == 401
    assert_sent_to_login(api_workers(browser, site), site)


def test_an_unauthenticated_api_call_is_refused(lab: Lab, site: str):
    for path in ("/api/workers", "/api/tasks", "/workers"):
        status, location, body = curl_status(lab, f"{site}{path}")
        assert (status, WORKER in body) == (302, False), f"{path}: {status}"
        assert location.startswith(f"{site}/login?next="), f"{path} sends the browser to the login"


def test_control_from_another_origin_is_refused_by_nginx(lab: Lab, site: str):
    """CSRF holds in OAuth mode too: nginx refuses before Flower sees the request."""
    url = f"{site}/api/task/revoke/00000000-0000-4000-8000-f10e0bed0000"
    post = {"namespace": "lab-allowed", "method": "POST"}
    for hostile in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {}):
        status, headers, body = edge_curl(lab, url, headers=hostile, **post)
        assert status == 403 and "<center>nginx</center>" in body, hostile
        assert not any(key.startswith("access-control-") for key in headers)
    status, _, body = edge_curl(lab, url, headers={"Origin": site}, **post)
    # tornado's @authenticated: a POST without Flower's user cookie is 403 (a GET, 302)
    assert status == 403 and "<center>nginx</center>" not in body, "Flower's own answer"


CROSS_SITE_FORM = """<!doctype html>
<title>cute cats</title>
<form method="POST" action="{target}">{fields}</form>
<script>document.forms[0].submit();</script>
"""
CROSS_SITE_POSTS = {  # what a hostile page would have the signed-in browser do
    "revoke": ("/api/task/revoke/00000000-0000-4000-8000-f10e0bed0001", "terminate=true"),
    "shrink": ("/api/worker/pool/shrink/{worker}", "n=1"),
    "shutdown": ("/api/worker/shutdown/{worker}", ""),
}


def test_a_cross_site_form_post_is_refused_in_the_signed_in_browser(
    lab: Lab, oidc: dict, site: str, browser, elsewhere, tmp_path: Path
):
    """alice, signed in, visits pages elsewhere whose forms revoke, shrink, shut down."""
    page = browser.pages[0]
    alice = oidc["users"]["allowed"]
    sign_in(page, site, alice, password(lab, alice), tmp_path, "1-alice")
    processes = pool_processes(page, site)
    url, served = elsewhere
    try:
        for name, (path, form) in CROSS_SITE_POSTS.items():
            target = site + path.format(worker=WORKER)
            fields = "".join(
                f'<input name="{key}" value="{value}">'
                for key, _, value in (field.partition("=") for field in form.split("&") if field)
            )
            html = CROSS_SITE_FORM.format(target=target, fields=fields)
            (served / f"{name}.html").write_text(html)
            with page.expect_response(lambda r, target=target: r.url == target) as answer:
                page.goto(f"{url}/{name}.html")
            page.wait_for_load_state()
            screenshot(page, tmp_path, f"2-cross-site-{name}")
            assert answer.value.request.method == "POST"
            assert answer.value.status == 403, name
            assert "<center>nginx</center>" in page.content(), f"{name}: nginx refused it"
        page.wait_for_timeout(3000)  # what Flower would have done, it would have done by now
        assert pool_processes(page, site) == processes
    finally:  # the lab's worker is shared: a shutdown or shrink that got through is undone
        online = worker_online(page, site)
        lab_worker.put_back(lab, [])  # this Flower's API wants alice: the ping alone
    assert online, "the hostile page shut the lab's worker down"


def curl_status(lab: Lab, url: str) -> tuple[int, str, str]:
    """(status, Location, body) from lab-allowed, with the site's certificate verified."""
    marker = "\n--flowerbed-status--"
    result = lab.in_namespace(
        "lab-allowed",
        [
            "curl", "-sS", "-m", "10", "--cacert", lab.state["acme"]["root"],
            "-w", marker + "%{http_code} %{redirect_url}", url,
        ],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, _, status_line = result.stdout.rpartition(marker)
    status, _, location = status_line.partition(" ")
    return int(status), location, body


def test_the_session_survives_a_flower_restart(
    lab: Lab, oidc: dict, oauth_host: str, site: str, browser, tmp_path: Path
):
    alice = oidc["users"]["allowed"]
    sign_in(browser.pages[0], site, alice, password(lab, alice), tmp_path, "1-alice")
    assert api_workers(browser, site).status == 200
    before = main_pid(lab, oauth_host)
    lab.ssh(oauth_host, ["systemctl", "restart", "flower.service"], check=True)
    wait_healthy(lab, oauth_host)
    assert main_pid(lab, oauth_host) != before, "Flower really restarted"
    deadline = time.monotonic() + 60
    while True:  # a restarted Flower lists the worker once it has heard from it
        response = api_workers(browser, site)
        assert response.status == 200, "the pinned cookie secret keeps the session"
        if WORKER in response.json():
            break
        assert time.monotonic() < deadline, "Flower never listed the lab's worker again"
        time.sleep(2)


def main_pid(lab: Lab, host: str) -> str:
    result = lab.ssh(host, ["systemctl", "show", "-P", "MainPID", "flower.service"], check=True)
    pid = result.stdout.strip()
    assert pid not in ("", "0"), "Flower is running"
    return pid


def wait_healthy(lab: Lab, host: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    socket = "/run/flower/flower.sock"
    check = ["curl", "-sf", "--unix-socket", socket, "http://localhost/healthcheck"]
    while lab.ssh(host, check).returncode != 0:
        assert time.monotonic() < deadline, "Flower did not come back"
        time.sleep(1)


def test_the_second_run_changes_nothing_and_prints_no_secret(
    lab: Lab, oidc: dict, oauth_deploy, oauth_secrets: dict[str, str]
):
    name, first = oauth_deploy
    assert_no_secret(first, list(oauth_secrets.values()))
    second = run_deploy(
        [name], data=oauth_data(lab.host(name), oidc), flags=("-y", "-vvv", "--diff", "--json")
    )
    assert second.ok, second.explain()
    assert second.totals["success"] == 0, second.explain()
    assert_no_secret(second, list(oauth_secrets.values()))


def test_the_secrets_are_in_no_process_list_readable_file_or_journal(
    lab: Lab, oauth_host: str, oauth_secrets: dict[str, str]
):
    secrets = list(oauth_secrets.values())
    processes = lab.ssh(oauth_host, ["ps", "-eww", "-o", "user,pid,args"], check=True).stdout
    assert "celery" in processes and "flower" in processes, "the listing shows Flower"
    assert not any(secret in processes for secret in secrets), "a secret is in the process list"

    journal = lab.ssh(oauth_host, ["journalctl", "--no-pager", "-o", "export"], check=True).stdout
    assert "flower" in journal, "the journal has Flower's messages"
    assert not any(secret in journal for secret in secrets), "a secret is in the journal"

    holders = files_holding(lab, oauth_host, secrets)
    assert holders == {ENV_FILE: "600 root root"}, f"files holding a secret: {holders}"


def files_holding(lab: Lab, host: str, secrets: list[str]) -> dict[str, str]:
    """Every file on the host holding a secret, with mode and owner: the persistent ones (the
    host's overlay upper layer, read from this machine) and the tmpfs ones (over ssh, the
    secrets on grep's stdin, never on a command line)."""
    upper = REPO / ".lab" / "hosts" / host / "upper"
    assert (upper / "etc").is_dir(), f"{upper} is the host's changed files"
    found = [
        "/" + str(path.relative_to(upper))
        for path in upper.rglob("*")
        if path.is_file() and not path.is_symlink() and holds(path, secrets)
    ]
    patterns = "".join(f"{secret}\n" for secret in secrets)
    grep = subprocess.run(
        [*LAB_CLI, "ssh", host, "grep -rlsF -f - /run /tmp /var/tmp /dev/shm"],
        input=patterns, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert grep.returncode in (0, 1), f"grep failed: {grep.stderr}"
    found += grep.stdout.split()
    if not found:
        return {}
    stat = lab.ssh(host, ["stat", "-c", "%n %a %U %G", *found], check=True).stdout
    return {line.split()[0]: line.split(" ", 1)[1] for line in stat.splitlines()}


def holds(path: Path, secrets: list[str]) -> bool:
    data = path.read_bytes()
    return any(secret.encode() in data for secret in secrets)
