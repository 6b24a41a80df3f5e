"""Flower on real lab hosts: deployed once on h1-h3 for the session, then examined and changed.

Tests that change a host put it back as the session deployed it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from urllib.parse import urlsplit

import pytest
from conftest import Lab
from deploy_helpers import DeployResult, assert_no_secret, run_deploy
from lab_worker import PROXY_LOGIN, flower_api

pytestmark = pytest.mark.lab

HOSTS = ["h1", "h2", "h3"]
SOCKET = "/run/flower/flower.sock"
DEMO_APP = {"flower_app": "flowerbed_demo.app:app", "flower_app_source": "lab/demo_app"}
DEMO_TASKS = ["flowerbed_demo.add", "flowerbed_demo.fail", "flowerbed_demo.flaky"]


@pytest.fixture(scope="session")
def broker_password(lab: Lab) -> str:
    return urlsplit(lab.secrets["FLOWERBED_BROKER_URL"]).password


@pytest.fixture(scope="session")
def first_deploy(lab: Lab, broker_password: str) -> DeployResult:
    result = run_deploy(HOSTS)
    assert result.ok, result.explain()
    assert_no_secret(result, [broker_password])
    return result


# --- looking at a host ----------------------------------------------------------------------


def on_host(lab: Lab, host: str, argv: list[str], check: bool = True) -> str:
    result = lab.ssh(host, argv, check=check)
    return result.stdout


def flower_process(lab: Lab, host: str) -> tuple[str, str]:
    """(MainPID, ActiveEnterTimestamp): changes exactly when Flower (re)started."""
    show = ["systemctl", "show", "flower.service", "-p", "MainPID", "-p", "ActiveEnterTimestamp"]
    values = dict(line.split("=", 1) for line in on_host(lab, host, show).splitlines() if line)
    return values["MainPID"], values["ActiveEnterTimestamp"]


def starts_since(lab: Lab, host: str, epoch: str) -> int:
    journal = ["journalctl", "-u", "flower.service", "--since", f"@{epoch}", "--no-pager"]
    return on_host(lab, host, journal).count("Started flower.service")


def host_clock(lab: Lab, host: str) -> str:
    return on_host(lab, host, ["date", "+%s"]).strip()


def wait_healthy(lab: Lab, host: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    curl = ["curl", "-sf", "--unix-socket", SOCKET, "http://localhost/healthcheck"]
    while lab.ssh(host, curl).stdout != "OK":
        assert time.monotonic() < deadline, f"Flower on {host} never became healthy"
        time.sleep(1)


def restart_flower(lab: Lab, host: str) -> None:
    """A clean restart (SIGTERM, state saved), not held back by the crash-loop start limit."""
    lab.ssh(host, "systemctl reset-failed flower && systemctl restart flower", check=True)
    wait_healthy(lab, host)


def readable_by_nobody(lab: Lab, host: str, needle: str) -> list[str]:
    """Files an unprivileged user can read that contain `needle` (sent over stdin, not argv)."""
    script = FIND_READABLE.replace("@NEEDLE@", repr(needle))
    ssh = ["ssh", "-i", lab.state["ssh_key"], "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           f"root@{lab.host(host)['address']}", "runuser -u nobody -- python3 -"]  # fmt: skip
    result = subprocess.run(ssh, input=script, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


FIND_READABLE = """
import os
needle = @NEEDLE@.encode()
for top in ("/etc", "/opt", "/var", "/run", "/tmp", "/usr/local", "/root", "/home", "/srv"):
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.isfile(path) and os.path.getsize(path) < 50_000_000:
                    with open(path, "rb") as f:
                        if needle in f.read():
                            print(path)
            except (PermissionError, FileNotFoundError):  # unreadable to nobody, or gone
                pass
"""


# --- the deployed service -------------------------------------------------------------------


def test_flower_is_active_and_enabled(lab: Lab, first_deploy: DeployResult):
    for host in HOSTS:
        assert on_host(lab, host, ["systemctl", "is-active", "flower"]).strip() == "active"
        assert on_host(lab, host, ["systemctl", "is-enabled", "flower"]).strip() == "enabled"


def test_flower_lists_the_lab_worker(lab: Lab, first_deploy: DeployResult):
    for host in HOSTS:
        workers = flower_api(lab, host, "/api/workers?refresh=1")
        assert any(name.startswith("demo@") for name in workers), (host, list(workers))


def test_exposure_score_is_at_most_1_0(lab: Lab, first_deploy: DeployResult):
    for host in HOSTS:
        report = on_host(lab, host, ["systemd-analyze", "security", "flower.service"], False)
        score = float(re.search(r"Overall exposure level for flower.service: ([\d.]+)", report)[1])
        print(f"{host}: systemd-analyze security flower.service = {score}")
        assert score <= 1.0


def test_no_secret_in_processes_unit_or_readable_files(
    lab: Lab, first_deploy: DeployResult, broker_password: str
):
    for host in HOSTS:
        assert broker_password not in on_host(lab, host, ["ps", "-eo", "args"])
        assert broker_password not in on_host(lab, host, ["systemctl", "cat", "flower.service"])
        show = ["systemctl", "show", "flower.service", "-p", "Environment", "-p", "ExecStart"]
        assert broker_password not in on_host(lab, host, show)
        assert readable_by_nobody(lab, host, broker_password) == []
        mode = on_host(lab, host, ["stat", "-c", "%a %U %G", "/etc/flower/flower.env"])
        assert mode.split() == ["600", "root", "root"]


def test_no_secret_in_pyinfra_output(lab: Lab, first_deploy: DeployResult, broker_password: str):
    new_url = lab.secrets["FLOWERBED_BROKER_URL"].replace(broker_password, "rotated-Pw-4711")
    preview = run_deploy(
        ["h1"], flags=("--dry", "--diff", "-vvv"), env={"FLOWERBED_BROKER_URL": new_url}
    )
    assert preview.ok, preview.explain()
    assert "Will update /etc/flower/flower.env (secret: content not shown)" in preview.stderr
    assert_no_secret(preview, [broker_password, "rotated-Pw-4711"])
    plan = run_deploy(["h1"], flags=("--dry", "--json"), env={"FLOWERBED_BROKER_URL": new_url})
    assert plan.ok, plan.explain()
    assert_no_secret(plan, [broker_password, "rotated-Pw-4711"])


def flower_pids(lab: Lab, host: str) -> set[str]:
    """Every process of Flower's unit (its cgroup), the main one among them."""
    group = on_host(lab, host, ["systemctl", "show", "-P", "ControlGroup", "flower.service"])
    pids = set(on_host(lab, host, ["cat", f"/sys/fs/cgroup{group.strip()}/cgroup.procs"]).split())
    assert flower_process(lab, host)[0] in pids, (host, pids)
    return pids


def listeners_of(lab: Lab, host: str, pids: set[str], kinds: str) -> list[str]:
    """The listening sockets (`ss` -l with `kinds`, e.g. "tu": TCP and UDP) a process in `pids`
    holds."""
    lines = on_host(lab, host, ["ss", "-Hlnp" + kinds]).splitlines()
    return [line for line in lines if pids & set(re.findall(r"pid=(\d+)", line))]


FLOWERS_PORTS = """
import sys
from flower.options import options  # Flower's own options: their defaults
ports = {options.port}
variables = open(sys.argv[1], "rb").read().decode().split("\\0")
environ = dict(v.split("=", 1) for v in variables if "=" in v)
ports.add(int(environ.get("FLOWER_PORT", options.port)))  # Flower reads FLOWER_<OPTION>
ports |= {int(a.split("=", 1)[1]) for a in sys.argv[2:] if a.startswith("--port=")}
print(*sorted(ports))
"""


def flowers_ports(lab: Lab, host: str) -> list[int]:
    """The TCP ports Flower would listen on, as Flower itself works them out: its own option's
    default, its environment's FLOWER_PORT, its command line's --port (its venv's Python)."""
    pid = flower_process(lab, host)[0]
    argv = on_host(lab, host, ["cat", f"/proc/{pid}/cmdline"]).split("\0")[:-1]
    ask = [argv[0], "-c", FLOWERS_PORTS, f"/proc/{pid}/environ", *argv[1:]]
    return [int(port) for port in on_host(lab, host, ask).split()]


def test_flower_is_unreachable_from_other_hosts_and_local_users(
    lab: Lab, first_deploy: DeployResult
):
    for position, host in enumerate(HOSTS):
        pids = flower_pids(lab, host)
        # Flower's processes listen on its unix socket and on no TCP or UDP port at all
        assert any(SOCKET in line for line in listeners_of(lab, host, pids, "x")), host
        assert listeners_of(lab, host, pids, "tu") == [], f"Flower listens on {host}"
        # nor can another host reach any port Flower would take (an address from the lab)
        other, address = HOSTS[position - 1], lab.host(host)["address"]
        for port in flowers_ports(lab, host):
            curl = ["curl", "-sS", "--max-time", "3", f"http://{address}:{port}/healthcheck"]
            from_other_host = lab.ssh(other, curl)
            assert from_other_host.returncode != 0, f"{host}:{port} answers {other}"
        socket_dir = on_host(lab, host, ["stat", "-c", "%a %U %G", "/run/flower"]).split()
        assert socket_dir == ["750", "flower", "flower"]
        curl = ["curl", "-sS", "--max-time", "5", "--unix-socket", SOCKET, "http://x/healthcheck"]
        as_nobody = lab.ssh(host, ["runuser", "-u", "nobody", "--", *curl])
        assert as_nobody.returncode != 0 and "OK" not in as_nobody.stdout
        as_proxy = lab.ssh(host, ["runuser", "-u", "www-data", "--", *curl])
        assert as_proxy.stdout == "OK", as_proxy.stderr


def test_the_proxys_user_cannot_use_flowers_api_without_the_login_only_nginx_holds(
    lab: Lab, first_deploy: DeployResult
):
    """Other processes of nginx's user (PHP, an app) reach the socket, not the API."""
    for host in HOSTS:

        def as_proxy(method: str, path: str, host: str = host) -> str:
            curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                    "--unix-socket", SOCKET, "-X", method, f"http://localhost{path}"]  # fmt: skip
            return lab.ssh(host, ["runuser", "-u", "www-data", "--", *curl]).stdout

        assert as_proxy("POST", f"/api/task/revoke/{uuid.uuid4()}") in ("401", "403"), host
        assert as_proxy("POST", "/api/worker/pool/shrink/demo@labmachine") in ("401", "403")
        assert as_proxy("GET", "/api/workers") == "401", host
        assert as_proxy("GET", "/healthcheck") == "200", "Flower never guards its health check"
        for secret in (PROXY_LOGIN, PROXY_LOGIN.replace(".env", ".nginx.conf")):
            mode = on_host(lab, host, ["stat", "-c", "%a %U", secret]).split()
            assert mode == ["600", "root"], (secret, mode)
        assert flower_api(lab, host, "/api/workers"), "root with the login (the health check)"


def test_second_run_changes_nothing(lab: Lab, first_deploy: DeployResult):
    before = {host: flower_process(lab, host) for host in HOSTS}
    again = run_deploy(HOSTS)
    assert again.ok, again.explain()
    print(f"no-op run on {len(HOSTS)} hosts: {again.seconds:.1f} s")
    assert again.totals["success"] == 0 and again.totals["error"] == 0, again.totals
    assert {host: flower_process(lab, host) for host in HOSTS} == before


def hosts_in_op(result: DeployResult, operation: str) -> list[str]:
    """Every host the run executed an operation (name contains `operation`) on, changed or not."""
    ops = [op for op in result.report["results"]["operations"] if operation in op["name"]]
    assert ops, f"no operation named like {operation!r} ran"
    return sorted({host for op in ops for host in (*op["success"], *op["no_change"], *op["error"])})


def test_changing_one_option_restarts_only_that_host(lab: Lab, first_deploy: DeployResult):
    """One run over h1-h3 in which only h2's data differs: only h2 restarts (and restarts back)."""
    config = ["cat", "/etc/flower/flowerconfig.py"]
    before = {host: flower_process(lab, host) for host in HOSTS}
    assert "max_tasks = 5000" not in on_host(lab, "h2", config), "h2 already has the new value"
    h2_only = {"FLOWERBED_TEST_HOST_DATA": json.dumps({"h2": {"flower_max_tasks": 5000}})}
    changed = run_deploy(HOSTS, inventory="tests/inventories/lab.py", env=h2_only)
    try:
        assert changed.ok, changed.explain()
        assert hosts_in_op(changed, "Restart Flower") == HOSTS, "the run covered h1, h2 and h3"
        assert changed.changed_hosts("Restart Flower") == ["h2"]
        assert changed.changed_hosts("Reload systemd") == []
        assert "max_tasks = 5000" in on_host(lab, "h2", config)
        for host in ("h1", "h3"):
            assert "max_tasks = 5000" not in on_host(lab, host, config), host
        during = {host: flower_process(lab, host) for host in HOSTS}
        assert during["h2"][0] != before["h2"][0], "h2's MainPID is unchanged: no restart"
        assert during["h1"] == before["h1"], "h1 restarted"
        assert during["h3"] == before["h3"], "h3 restarted"
    finally:
        restored = run_deploy(HOSTS)
    assert restored.ok, restored.explain()
    assert hosts_in_op(restored, "Restart Flower") == HOSTS
    assert restored.changed_hosts("Restart Flower") == ["h2"], "only h2 restarts back"
    assert "max_tasks = 5000" not in on_host(lab, "h2", config)
    after = {host: flower_process(lab, host) for host in HOSTS}
    assert after["h2"][0] != during["h2"][0], "h2's MainPID is unchanged: no restart back"
    assert after["h1"] == before["h1"] and after["h3"] == before["h3"]


def test_tasks_survive_a_restart(lab: Lab, first_deploy: DeployResult):
    deadline = time.monotonic() + 60
    while not (seen := set(flower_api(lab, "h1", "/api/tasks?limit=50"))):
        assert time.monotonic() < deadline, "Flower saw no task from the lab's producer"
        time.sleep(2)
    restart_flower(lab, "h1")
    after = set(flower_api(lab, "h1", "/api/tasks"))
    assert seen <= after, f"lost {len(seen - after)} of {len(seen)} tasks"


def test_app_mode_shows_the_apps_registered_tasks(lab: Lab, first_deploy: DeployResult):
    since = host_clock(lab, "h3")
    with_app = run_deploy(["h3"], data=DEMO_APP)
    try:
        assert with_app.ok, with_app.explain()
        assert "--app=flowerbed_demo.app:app" in on_host(lab, "h3", ["ps", "-eo", "args"])
        banner = on_host(lab, "h3", ["journalctl", "-u", "flower", "--since", f"@{since}"])
        for task in DEMO_TASKS:
            assert f"'{task}'" in banner, "Flower's start banner lists the app's tasks"
        assert run_deploy(["h3"], data=DEMO_APP).totals["success"] == 0
    finally:
        assert run_deploy(["h3"]).ok


def test_version_bump_upgrades_in_place_and_restarts_once(lab: Lab, first_deploy: DeployResult):
    version = ["/opt/flower/venv/bin/python", "-c", "import flower; print(flower.__version__)"]
    for flower_version in ("2.1.0", "2.2.0"):
        since = host_clock(lab, "h1")
        bumped = run_deploy(["h1"], data={"flower_version": flower_version})
        assert bumped.ok, bumped.explain()
        assert on_host(lab, "h1", version).strip() == flower_version
        assert starts_since(lab, "h1", since) == 1
        venvs = on_host(lab, "h1", ["ls", "/opt/flower/venvs"]).split()
        assert len(venvs) == 1, venvs
    assert flower_api(lab, "h1", "/api/workers")


def test_bad_setting_stops_the_run_before_any_host_changes(lab: Lab, first_deploy: DeployResult):
    before = {host: flower_process(lab, host) for host in HOSTS}
    config = ["stat", "-c", "%Y", "/etc/flower/flowerconfig.py"]
    stamps = {host: on_host(lab, host, config) for host in HOSTS}
    bad = run_deploy(HOSTS, data={"flower_max_tasks": 5000, "flower_persistant": True})
    assert bad.returncode != 0
    assert "flower_persistant: unknown key" in bad.stderr
    assert "did you mean 'flower_persistent'" in bad.stderr
    assert "Beginning operation run" not in bad.stderr
    assert {host: on_host(lab, host, config) for host in HOSTS} == stamps
    assert {host: flower_process(lab, host) for host in HOSTS} == before


def test_unhealthy_flower_fails_its_host_with_its_journal(lab: Lab, first_deploy: DeployResult):
    broker = lab.state["broker"]["address"].split(":")
    cut_off_broker = [
        "nft add table inet flowerbed_test",
        "nft add chain inet flowerbed_test out { type filter hook output priority 0 \\; }",
        f"nft add rule inet flowerbed_test out ip daddr {broker[0]} tcp dport {broker[1]}"
        " reject with tcp reset",
    ]
    lab.ssh("h2", " && ".join(cut_off_broker), check=True)
    h2_changed = {"h2": {"flower_healthcheck_timeout": 5, "flower_max_tasks": 5001}}
    try:
        quiet = run_deploy(["h2"], data={"flower_healthcheck_timeout": 5})
        assert quiet.ok and quiet.totals["success"] == 0, "a run that changes nothing passes"
        assert "flower.service is running, no failed check: verify.py checks" in quiet.log
        # a change Flower restarts for: the check runs, waits, and fails h2 alone
        checked = run_deploy(
            ["h2", "h3"],
            inventory="tests/inventories/lab.py",
            env={"FLOWERBED_TEST_HOST_DATA": json.dumps(h2_changed)},
        )
        assert checked.returncode != 0
        assert checked.failed_hosts == ["h2"], checked.explain()
        unhealthy = re.findall(r"\[h2\] +Flower is unhealthy: (.*)", checked.log)
        assert unhealthy, checked.log[-3000:]
        assert re.search(r"\[h2\] +journal: .*celery", checked.log), "the journal's last lines"
        # run again: nothing changes now, but the failed check left its marker: checked again
        again = run_deploy(["h2"], data=h2_changed["h2"])  # its only host fails: no --json
        assert again.returncode != 0, "a rerun after a failed check checks again"
        assert re.search(r"\[h2\] +Flower is unhealthy: ", again.log), again.log[-3000:]
    finally:
        lab.ssh("h2", "nft delete table inet flowerbed_test", check=True)
        restored = run_deploy(["h2"])
    assert restored.ok, restored.explain()
    assert on_host(lab, "h2", ["ls", "/var/lib/flowerbed"]).split().count("flower-unhealthy") == 0


# --- Debian 13 ------------------------------------------------------------------------------


def test_debian_13_host(lab: Lab, fresh_host, broker_password: str):
    host = fresh_host("trixie", prefix="t")["name"]
    assert "trixie" in on_host(lab, host, ["cat", "/etc/os-release"])
    first = run_deploy([host])
    assert first.ok, first.explain()
    print(f"first deploy on Debian 13: {first.seconds:.1f} s")
    assert on_host(lab, host, ["systemctl", "is-enabled", "flower"]).strip() == "enabled"
    assert any(n.startswith("demo@") for n in flower_api(lab, host, "/api/workers?refresh=1"))
    report = on_host(lab, host, ["systemd-analyze", "security", "flower.service"], False)
    score = float(re.search(r"Overall exposure level for flower.service: ([\d.]+)", report)[1])
    print(f"{host} (Debian 13): exposure {score}")
    assert score <= 1.0
    assert readable_by_nobody(lab, host, broker_password) == []
    second = run_deploy([host])
    assert second.ok and second.totals["success"] == 0, second.totals
    with_app = run_deploy([host], data=DEMO_APP)
    assert with_app.ok, with_app.explain()
    assert "--app=flowerbed_demo.app:app" in on_host(lab, host, ["ps", "-eo", "args"])
