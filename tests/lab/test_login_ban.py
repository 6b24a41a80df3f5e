"""The login ban on a real lab host (flowerbed/ban.py): a guesser in lab-allowed makes
flower_nginx_ban_failures failed logins; fail2ban then drops it on 443, so even the right
password from that source gets no answer, while the lab machine (another allowed source) still
logs in; SSH stays open; the ban lifts after flower_nginx_ban_seconds; a second deploy changes
nothing. The lab's bridge has no IPv6 (lab/labkit/network.py): the /64 grouping is tested in
tests/unit/test_login_ban_units.py, against nginx itself where it is installed.
"""

from __future__ import annotations

import time

import pytest
from conftest import Lab, run
from deploy_helpers import run_deploy
from test_edge import curl

pytestmark = pytest.mark.lab

GUESSER = "lab-allowed"
FAILURES, BAN_SECONDS = 4, 40
DATA = {
    "flower_nginx_ban_failures": FAILURES,
    "flower_nginx_ban_window_seconds": 300,
    "flower_nginx_ban_seconds": BAN_SECONDS,
}


@pytest.fixture(scope="module")
def banned_host(lab: Lab, module_hosts) -> dict:
    host = module_hosts(prefix="ban")
    deployed = run_deploy(host["name"], DATA)
    assert deployed.ok, deployed.explain()
    return host


def reaches(lab: Lab, host: dict, auth: tuple[str, str] | None, namespace: str | None) -> int:
    """The dashboard's status for one request, or 0 when the connection is refused/dropped."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5",
            "--cacert", lab.state["acme"]["root"], f"https://{host['fqdn']}/"]  # fmt: skip
    if auth:
        argv += ["-u", ":".join(auth)]  # a test-only password on the test machine
    done = lab.in_namespace(namespace, argv) if namespace else run(argv)
    return int(done.stdout.strip() or 0)


def test_a_guesser_is_banned_before_bcrypt_and_the_ban_lifts(lab: Lab, banned_host):
    user, password = lab.dashboard_login
    assert reaches(lab, banned_host, (user, password), GUESSER) == 200
    for attempt in range(FAILURES):
        status, _, _ = curl(
            lab, f"https://{banned_host['fqdn']}/", auth=(user, f"wrong-{attempt}"),
            namespace=GUESSER,
        )  # fmt: skip
        assert status in (401, 429)
    deadline = time.monotonic() + 15
    while reaches(lab, banned_host, (user, password), GUESSER) != 0:
        assert time.monotonic() < deadline, "fail2ban never banned the guesser"
        time.sleep(1)
    banned_at = time.monotonic()
    status = lab.ssh(banned_host["name"], "fail2ban-client status flowerbed-login")
    assert "Banned IP list:" in status.stdout and "10.77.0." in status.stdout, status.stdout
    # another allowed source still logs in; SSH is never banned (the lab reaches the host by it)
    assert reaches(lab, banned_host, (user, password), None) == 200
    assert lab.ssh(banned_host["name"], "true").returncode == 0
    assert reaches(lab, banned_host, (user, password), GUESSER) == 0
    while reaches(lab, banned_host, (user, password), GUESSER) != 200:
        assert time.monotonic() - banned_at < BAN_SECONDS + 30, "the ban never lifted"
        time.sleep(2)
    assert time.monotonic() - banned_at >= BAN_SECONDS - 5


def test_a_second_deploy_changes_nothing(banned_host):
    again = run_deploy(banned_host["name"], DATA)
    assert again.ok and again.totals["success"] == 0, again.explain()
