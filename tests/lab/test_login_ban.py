"""The login ban on a real lab host (flowerbed/ban.py): a guesser in lab-allowed makes
flower_nginx_ban_failures failed logins (a login's name and unknown names alike); fail2ban
then drops it on 443, so even the right password from that source gets no answer, while the lab
machine (another allowed source) still logs in; SSH stays open; the ban lifts after
flower_nginx_ban_seconds; a second deploy changes nothing. An unknown name costs what a login's
wrong password does (flowerbed/decoy.py): the median times agree within 0.5-2, and a new
password reloads nothing while a new name does. The lab's bridge has no IPv6
(lab/labkit/network.py): the /64 grouping is tested in tests/unit/test_login_ban_units.py,
against nginx itself where it is installed.
"""

from __future__ import annotations

import secrets
import statistics
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


def wrong_password_times(base: list[str], known: str, tries: int = 15) -> dict[str, float]:
    """The median time (s) from a wrong password sent to nginx's first byte, a login's name and
    unknown names taking turns (`base`: curl's argv for the dashboard, without a login)."""
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for attempt in range(tries):
        unknown = f"nobody-{secrets.token_hex(3)}"
        for kind, user in (("known", known), ("unknown", unknown)):
            timed = "%{http_code} %{time_pretransfer} %{time_starttransfer}"
            argv = [*base, "-s", "-o", "/dev/null", "-w", timed, "-u", f"{user}:wrong-{attempt}"]
            done = run(argv)
            status, sent, first_byte = done.stdout.split()
            assert status in ("401", "429"), (kind, done.stdout, done.stderr)
            times[kind].append(float(first_byte) - float(sent))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    return {**medians, "ratio": medians["known"] / medians["unknown"]}


def dashboard_argv(lab: Lab, host: dict) -> list[str]:
    return ["curl", "-m", "10", "--cacert", lab.state["acme"]["root"], f"https://{host['fqdn']}/"]


def nginx_workers(lab: Lab, name: str) -> set[str]:
    """nginx's worker PIDs: a reload replaces them, the master stays."""
    return set(lab.ssh(name, "pgrep -P $(cat /run/nginx.pid)").stdout.split())


def test_an_unknown_name_costs_what_a_logins_wrong_password_does(lab: Lab, banned_host):
    name = banned_host["name"]
    user, _ = lab.dashboard_login
    times = wrong_password_times(dashboard_argv(lab, banned_host), user)
    print(f"wrong password, median to the first byte: known {times['known'] * 1000:.1f} ms, "
          f"unknown {times['unknown'] * 1000:.1f} ms, ratio {times['ratio']:.2f}")  # fmt: skip
    assert 0.5 <= times["ratio"] <= 2, times
    log = lab.ssh(name, ["cat", "/var/log/nginx/error.log"], check=True).stdout
    assert 'user "flowerbed+decoy": password mismatch' in log
    assert "was not found" not in log, "an unknown name was refused without a bcrypt check"
    lines = lab.ssh(name, ["tail", "-1", "/etc/nginx/flowerbed.htpasswd"], check=True).stdout
    assert lines.startswith("flowerbed+decoy:$2b$10$"), "the htpasswd ends with the decoy"
    owner = lab.ssh(name, ["stat", "-c", "%U:%G %a", "/etc/nginx/flowerbed-users.map"], check=True)
    assert owner.stdout.split() == ["root:www-data", "640"]


def test_a_new_password_reloads_nothing_and_a_new_name_reloads_nginx(lab: Lab, banned_host):
    name, (user, password) = banned_host["name"], lab.dashboard_login
    before = nginx_workers(lab, name)
    assert before
    new_password = secrets.token_urlsafe(18)
    rotated = {"FLOWERBED_DASHBOARD_USERS": f"{user}:{new_password}"}
    deployed = run_deploy(name, DATA, env=rotated)
    assert deployed.ok, deployed.explain()
    assert reaches(lab, banned_host, (user, new_password), None) == 200, "the new one is live"
    assert reaches(lab, banned_host, (user, password), None) in (401, 429), "the old one is not"
    assert nginx_workers(lab, name) == before, "a new password reloaded nginx"
    other = f"decoy-{secrets.token_hex(3)}"
    named = {"FLOWERBED_DASHBOARD_USERS": f"{user}:{password},{other}:{secrets.token_urlsafe(18)}"}
    deployed = run_deploy(name, DATA, env=named)
    assert deployed.ok, deployed.explain()
    deadline = time.monotonic() + 30  # the reload's new workers replace the old ones
    while nginx_workers(lab, name) & before:
        assert time.monotonic() < deadline, "a new name did not reload nginx"
        time.sleep(0.5)
    restored = run_deploy(name, DATA)  # the lab's own logins again
    assert restored.ok, restored.explain()
    assert reaches(lab, banned_host, (user, password), None) == 200


def test_a_guesser_is_banned_before_bcrypt_and_the_ban_lifts(lab: Lab, banned_host):
    user, password = lab.dashboard_login
    assert reaches(lab, banned_host, (user, password), GUESSER) == 200
    for attempt in range(FAILURES):  # a login's name and unknown ones (the decoy's) all count
        guess = (user if attempt % 2 else f"nobody-{attempt}", f"wrong-{attempt}")
        status, _, _ = curl(
            lab, f"https://{banned_host['fqdn']}/", auth=guess, namespace=GUESSER,
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
