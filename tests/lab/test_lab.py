"""The lab itself: real hosts with systemd, pyinfra reachability, ACME, filtering."""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from pathlib import Path

import lab_worker
import pytest
from conftest import REPO, Lab, lab_cli, restore_users_lab, run, users_lab
from deploy_helpers import run_deploy
from labkit.celery_lab import broker_password, redis_answers

pytestmark = pytest.mark.lab


def test_every_host_runs_systemd(lab: Lab):
    for host in lab.base_hosts:
        result = lab.ssh(host["name"], "systemctl is-system-running --wait")
        assert result.stdout.strip() == "running", (host["name"], result.stdout, result.stderr)
        assert lab.ssh(host["name"], "cat /proc/1/comm").stdout.strip() == "systemd"


def test_every_host_answers_pyinfra(lab: Lab):
    result = run(
        [
            str(REPO / ".venv/bin/pyinfra"),
            "-y",
            "inventory/lab.py",
            "fact",
            "server.Hostname",
            "--json",
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    hostnames = json.loads(result.stdout)["server.Hostname"]
    for host in lab.base_hosts:
        assert hostnames[host["name"]] == host["name"]


def test_hosts_reach_packages_only_through_the_proxy(lab: Lab):
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    assert lab.ssh("h1", "ip route show default").stdout.strip() == ""  # no way out but the proxy
    proxied = lab.ssh(
        "h1",
        [
            "curl",
            "-sS",
            "-m",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--proxy",
            lab.state["proxy"],
            "https://pypi.org/simple/flower/",
        ],
    )
    assert proxied.stdout == "200", proxied.stderr
    # ... and never without it: no route out (an address, so DNS plays no part), exit 7
    direct = lab.ssh("h1", ["curl", "-sS", "-m", "10", "--noproxy", "*", "https://1.1.1.1/"])
    assert direct.returncode == 7, f"h1 reached the internet directly: {direct.returncode}"
    assert "unreachable" in direct.stderr.lower() or "connect" in direct.stderr.lower()
    for name in ("pypi.org", "deb.debian.org"):
        by_name = lab.ssh("h1", ["curl", "-sS", "-m", "10", "--noproxy", "*", f"https://{name}/"])
        assert by_name.returncode != 0, f"h1 reached {name} without the proxy"


def test_the_worker_answers_celery_inspect_ping_from_a_host(lab: Lab):
    """From a host, through the broker, with Celery from Flower's venv (deployed if need be)."""
    deployed = run_deploy(["h1"])
    assert deployed.ok, deployed.explain()
    ping = lab.ssh(
        "h1",
        "set -a && . /etc/flower/flower.env && "
        "/opt/flower/venv/bin/celery inspect ping --timeout 5 -d demo@labmachine",
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "demo@labmachine: OK" in ping.stdout and "pong" in ping.stdout


def test_lab_names_resolve(lab: Lab):
    for host in lab.base_hosts:
        assert run(["getent", "hosts", host["fqdn"]]).stdout.split()[0] == host["address"]
        from_lab_dns = run(["dig", "+short", f"@{lab.state['bridge']['address']}", host["fqdn"]])
        assert from_lab_dns.stdout.strip() == host["address"]


def test_certbot_gets_a_certificate_from_the_lab_ca(lab: Lab, fresh_host):
    host = fresh_host()
    name = host["name"]
    acme = lab.state["acme"]
    install = lab.ssh(
        name,
        "DEBIAN_FRONTEND=noninteractive apt-get update -q && "
        "apt-get install -y -q --no-install-recommends certbot",
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    ca = Path(acme["ca_bundle"]).read_text()
    lab.ssh(name, f"cat > /root/acme-ca.pem <<'EOF'\n{ca}EOF", check=True)
    certbot = [
        "env",
        "REQUESTS_CA_BUNDLE=/root/acme-ca.pem",
        "certbot",
        "certonly",
        "--standalone",
        "--server",
        acme["directory"],
        "-d",
        host["fqdn"],
        "--agree-tos",
        "-n",
        "--register-unsafely-without-email",
    ]
    issued = lab.ssh(name, certbot, timeout=120)
    assert issued.returncode == 0, issued.stdout + issued.stderr
    chain = lab.ssh(name, f"cat /etc/letsencrypt/live/{host['fqdn']}/fullchain.pem").stdout
    Path(REPO / ".lab" / "test-chain.pem").write_text(chain)
    verify = run(
        [
            "openssl",
            "verify",
            "-CAfile",
            acme["root"],
            "-untrusted",
            str(REPO / ".lab" / "test-chain.pem"),
            str(REPO / ".lab" / "test-chain.pem"),
        ]
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_filtered_port_is_reachable_only_from_lab_allowed(lab: Lab, fresh_host):
    host = fresh_host()
    allowed_net = lab.state["allowed_sources"][-1]
    lab.ssh(host["name"], "systemd-run --unit=probe-http python3 -m http.server 8080", check=True)
    url = f"http://{host['address']}:8080/"
    curl = ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", url]
    assert wait_until(lambda: lab.in_namespace("lab-denied", curl).stdout == "200")
    ruleset = (
        "table inet labprobe {\n chain input {\n"
        "  type filter hook input priority 0; policy accept;\n"
        f"  tcp dport 8080 ip saddr != {allowed_net} drop\n }}\n}}\n"
    )
    lab.ssh(host["name"], f"nft -f - <<'EOF'\n{ruleset}EOF", check=True)
    assert lab.in_namespace("lab-allowed", curl).stdout == "200"
    assert lab.in_namespace("lab-denied", curl).stdout == "000"


def test_second_lab_up_is_a_quick_no_op(lab: Lab):
    assert lab.base_hosts, "the lab has hosts"
    before = {host["name"]: boot_identity(lab, host["name"]) for host in lab.base_hosts}
    started = time.monotonic()
    lab_cli("up", "--hosts", str(len(lab.base_hosts)))
    assert time.monotonic() - started < 15  # generous: a no-op checks PIDs and ssh only
    after = {host["name"]: boot_identity(lab, host["name"]) for host in lab.base_hosts}
    assert after == before, "no host was rebuilt or rebooted"


def boot_identity(lab: Lab, name: str) -> tuple[str, int]:
    """(the host's boot id, its init's PID on this machine): both change when it is rebuilt."""
    boot_id = lab.ssh(name, ["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout
    nspawn = (REPO / ".lab" / "run" / f"nspawn-{name}.pid").read_text().strip()
    children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
    assert len(children) == 1, f"nspawn {nspawn} runs one init: {children}"
    init = int(children[0])
    assert Path(f"/proc/{init}/comm").read_text().strip() == "systemd", "it is the host's init"
    return boot_id.strip(), init


def wait_until(check, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.lab_lifecycle
def test_a_half_alive_lab_is_rebuilt_and_down_leaves_nothing(lab: Lab):
    run_dir = REPO / ".lab" / "run"
    # What a killed session leaves: every lab process gone, mounts, bridge, namespaces kept.
    for pid_file in run_dir.glob("*.pid"):
        run(["kill", "-KILL", pid_file.read_text().strip()])
    for host in lab.state["hosts"]:
        for pid in pids_of_machine(host["name"]):
            run(["kill", "-KILL", pid])
    time.sleep(1)
    lab_cli("up", "--hosts", "2")
    rebuilt = Lab.load()
    for name in ("h1", "h2"):
        assert rebuilt.ssh(name, "systemctl is-system-running --wait").stdout.strip() == "running"

    lab_cli("down")
    assert run(["ip", "link", "show", "fb-lab"]).returncode != 0
    assert "flowerbed" not in Path("/proc/mounts").read_text()
    assert "lab-allowed" not in run(["ip", "netns", "list"]).stdout
    assert "flowerbed" not in Path("/etc/hosts").read_text()
    lab_processes = "systemd-nspawn|pebble|tinyproxy|redis-server .*6379|flowerbed_demo"
    assert wait_until(lambda: not live_processes(lab_processes)), live_processes(lab_processes)
    assert not (REPO / ".lab").exists()

    # a lab the user had up before the session (`make demo`) is put back as it was
    restore_users_lab(lab)
    if users := users_lab():
        assert Path(lab.state["secrets_file"]).read_text() == users.secrets, "the same login"
        for name in users.hosts:
            flower = lab.ssh(name, ["systemctl", "is-active", "flower.service"]).stdout.strip()
            assert flower == ("active" if users.deployed else "inactive"), name


def pids_of_machine(name: str) -> list[str]:
    return run(["pgrep", "-f", f"systemd-nspawn .* -M {shlex.quote(name)} "]).stdout.split()


def live_processes(pattern: str) -> list[str]:
    """Processes whose command line matches, zombies left out (they are gone, not yet reaped)."""
    matching = run(["pgrep", "-f", pattern]).stdout.split()
    if not matching:
        return []
    states = run(["ps", "-o", "pid=,stat=,args=", "-p", ",".join(matching)]).stdout
    return [line for line in states.splitlines() if line.split()[1][0] != "Z"]


def test_a_worker_finishing_its_tasks_is_waited_for_and_replaced_by_lab_up(lab: Lab):
    """A warm shutdown keeps the worker alive while its long tasks end: alive is not running."""
    old = lab_worker.stop_mid_task(lab)
    try:
        assert Path(f"/proc/{old}").exists(), "the worker is still finishing its tasks"
    finally:
        lab_worker.put_back(lab, [])
    assert not Path(f"/proc/{old}").exists() and lab_worker.pid() != old


def test_a_frozen_broker_is_replaced_by_lab_up_and_the_worker_answers_through_it(lab: Lab):
    redis = int((REPO / ".lab" / "run" / "redis.pid").read_text())
    os.kill(redis, signal.SIGSTOP)  # alive, its port open, and silent
    try:
        assert not redis_answers(broker_password(lab.secrets["FLOWERBED_BROKER_URL"]))
    finally:
        lab_worker.put_back(lab, [])
    assert not Path(f"/proc/{redis}").exists(), "the frozen Redis was replaced"
