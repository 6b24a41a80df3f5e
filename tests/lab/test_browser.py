"""A real browser on a deployed host: Debian's chromium, driven by Playwright, from lab-allowed.

Chromium runs inside the lab-allowed namespace (a wrapper execs it under `ip netns exec`), so it
meets the host exactly as an allowed user's browser does: firewall, TLS, nginx's login, Flower.
The certificate itself is verified by the edge tests (against the lab's ACME root); Chromium's
own trust store does not know the lab CA, so this test accepts it.
Screenshots of every step land in the test's tmp directory (printed on failure).

Needs: apt `chromium`, pip `playwright` (never `playwright install`: Debian's build is used).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lab_worker
import pytest
from conftest import Lab
from deploy_helpers import run_deploy

pytestmark = pytest.mark.lab

DEPLOYED = "h1"
NAMESPACE = "lab-allowed"
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium in a closed network: no background traffic, no sandbox as root
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server",
]  # fmt: skip
WORKER = "demo@labmachine"
LONG_TASK = "flowerbed_demo.sleep"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def sync_api():
    """Playwright's sync API; a missing browser is a failure (`make test` installs both)."""
    missing = [] if Path(CHROMIUM).is_file() else [f"{CHROMIUM} (apt chromium)"]
    try:
        from playwright import sync_api as api
    except ImportError:
        api, missing = None, [*missing, "playwright (pip, requirements.lock)"]
    if missing:
        pytest.fail(f"browser test needs {', '.join(missing)}: run `make test` (or `make setup`)")
    return api


def site_host() -> str:
    return os.environ.get("FLOWERBED_BROWSER_HOST") or DEPLOYED


@pytest.fixture(scope="module")
def site(lab: Lab) -> str:
    """h1, deployed; FLOWERBED_BROWSER_HOST=name uses a deployed host as it is (development)."""
    if not os.environ.get("FLOWERBED_BROWSER_HOST"):
        result = run_deploy([site_host()])
        assert result.ok, result.explain()
    return f"https://{lab.host(site_host())['fqdn']}"


@pytest.fixture(scope="module")
def login(lab: Lab) -> dict[str, str]:
    user, password = lab.dashboard_login
    return {"username": user, "password": password}


@pytest.fixture(scope="module")
def chromium_in_namespace(tmp_path_factory) -> str:
    """An executable that starts Debian's chromium inside the lab-allowed namespace."""
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-lab-allowed"
    ip = shutil.which("ip") or "/usr/sbin/ip"
    wrapper.write_text(f'#!/bin/sh\nexec {ip} netns exec {NAMESPACE} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture
def page(sync_api, chromium_in_namespace: str, login: dict[str, str], tmp_path: Path):
    profile = tmp_path / "profile"  # a fresh --user-data-dir: no state from an earlier run
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_in_namespace,
            headless=True,
            args=CHROMIUM_FLAGS,
            http_credentials=login,
            ignore_https_errors=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context.pages[0] if context.pages else context.new_page()
        context.close()


def screenshot(page, tmp_path: Path, step: str) -> Path:
    path = tmp_path / f"{step}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def start_long_task(page, site: str) -> str:
    """A task that runs for minutes, sent through Flower's API as the logged-in user."""
    response = page.request.post(
        f"{site}/api/task/send-task/{LONG_TASK}",
        data={"args": [300]},
        headers={"Origin": site},  # nginx lets only the dashboard's own origin control Flower
        timeout=TIMEOUT_MS,
    )
    assert response.ok, f"{response.status} {response.text()}"
    return response.json()["task-id"]


def wait_until_started(page, site: str, task_id: str, timeout: float = 90) -> None:
    """The lab worker has 2 slots the demo producer also uses: wait for ours to start."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(f"{site}/task/{task_id}")
        if page.locator("#task-terminate").count():
            return
        assert time.monotonic() < deadline, (
            f"task {task_id} never started: {page.inner_text('body')}"
        )
        time.sleep(2)


def test_a_user_logs_in_sees_workers_revokes_a_task_and_sees_the_queues(
    sync_api, page, site: str, tmp_path: Path
):
    response = page.goto(f"{site}/workers")
    assert response.status == 200, "the browser's login is accepted"
    page.get_by_text(WORKER).first.wait_for()
    screenshot(page, tmp_path, "1-workers")

    task_id = start_long_task(page, site)
    wait_until_started(page, site, task_id)
    assert LONG_TASK in page.inner_text("body")
    screenshot(page, tmp_path, "2-task-started")

    page.click("#task-terminate")
    # the page disables the button only when Flower's API accepted the revoke (through nginx)
    sync_api.expect(page.locator("#task-terminate")).to_be_disabled()
    screenshot(page, tmp_path, "3-terminate-accepted")
    deadline = time.monotonic() + 60
    while "REVOKED" not in page.inner_text("body"):
        assert time.monotonic() < deadline, "the task never showed REVOKED"
        time.sleep(2)
        page.goto(f"{site}/task/{task_id}")
    screenshot(page, tmp_path, "4-task-revoked")

    page.goto(f"{site}/tasks")
    page.get_by_text(LONG_TASK).first.wait_for()
    screenshot(page, tmp_path, "5-tasks")

    response = page.goto(f"{site}/broker")
    assert response.status == 200
    page.get_by_text("celery", exact=True).first.wait_for()
    screenshot(page, tmp_path, "6-broker")


# --- CSRF: a page elsewhere cannot drive the dashboard; the dashboard's own buttons can --------

# Pages elsewhere that make the visitor's browser post a form to the dashboard as soon as they
# load. A top-level navigation: the browser sends the login it has cached for the dashboard.
HOSTILE_FORMS = {
    "revoke": ("/api/task/revoke/{task}", '<input name="terminate" value="true">'),
    "shrink": ("/api/worker/pool/shrink/{worker}", '<input name="n" value="1">'),
    "shutdown": ("/api/worker/shutdown/{worker}", ""),
}
HOSTILE_PAGE = """<!doctype html>
<title>cute cats</title>
<form method="POST" action="{site}{action}">{fields}</form>
<script>document.forms[0].submit();</script>
"""


@pytest.fixture
def elsewhere(lab: Lab, tmp_path: Path):
    """A web server in lab-allowed on another origin: (its URL, the directory it serves)."""
    served = tmp_path / "elsewhere"
    served.mkdir()
    port = 18000 + os.getpid() % 1000
    address = lab.state["namespaces"][NAMESPACE]
    server = subprocess.Popen(
        ["ip", "netns", "exec", NAMESPACE, sys.executable, "-m", "http.server",
         "--bind", address, "--directory", str(served), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://{address}:{port}", served
    finally:
        server.terminate()
        server.wait(timeout=10)


def api(page, site: str, path: str, patience: float = 60):
    """Flower's API as the page's session asks it; a 429 (the edge's budget for refreshes and
    a worker's page: flower_nginx_expensive_*) is waited out, as a well-behaved client does."""
    deadline = time.monotonic() + patience
    while (response := page.request.get(f"{site}{path}", timeout=TIMEOUT_MS)).status == 429:
        assert time.monotonic() < deadline, f"{path}: still 429 after {patience:.0f} s"
        time.sleep(2)
    assert response.ok, f"{path}: {response.status} {response.text()}"
    return response.json()


def pool_processes(page, site: str) -> int:
    """How many processes the lab worker's pool has now (asked from the worker, via Flower)."""
    workers = api(page, site, f"/api/workers?refresh=1&workername={WORKER}")
    return len(workers[WORKER]["stats"]["pool"]["processes"])


def resize_from_the_page(page, site: str, processes: int, timeout: float = 120) -> None:
    """Click grow or shrink, whichever the pool needs, until it has `processes`.

    The lab worker is shared with the demo producer's tasks, so billiard can refuse a shrink
    while every process is busy ("All processes busy"), and a loaded worker can answer after
    Flower's control timeout ("Unknown reason", flower/api/control.py) and still resize late.
    Each pass therefore starts from the pool as it is, never from the click before.
    """
    deadline = time.monotonic() + timeout
    while (now := pool_processes(page, site)) != processes:
        assert time.monotonic() < deadline, f"the pool has {now} processes, not {processes}"
        action, verb = ("grow", "Growing") if now < processes else ("shrink", "Shrinking")
        done = page.get_by_text(f"{verb} '{WORKER}' worker's pool by 1")
        refused = page.get_by_text(f"Failed to {action} '{WORKER}' worker's pool")
        page.goto(f"{site}/worker/{WORKER}")
        page.fill("#pool-size", "1")
        page.click(f"#worker-pool-{action}")
        done.or_(refused).first.wait_for(timeout=TIMEOUT_MS)
        if refused.count():
            reason = refused.first.inner_text()
            assert "All processes busy" in reason or "Unknown reason" in reason, reason
        settle = time.monotonic() + 10  # a resize Flower accepted, or a late one, shows here
        while pool_processes(page, site) == now and time.monotonic() < settle:
            time.sleep(2)


def worker_online(page, site: str) -> bool:
    return api(page, site, f"/api/workers?status=1&workername={WORKER}").get(WORKER) is True


def control(page, site: str, path: str, form: dict) -> None:
    """A control request as the dashboard's own page sends it (for clean-up)."""
    page.request.post(f"{site}{path}", form=form, headers={"Origin": site}, timeout=TIMEOUT_MS)


def test_a_page_elsewhere_cannot_drive_the_dashboard_but_its_own_buttons_can(
    sync_api, page, site: str, elsewhere, lab: Lab, tmp_path: Path
):
    """The logged-in user visits a hostile page: its forms revoke, shrink, shut down: nothing."""
    page.goto(f"{site}/workers")
    task_id = start_long_task(page, site)
    processes = pool_processes(page, site)
    try:
        wait_until_started(page, site, task_id)
        hostile_page_changes_nothing(page, site, elsewhere, task_id, processes, tmp_path)
        # The same from the dashboard's own pages works (not shutdown: the lab's worker is
        # shared): revoke the task, then grow the pool and shrink it back. The revoke comes
        # first: a late shrink can end the pool process that runs the task.
        page.goto(f"{site}/task/{task_id}")
        page.click("#task-terminate")
        sync_api.expect(page.locator("#task-terminate")).to_be_disabled()
        deadline = time.monotonic() + 120
        while (seen := api(page, site, f"/api/task/info/{task_id}")["state"]) != "REVOKED":
            assert time.monotonic() < deadline, f"the dashboard's own revoke left it {seen}"
            time.sleep(2)
        resize_from_the_page(page, site, processes + 1)
        resize_from_the_page(page, site, processes)
        screenshot(page, tmp_path, "2-pool-grown-and-shrunk")
    finally:  # the lab's worker is shared: put it back as it was
        control(page, site, f"/api/task/revoke/{task_id}", {"terminate": "true"})
        lab_worker.put_back(lab, [site_host()])


def hostile_page_changes_nothing(page, site, elsewhere, task_id, processes, tmp_path) -> None:
    url, served = elsewhere
    for name, (action, fields) in HOSTILE_FORMS.items():
        action = action.format(task=task_id, worker=WORKER)
        page_text = HOSTILE_PAGE.format(site=site, action=action, fields=fields)
        (served / f"{name}.html").write_text(page_text)
        target = f"{site}{action}"
        with page.expect_response(lambda r, target=target: r.url == target) as answer:
            page.goto(f"{url}/{name}.html")
        request = answer.value.request
        assert request.method == "POST" and request.header_value("origin") == url
        assert answer.value.status == 403, f"{name}: {answer.value.status} {answer.value.text()}"
        screenshot(page, tmp_path, f"1-hostile-{name}")
    page.wait_for_timeout(3000)  # what Flower would have done, it would have done by now
    assert api(page, site, f"/api/task/info/{task_id}")["state"] == "STARTED"
    assert pool_processes(page, site) == processes
    assert worker_online(page, site)
