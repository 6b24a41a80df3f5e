"""The firewall on real lab hosts: who reaches which port, and that it never locks the operator out.

Reachability is judged by how a TCP connection ends: `filtered` (no answer: the firewall dropped
the SYN) or `open`/`refused` (the host's TCP stack answered: the firewall let it through). So these
tests hold whatever listens behind the firewall.

h1 gets the full deploy (shared with the other lab tests). The lockout tests get a host of their
own, bare for the first of them, and run only the firewall (tests/deploys/firewall_only.py).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time

import pytest
from conftest import Lab, lab_cli, run
from deploy_helpers import DeployResult, run_deploy

pytestmark = pytest.mark.lab

DEPLOYED = "h1"
FIREWALL_ONLY = "tests/deploys/firewall_only.py"
SCRIPT = "/usr/local/libexec/flowerbed/flowerbed-firewall"
BOOT_RULESET = "/etc/flowerbed/firewall.nft"
STATE_DIR = "/var/lib/flowerbed/firewall"
SWITCH = [SCRIPT, STATE_DIR, BOOT_RULESET]  # the script is told where its state lives
FLOWER_PORT = 5555  # Flower's default TCP port: flowerbed uses a unix socket, a stray one is caught
LOCKED_OUT = {"admin_sources": ["10.77.0.99/32"]}  # not the lab machine: would cut the operator off

PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("filtered")
"""


def tcp(lab: Lab, namespace: str | None, host: str, port: int, timeout: float = 3) -> str:
    """How a TCP connection from a namespace (None: the lab machine) to host:port ends."""
    argv = [sys.executable, "-c", PROBE, lab.host(host)["address"], str(port), str(timeout)]
    if namespace is None:
        return run(argv, timeout=timeout + 10, check=True).stdout.strip()
    result = lab.in_namespace(namespace, argv, timeout=timeout + 10)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def passes(state: str) -> bool:
    return state in ("open", "refused")


def table(lab: Lab, host: str) -> str:
    """flowerbed's live table, without counters ('' when none is loaded)."""
    return lab.ssh(host, "nft -s list table inet flowerbed 2>/dev/null || true", check=True).stdout


def firewall_ops(result: DeployResult) -> list[dict]:
    return [
        op for op in result.report["results"]["operations"] if op["name"].startswith("Firewall")
    ]


# --- h1, fully deployed ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(lab: Lab) -> str:
    result = run_deploy([DEPLOYED])
    assert result.ok, result.explain()
    return DEPLOYED


@pytest.fixture
def stray_listener(lab: Lab, deployed: str):
    """Something listening on all interfaces on Flower's default port, for the test's duration."""
    unit = "flowerbed-test-stray-listener"
    serve = ["python3", "-m", "http.server", "--bind", "0.0.0.0", str(FLOWER_PORT)]
    lab.ssh(deployed, ["systemd-run", f"--unit={unit}", "--collect", *serve], check=True)
    listening = f"ss -ltn | grep -q ':{FLOWER_PORT} '"
    for _ in range(50):
        if lab.ssh(deployed, listening).returncode == 0:
            break
        time.sleep(0.1)
    yield FLOWER_PORT
    lab.ssh(deployed, ["systemctl", "stop", unit])


def test_https_only_from_allowed_sources(lab: Lab, deployed: str):
    assert passes(tcp(lab, "lab-allowed", deployed, 443))
    assert tcp(lab, "lab-denied", deployed, 443) == "filtered"


def test_http_is_open_for_acme_everywhere(lab: Lab, deployed: str):
    assert passes(tcp(lab, "lab-denied", deployed, 80))
    assert passes(tcp(lab, "lab-allowed", deployed, 80))


def test_ssh_only_from_admin_sources(lab: Lab, deployed: str):
    assert lab.ssh(deployed, ["true"]).returncode == 0, "the operator (lab machine) gets in"
    assert tcp(lab, "lab-allowed", deployed, 22) == "filtered"
    assert tcp(lab, "lab-denied", deployed, 22) == "filtered"


def test_flowers_port_is_unreachable_even_if_something_listens(
    lab: Lab, deployed: str, stray_listener: int
):
    assert (
        lab.ssh(deployed, f"curl -s -o /dev/null http://127.0.0.1:{stray_listener}/").returncode
        == 0
    )
    assert tcp(lab, "lab-allowed", deployed, stray_listener) == "filtered"
    assert tcp(lab, "lab-denied", deployed, stray_listener) == "filtered"


def test_flowers_socket_is_no_network_address(lab: Lab, deployed: str):
    listening = lab.ssh(deployed, ["ss", "-Htlnp"], check=True).stdout
    assert "flower" not in listening and "celery" not in listening, listening


def test_table_is_flowerbeds_own_and_loaded_at_boot(lab: Lab, deployed: str):
    assert "policy drop" in table(lab, deployed)
    enabled = lab.ssh(deployed, ["systemctl", "is-enabled", "flowerbed-firewall.service"])
    assert enabled.stdout.strip() == "enabled"


def test_second_run_changes_no_firewall_operation(lab: Lab, deployed: str):
    result = run_deploy([DEPLOYED])
    assert result.ok, result.explain()
    assert firewall_ops(result), "the deploy runs the firewall"
    assert [op["name"] for op in firewall_ops(result) if op["success"]] == []


# --- a host of our own: the operator is never locked out -----------------------------------


@pytest.fixture(scope="module")
def own_host(lab: Lab) -> str:
    """A fresh host for this module; the first test sees it without flowerbed's firewall."""
    name = f"fw{os.getpid() % 1000}"
    lab_cli("host-up", name)
    lab.state = Lab.load().state
    yield name
    lab_cli("host-down", name)
    lab.state = Lab.load().state


@pytest.fixture(scope="module")
def guarded(lab: Lab, own_host: str) -> str:
    """The same host with a confirmed firewall (firewall-only deploy)."""
    result = run_deploy(own_host, deploy_file=FIREWALL_ONLY)
    assert result.ok, result.explain()
    return own_host


def assert_rolled_back(result: DeployResult) -> None:
    assert not result.ok, "the run reports the host failed"
    assert "no NEW SSH connection" in result.stderr and "admin_sources" in result.stderr
    assert "the previous ruleset is restored" in result.stderr


def test_lockout_on_a_fresh_host_is_rolled_back(lab: Lab, own_host: str):
    result = run_deploy(own_host, LOCKED_OUT, deploy_file=FIREWALL_ONLY)
    assert_rolled_back(result)
    assert lab.ssh(own_host, ["true"]).returncode == 0, "the operator still gets in"
    assert table(lab, own_host) == "", "the host has its old (empty) ruleset"
    assert lab.ssh(own_host, ["test", "-e", BOOT_RULESET]).returncode == 1, "nothing at boot"


def test_lockout_keeps_the_previous_ruleset(lab: Lab, guarded: str):
    before = table(lab, guarded)
    boot_before = lab.ssh(guarded, ["sha256sum", BOOT_RULESET], check=True).stdout
    result = run_deploy(guarded, LOCKED_OUT, deploy_file=FIREWALL_ONLY)
    assert_rolled_back(result)
    assert lab.ssh(guarded, ["true"]).returncode == 0
    assert table(lab, guarded) == before
    assert lab.ssh(guarded, ["sha256sum", BOOT_RULESET], check=True).stdout == boot_before
    again = run_deploy(guarded, deploy_file=FIREWALL_ONLY)
    assert again.ok and again.totals["success"] == 0, again.explain()


def test_timer_restores_the_ruleset_when_the_operator_is_gone(lab: Lab, guarded: str):
    """pyinfra killed between apply and confirm: nobody confirms, the host undoes it alone."""
    before = table(lab, guarded)
    locking = before.replace("10.77.0.1 ", "10.77.0.99 ")
    assert locking != before
    replace_table = f"table inet flowerbed\ndelete table inet flowerbed\n{locking}"
    digest = re.search(r"flowerbed sha256:([0-9a-f]+)", before)[1]
    pending = f"{STATE_DIR}/pending-{digest}.nft"
    lab.ssh(guarded, f"printf %s {shlex.quote(replace_table)} > {pending}", check=True)
    lab.ssh(guarded, [*SWITCH, "apply", digest, "8"], check=True)
    assert lab.ssh(guarded, ["true"], timeout=20).returncode != 0, "new connections are cut off"
    deadline = time.monotonic() + 30
    while lab.ssh(guarded, ["true"], timeout=20).returncode != 0:
        assert time.monotonic() < deadline, "the rollback timer never restored the ruleset"
        time.sleep(1)
    assert table(lab, guarded) == before


def test_ruleset_failing_nft_check_is_never_loaded(lab: Lab, guarded: str):
    before = table(lab, guarded)
    broken = 'table inet flowerbed { comment "flowerbed sha256:0badc0de"; broken'
    lab.ssh(guarded, f"echo {shlex.quote(broken)} > {STATE_DIR}/pending-0badc0de.nft", check=True)
    result = lab.ssh(guarded, [*SWITCH, "apply", "0badc0de", "60"])
    assert result.returncode == 3 and "fails nft -c" in result.stderr
    assert table(lab, guarded) == before
    timers = lab.ssh(guarded, ["systemctl", "is-active", "flowerbed-firewall-rollback.timer"])
    assert timers.stdout.strip() != "active", "no rollback timer left armed"


def test_table_survives_nftables_restart_and_reboot(lab: Lab, guarded: str):
    before = table(lab, guarded)
    lab.ssh(guarded, ["systemctl", "restart", "nftables.service"], check=True)
    assert table(lab, guarded) == before, "nftables.conf's `flush ruleset` was undone"
    assert "table inet filter" in lab.ssh(guarded, ["nft", "list", "tables"]).stdout
    # stopping nftables flushes everything: after the reboot only flowerbed's unit loads it
    lab.ssh(guarded, ["systemctl", "stop", "nftables.service"], check=True)
    lab.ssh(guarded, "systemctl reboot || true")
    time.sleep(3)
    deadline = time.monotonic() + 60
    while lab.ssh(guarded, ["true"], timeout=10).returncode != 0:
        assert time.monotonic() < deadline, "the host did not come back after a reboot"
        time.sleep(1)
    assert table(lab, guarded) == before


def test_debian_13_applies_confirms_and_rolls_back(lab: Lab, fresh_host):
    name = fresh_host(distro="trixie", prefix="fw")["name"]
    first = run_deploy(name, deploy_file=FIREWALL_ONLY)
    assert first.ok, first.explain()
    confirmed = table(lab, name)
    assert "policy drop" in confirmed
    assert_rolled_back(run_deploy(name, LOCKED_OUT, deploy_file=FIREWALL_ONLY))
    assert table(lab, name) == confirmed
    again = run_deploy(name, deploy_file=FIREWALL_ONLY)
    assert again.ok and again.totals["success"] == 0, again.explain()
