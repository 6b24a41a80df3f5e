"""A real browser on a deployed host: Debian's chromium, driven by Playwright, from lab-allowed.

Chromium runs inside the lab-allowed namespace (a wrapper execs it under `ip netns exec`), so it
meets the host exactly as an allowed user's browser does: firewall, TLS, nginx's login, Flower.
The certificate itself is verified by the edge tests (against the lab's ACME root); Chromium's
own trust store does not know the lab CA, so this test accepts it.
Screenshots of every step land in the test's tmp directory (printed on failure).

Needs: apt `chromium`, pip `playwright` (never `playwright install`: Debian's build is used).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def site(lab: Lab) -> str:
    result = run_deploy([DEPLOYED])
    assert result.ok, result.explain()
    return f"https://{lab.host(DEPLOYED)['fqdn']}"


@pytest.fixture(scope="module")
def login(lab: Lab) -> dict[str, str]:
    user, _, password = lab.secrets["FLOWERBED_DASHBOARD_USERS"].split(",")[0].partition(":")
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
        f"{site}/api/task/send-task/{LONG_TASK}", data={"args": [300]}, timeout=TIMEOUT_MS
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
