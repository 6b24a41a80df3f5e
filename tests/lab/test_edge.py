"""The edge on real lab hosts: nginx, TLS from the lab's ACME CA (pebble), logins, /metrics.

Two fresh hosts are deployed once for the module (the second shows that one host's failure
leaves the others alone). Tests that change a host put it back before they end.
Set FLOWERBED_EDGE_HOSTS=a,b to reuse two running lab hosts instead (development).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import deploy_helpers
import pytest
from conftest import Lab, lab_cli
from deploy_helpers import DeployResult, assert_no_secret

# The throttle's own tests send lab-allowed's wrong passwords by the dozen: fail2ban's ban
# (tests/lab/test_login_ban.py proves it) would drop lab-allowed for an hour. Off here.
NO_BAN = {"flower_nginx_ban_failures": 0}


def run_deploy(hosts, data: dict | None = None, **kwargs) -> DeployResult:
    return deploy_helpers.run_deploy(hosts, {**NO_BAN, **(data or {})}, **kwargs)


pytestmark = pytest.mark.lab

HOST_DATA_INVENTORY = "tests/inventories/lab.py"
CHALLENGES = "/.well-known/acme-challenge"
CHALLENGES_DIR = f"/var/lib/flowerbed/acme{CHALLENGES}"  # the webroot certbot writes to
SITE = "/etc/nginx/conf.d/flowerbed.conf"
WORKER = "demo@labmachine"


@pytest.fixture(scope="module")
def edge(lab: Lab):
    """Two deployed hosts: (name of the main one, name of the other)."""
    reuse = os.environ.get("FLOWERBED_EDGE_HOSTS")
    names = reuse.split(",") if reuse else [f"edge{os.getpid() % 1000}{x}" for x in "ab"]
    if not reuse:
        for name in names:
            lab_cli("host-up", name)
        lab.state = Lab.load().state
    result = run_deploy(names)
    assert result.ok, result.explain()
    print(f"first deploy of 2 hosts: {result.seconds:.1f} s")
    yield names
    if not reuse:
        for name in names:
            lab_cli("host-down", name)
        lab.state = Lab.load().state


def login(lab: Lab) -> tuple[str, str]:
    return lab.dashboard_login


def fqdn(lab: Lab, name: str) -> str:
    return lab.host(name)["fqdn"]


def curl(
    lab: Lab,
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    namespace: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one request, verified against the lab's ACME root."""
    argv = ["curl", "-sS", "-m", "10", "--cacert", lab.state["acme"]["root"], "-D", "-", url]
    argv += ["-X", method, *(f"-H{name}: {value}" for name, value in (headers or {}).items())]
    if auth:
        argv += ["-u", ":".join(auth)]  # a test-only password on the test machine
    run = lab.in_namespace(namespace, argv) if namespace else subprocess_run(argv)
    assert run.returncode == 0, f"{url}: {run.stderr}"
    head, _, body = run.stdout.replace("\r\n", "\n").partition("\n\n")
    while head.startswith("HTTP/") and body.startswith("HTTP/"):  # 100 Continue and the like
        head, _, body = body.partition("\n\n")
    status = int(head.split()[1])
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:] if ": " in line)
    return status, {k.lower(): v for k, v in headers.items()}, body


def subprocess_run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def served_serial(lab: Lab, name: str) -> str:
    """The serial of the certificate nginx serves for the host's name right now."""
    host = fqdn(lab, name)
    hello = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:443", "-servername", host],
        input="",
        capture_output=True,
        text=True,
        timeout=15,
    )
    cert = subprocess.run(
        ["openssl", "x509", "-noout", "-serial"], input=hello.stdout, capture_output=True, text=True
    )
    assert cert.returncode == 0, hello.stderr
    return cert.stdout.strip()


def workers(lab: Lab, name: str, prefix: str = "") -> dict:
    status, _, body = curl(
        lab,
        f"https://{fqdn(lab, name)}{prefix}/api/workers",
        auth=login(lab),
        namespace="lab-allowed",
    )
    assert status == 200, body
    return json.loads(body)


def deploy(names: list[str], **kwargs) -> DeployResult:
    result = run_deploy(names, **kwargs)
    assert result.ok, result.explain()
    return result


def deploy_one_host_data(names: list[str], host_data: dict) -> DeployResult:
    """Deploy `names`, with `host_data` ({host: {key: value}}) for single hosts."""
    return run_deploy(
        names,
        inventory=HOST_DATA_INVENTORY,
        env={"FLOWERBED_TEST_HOST_DATA": json.dumps(host_data)},
    )


# --- what a browser meets -------------------------------------------------------------------


def test_https_verifies_and_every_path_needs_a_login(lab: Lab, edge):
    site = f"https://{fqdn(lab, edge[0])}"
    for path in ("/", "/api/workers", "/metrics", "/tasks"):
        status, headers, _ = curl(lab, site + path, namespace="lab-allowed")
        assert status == 401, path
        assert headers["server"] == "nginx", "server_tokens off: no version"
    status, headers, body = curl(lab, site + "/", auth=login(lab), namespace="lab-allowed")
    assert status == 200 and "Flower" in body
    assert headers["strict-transport-security"].startswith("max-age=")
    assert WORKER in workers(lab, edge[0])


UNKNOWN_TASK = "00000000-0000-4000-8000-f10e0bed0000"  # revoking it changes nothing


def control(lab: Lab, name: str, headers: dict[str, str], prefix: str = "") -> tuple[int, str]:
    """(status, body) of a logged-in revoke POST from lab-allowed with these headers."""
    url = f"https://{fqdn(lab, name)}{prefix}/api/task/revoke/{UNKNOWN_TASK}"
    status, _, body = curl(
        lab, url, auth=login(lab), namespace="lab-allowed", method="POST", headers=headers
    )
    return status, body


def refused_by_nginx(response: tuple[int, str]) -> bool:
    status, body = response
    return status == 403 and "<center>nginx</center>" in body


def assert_only_the_dashboard_drives_flower(lab: Lab, name: str, prefix: str = "") -> None:
    """Control requests from anywhere but the dashboard's own pages never reach Flower."""
    own = f"https://{fqdn(lab, name)}"
    for hostile in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": own, "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
        {"Origin": f"{own}.evil.example"},
        {"Referer": f"https://evil.example/{fqdn(lab, name)}/"},
        {},  # no Origin, Sec-Fetch-Site or Referer: not a page of the dashboard either
    ):
        assert refused_by_nginx(control(lab, name, hostile, prefix)), hostile
    for own_page in (
        {"Origin": own},
        {"Origin": own, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Referer": f"{own}{prefix}/tasks"},
    ):
        status, body = control(lab, name, own_page, prefix)
        assert status == 200 and "Revoked" in body, own_page  # Flower's own answer
    for method in ("GET", "OPTIONS"):
        _, headers, _ = curl(
            lab, f"{own}{prefix}/api/workers", auth=login(lab), namespace="lab-allowed",
            method=method, headers={"Origin": "https://evil.example"},
        )  # fmt: skip
        assert not any(key.startswith("access-control-") for key in headers), headers


def test_only_the_dashboards_own_pages_drive_flower(lab: Lab, edge):
    """CSRF: a page elsewhere cannot make the admin's browser revoke, resize or shut down."""
    assert_only_the_dashboard_drives_flower(lab, edge[0])


def test_http_redirects_to_https(lab: Lab, edge):
    host = fqdn(lab, edge[0])
    status, headers, _ = curl(lab, f"http://{host}/tasks?x=1", namespace="lab-allowed")
    assert status == 301
    assert headers["location"] == f"https://{host}/tasks?x=1"


def test_metrics_only_for_monitoring_sources(lab: Lab, edge):
    """The lab machine is the monitoring source; a logged-in user elsewhere still gets 403."""
    url = f"https://{fqdn(lab, edge[0])}/metrics"
    status, _, body = curl(lab, url)
    assert status == 200 and "flower_" in body
    assert curl(lab, url, namespace="lab-allowed")[0] == 401
    assert curl(lab, url, auth=login(lab), namespace="lab-allowed")[0] == 403


def test_healthcheck_for_local_checks(lab: Lab, edge):
    host = fqdn(lab, edge[0])
    local = [
        "curl",
        "-sS",
        "--resolve",
        f"{host}:443:127.0.0.1",
        "-k",
        f"https://{host}/healthcheck",
    ]
    assert lab.ssh(edge[0], local, check=True).stdout == "OK"
    assert curl(lab, f"https://{host}/healthcheck", namespace="lab-allowed")[0] == 401


def test_port_80_from_outside_gives_only_redirects_and_challenges(lab: Lab, edge):
    name = edge[0]
    host = fqdn(lab, name)
    token = "flowerbed-test-probe"
    lab.ssh(name, f"mkdir -p {CHALLENGES_DIR} && echo probe > {CHALLENGES_DIR}/{token}", check=True)
    try:
        for path in ("/", "/api/workers", "/metrics", "/healthcheck", "/static/css/flower.css"):
            status, headers, body = curl(lab, f"http://{host}{path}", namespace="lab-denied")
            assert status == 301 and headers["location"].startswith("https://"), path
            assert "flower" not in body.lower().replace(host, "")
        status, _, body = curl(lab, f"http://{host}{CHALLENGES}/{token}", namespace="lab-denied")
        assert (status, body.strip()) == (200, "probe")
    finally:
        lab.ssh(name, ["rm", "-f", f"{CHALLENGES_DIR}/{token}"])


def test_tls_passes_mozilla_intermediate(lab: Lab, edge, tmp_path):
    # sslyze is locked in requirements.lock: without it this test fails, never skips
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER as NEEDED,
    )

    host, report = fqdn(lab, edge[0]), tmp_path / "sslyze.json"
    run = subprocess.run(
        [sys.executable, "-m", "sslyze", "--mozilla_config=intermediate",
         f"--certinfo_ca_file={lab.state['acme']['root']}", f"--json_out={report}", host],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = f"exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    # The scan connected and completed every scan the compliance check needs ...
    assert report.exists(), output
    scans = json.loads(report.read_text())
    assert scans["invalid_server_strings"] == [], output
    assert len(scans["server_scan_results"]) == 1, output
    scan = scans["server_scan_results"][0]
    assert scan["server_location"]["hostname"] == host
    assert scan["connectivity_status"] == "COMPLETED", scan["connectivity_error_trace"]
    assert scan["scan_status"] == "COMPLETED", output
    incomplete = {c.value: scan["scan_result"][c.value]["status"] for c in NEEDED}
    assert set(incomplete.values()) == {"COMPLETED"}, incomplete
    # ... and the check against Mozilla's intermediate profile ran and gave this host a verdict.
    assert "COMPLIANCE AGAINST" in run.stdout, output
    compliance = run.stdout.split("COMPLIANCE AGAINST")[-1]
    assert 'Checking results against Mozilla\'s "intermediate" configuration' in compliance, output
    verdicts = re.findall(
        r"^\s+(\S+): (OK - Compliant|FAILED - Not compliant)\.$", compliance, re.M
    )
    assert len(verdicts) == 1 and verdicts[0][0].startswith(f"{host}:"), output
    assert run.returncode == (0 if verdicts[0][1] == "OK - Compliant" else 1), output
    findings = set(re.findall(r"^\s+\* (\w+): ", compliance, re.M))
    assert (verdicts[0][1] == "FAILED - Not compliant") == bool(findings), output
    # The lab's pebble issues 5-year certificates: that finding is the lab CA's, not the deploy's.
    assert findings <= {"maximum_certificate_lifespan"}, output


# --- idempotence and renewal ----------------------------------------------------------------


def test_second_run_changes_nothing(edge):
    result = deploy(edge)
    assert result.totals["success"] == 0, result.explain()
    print(f"no-op run of 2 hosts: {result.seconds:.1f} s")


def test_forced_renewal_is_served_after_the_hook_reload(lab: Lab, edge):
    """certbot.timer's service (with the CA drop-in) renews; the deploy hook reloads nginx."""
    name = edge[0]
    before = served_serial(lab, name)
    cli_ini, force = "/etc/letsencrypt/cli.ini", "force-renewal = true"
    lab.ssh(name, f"echo '{force}' >> {cli_ini}", check=True)
    try:
        lab.ssh(name, ["systemctl", "start", "certbot.service"], check=True, timeout=180)
    finally:
        lab.ssh(name, ["sed", "-i", f"/^{force}$/d", cli_ini], check=True)
    # nginx's reload is a signal: its new workers serve the new certificate a moment later
    deadline = time.monotonic() + 15
    while served_serial(lab, name) == before:
        assert time.monotonic() < deadline, "the renewed certificate is never served"
        time.sleep(0.3)
    assert deploy([name]).changed_hosts("TLS certificate") == [], "a renewal needs no deploy"


# --- failures stay on their host ------------------------------------------------------------


def test_acme_down_for_one_host_leaves_the_others_and_its_site(lab: Lab, edge):
    main, other = edge
    serial = served_serial(lab, other)
    broken = {
        other: {"flower_tls_acme_directory": "https://10.77.0.1:14001/dir"}
    }  # nothing listens
    result = deploy_one_host_data(edge, broken)
    assert result.returncode != 0 and result.failed_hosts == [other], result.explain()
    assert "14001" in result.stderr, "the error names what failed"
    assert served_serial(lab, other) == serial
    assert WORKER in workers(lab, other) and WORKER in workers(lab, main)
    assert deploy(edge).changed_hosts("TLS certificate") == [], "back to the working directory"


def test_config_failing_nginx_t_is_never_loaded(lab: Lab, edge):
    name = edge[0]
    before = lab.ssh(name, ["sha256sum", SITE], check=True).stdout
    result = run_deploy(
        [name],
        data={
            "flower_nginx_server_snippets": ["flowerbed_no_such_directive on;"],
            "flower_nginx_server_snippets_unchecked": True,  # past the allow-list, to nginx -t
        },
    )
    assert result.returncode != 0, "the run reports the host failed"
    assert 'unknown directive "flowerbed_no_such_directive"' in result.stderr
    assert lab.ssh(name, ["sha256sum", SITE], check=True).stdout == before
    assert WORKER in workers(lab, name)


# --- modes ----------------------------------------------------------------------------------


def test_subpath_mode(lab: Lab, edge):
    name = edge[1]
    site = f"https://{fqdn(lab, name)}"
    deploy([name], data={"flower_url_prefix": "flower"})
    try:
        assert WORKER in workers(lab, name, prefix="/flower")
        status, headers, _ = curl(lab, f"{site}/", auth=login(lab), namespace="lab-allowed")
        assert (status, headers["location"]) == (302, f"{site}/flower/")
        status, _, body = curl(lab, f"{site}/flower/", auth=login(lab), namespace="lab-allowed")
        assert status == 200 and "/flower/static/" in body
        assert curl(lab, f"{site}/flower/metrics", namespace="lab-allowed")[0] == 401
        assert curl(lab, f"{site}/flower/metrics")[0] == 200
        assert_only_the_dashboard_drives_flower(lab, name, prefix="/flower")
    finally:
        deploy([name])


def test_password_rotation_without_any_secret_in_the_output(lab: Lab, edge):
    name = edge[0]
    user, old = login(lab)
    new = "r0tated:pass-word"  # ':' in a password is fine
    broker = lab.secrets["FLOWERBED_BROKER_URL"]
    env = {"FLOWERBED_DASHBOARD_USERS": f"{user}:{new}"}
    site = f"https://{fqdn(lab, name)}/api/workers"
    hashes = lab.ssh(name, ["cut", "-d:", "-f2", "/etc/nginx/flowerbed.htpasswd"]).stdout.split()
    preview = run_deploy([name], flags=("--dry", "--diff", "-vvv"), env=env)
    assert preview.ok, preview.explain()
    assert_no_secret(preview, [old, new, broker, *hashes])
    try:
        rotated = run_deploy([name], env=env)
        assert rotated.ok and rotated.changed_hosts("Dashboard logins") == [name]
        assert_no_secret(rotated, [old, new, broker, *hashes])
        assert curl(lab, site, auth=(user, new), namespace="lab-allowed")[0] == 200
        assert curl(lab, site, auth=(user, old), namespace="lab-allowed")[0] == 401
        again = run_deploy([name], env=env)
        assert again.ok and again.totals["success"] == 0, "an unchanged password is not re-hashed"
    finally:
        deploy([name])
    assert curl(lab, site, auth=(user, old), namespace="lab-allowed")[0] == 200


def test_dns01_through_the_lab_hook(lab: Lab, edge):
    name = edge[1]
    dns01 = {"flower_tls_challenge": "dns-01", "flower_tls_dns_hook": "lab/dns01-hook.sh"}
    before = served_serial(lab, name)
    try:
        result = deploy([name], data=dns01)
        assert result.changed_hosts("TLS certificate") == [name]
        renewal = lab.ssh(name, ["cat", "/etc/letsencrypt/renewal/flowerbed.conf"]).stdout
        assert "authenticator = manual" in renewal
        assert served_serial(lab, name) != before
        assert WORKER in workers(lab, name)
    finally:
        deploy([name])


# --- throttles (on the second host: its failed-login budget is spent here) -------------------


def burst(lab: Lab, url: str, logins: list[str]) -> subprocess.Popen:
    """One curl in lab-allowed trying each login in turn; prints each status on a line."""
    options = {"cacert": lab.state["acme"]["root"], "max-time": "10", "output": "/dev/null"}
    options["write-out"] = "%{http_code}\\n"
    common = "".join(f'{key} = "{value}"\n' for key, value in options.items())
    config = "next\n".join(f'{common}url = "{url}"\nuser = "{login}"\n' for login in logins)
    argv = ["ip", "netns", "exec", "lab-allowed", "curl", "-sS", "-K", "-"]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    process.stdin.write(config)
    process.stdin.close()
    return process


def wait_for_budget(lab: Lab, url: str, user: str, timeout: float = 90) -> None:
    """Until lab-allowed's failed logins get 401 again (the budget refilled)."""
    deadline = time.monotonic() + timeout
    while curl(lab, url, auth=(user, "wrong"), namespace="lab-allowed")[0] == 429:
        assert time.monotonic() < deadline, "the failed-login budget never refilled"
        time.sleep(6)


def test_password_guessing_is_throttled_per_source(lab: Lab, edge):
    """50 wrong passwords from lab-allowed: mostly 429; the lab machine's login gets straight in."""
    url = f"https://{fqdn(lab, edge[1])}/api/workers"
    user, _ = login(lab)
    guesses = burst(lab, url, [f"{user}:guess-{n}" for n in range(50)])
    try:
        statuses = [int(guesses.stdout.readline()) for _ in range(15)]
        assert 429 in statuses, statuses
        started = time.monotonic()
        during = curl(lab, url, auth=login(lab))  # another source, mid-burst
        seconds = time.monotonic() - started
        statuses += [int(line) for line in guesses.stdout]
    finally:
        guesses.kill()
        guesses.wait()
    assert during[0] == 200 and WORKER in json.loads(during[2])
    refused = statuses.count(429)
    print(f"50 wrong passwords: {refused} got 429, {statuses.count(401)} got 401; "
          f"a good login from another source meanwhile: {seconds:.2f} s")  # fmt: skip
    assert len(statuses) == 50 and set(statuses) == {401, 429}, statuses
    assert refused >= 40, statuses
    wait_for_budget(lab, url, user)


def test_a_request_flood_is_capped_before_any_password_is_checked(lab: Lab, edge):
    """Every request from a source counts (bcrypt is CPU): past the burst, a flood gets 429."""
    url = f"https://{fqdn(lab, edge[1])}/api/workers"
    argv = ["curl", "-sS", "-m", "30", "--cacert", lab.state["acme"]["root"], "-Z"]
    argv += ["--parallel-max", "20", "-w", "%{http_code}\n"]
    flood = lab.in_namespace("lab-allowed", [*argv, *["-o", "/dev/null", url] * 100], timeout=60)
    statuses = [int(line) for line in flood.stdout.split()]
    print(f"100 requests at once: {statuses.count(429)} got 429")
    assert len(statuses) == 100 and set(statuses) == {401, 429}, flood.stderr
    assert statuses.count(429) >= 30, "the default burst is 50 (flower_nginx_requests_burst)"
    deadline = time.monotonic() + 60
    while curl(lab, url, namespace="lab-allowed")[0] == 429:  # refills at 5/s
        assert time.monotonic() < deadline
        time.sleep(2)


def test_a_flood_of_refreshes_leaves_the_dashboard_answering(lab: Lab, edge):
    """One logged-in client in lab-allowed asks 100 refreshes, each for a new worker name
    (Flower cannot merge them; it answers 404 after asking), 5 a second: within the request
    throttle, so only the refreshes' own budget stops them. Flower answers such requests one at
    a time, so without it the flood queues everyone else's behind it (tried: 40 of them took
    54 s). Meanwhile the lab machine's refresh (an admin source: not in that budget) and the
    local health check answer."""
    host = fqdn(lab, edge[1])
    user, password = login(lab)
    wait_for_budget(lab, f"https://{host}/api/workers", user)
    urls = [f"https://{host}/api/workers?refresh=1&workername=flood-{n}" for n in range(100)]
    argv = ["curl", "-sS", "-m", "40", "--cacert", lab.state["acme"]["root"], "-u",
            f"{user}:{password}", "-Z", "--parallel-max", "20", "--rate", "5/s",
            "-w", "%{http_code}\n"]  # fmt: skip
    for url in urls:
        argv += ["-o", "/dev/null", url]
    flood = subprocess.Popen(
        ["ip", "netns", "exec", "lab-allowed", *argv], stdout=subprocess.PIPE, text=True
    )
    try:
        statuses = [int(flood.stdout.readline()) for _ in range(30)]  # 6 s into the flood
        started = time.monotonic()
        other = curl(lab, f"https://{host}/api/workers?refresh=1", auth=(user, password))
        other_seconds = time.monotonic() - started
        healthy = lab.ssh(
            edge[1],
            ["curl", "-sS", "-m", "10", "--resolve", f"{host}:443:127.0.0.1", "-k",
             f"https://{host}/healthcheck"],
        )  # fmt: skip
        statuses += [int(line) for line in flood.stdout]
    finally:
        flood.kill()
        flood.wait()
    print(f"100 refreshes at 5/s: {statuses.count(429)} got 429, {statuses.count(404)} reached "
          f"Flower; another source's refresh meanwhile: {other_seconds:.1f} s")  # fmt: skip
    assert len(statuses) == 100 and set(statuses) <= {404, 429}, statuses  # none timed out
    assert statuses.count(429) >= 80, "5 at once, then 12 a minute (flower_nginx_expensive_*)"
    assert other[0] == 200 and WORKER in json.loads(other[2]), other
    assert healthy.stdout == "OK", healthy.stdout + healthy.stderr
    # the same source's other requests are not in that budget: they still answer
    plain = curl(lab, f"https://{host}/api/workers", auth=(user, password), namespace="lab-allowed")
    assert plain[0] == 200, plain


def test_debian_13_host(lab: Lab, fresh_host):
    """trixie's nginx 1.26 and certbot 4: the same site, certificate and logins; idempotent."""
    host = fresh_host(distro="trixie", prefix="edge")
    name = host["name"]
    first = deploy([name])
    assert curl(lab, f"https://{fqdn(lab, name)}/", namespace="lab-allowed")[0] == 401
    assert WORKER in workers(lab, name)
    again = deploy([name])
    assert again.totals["success"] == 0, again.explain()
    print(f"Debian 13 host: first deploy {first.seconds:.1f} s, no-op {again.seconds:.1f} s")
