"""The firewall on real lab hosts: who reaches which port, and that it never locks the operator out.

Reachability is judged by how a TCP connection ends: `filtered` (no answer: the firewall dropped
the SYN) or `open`/`refused` (the host's TCP stack answered: the firewall let it through). So these
tests hold whatever listens behind the firewall.

h1 gets the full deploy (shared with the other lab tests). The lockout tests get a host of their
own, bare for the first of them, and run only the firewall (tests/deploys/firewall_only.py).
"""

from __future__ import annotations

import re
import shlex
import sys
import time

import pytest
from conftest import Lab, run
from deploy_helpers import DeployResult, run_deploy

from flowerbed.firewall import BOOT_RULESET, SCRIPT, STATE_DIR, pending_ruleset

pytestmark = pytest.mark.lab

DEPLOYED = "h1"
FIREWALL_ONLY = "tests/deploys/firewall_only.py"
SWITCH = [SCRIPT, STATE_DIR, BOOT_RULESET]  # the script is told where its state lives
FLOWER_PORT = 5555  # Flower's default TCP port: flowerbed uses a unix socket, a stray one is caught
LOCKED_OUT = {
    "flower_admin_sources": ["10.77.0.99/32"]
}  # not the lab machine: would cut the operator off

PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:  # only silence is a filter; any other error fails the probe
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
    listed = lab.ssh(host, ["nft", "-s", "list", "table", "inet", "flowerbed"])
    if listed.returncode != 0 and "No such file or directory" in listed.stderr:
        return ""
    assert listed.returncode == 0, f"nft list failed on {host}: {listed.stderr}"
    return listed.stdout


def guarding(ruleset: str) -> str:
    """A live flowerbed table, checked to be one (so comparing against it means something)."""
    assert "policy drop" in ruleset and "flowerbed sha256:" in ruleset, ruleset
    return ruleset


def boot_id(lab: Lab, host: str) -> str:
    return lab.ssh(host, ["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()


def firewall_ops(result: DeployResult) -> list[dict]:
    """The Firewall deploy's operations (named `flowerbed | Firewall | ...` in deploy_flowerbed)."""
    operations = result.report["results"]["operations"]
    return [op for op in operations if "Firewall" in op["name"].split(" | ")[:-1]]


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
    lab.ssh(deployed, ["systemctl", "stop", unit], check=True)


def test_https_only_from_allowed_sources(lab: Lab, deployed: str):
    assert passes(tcp(lab, "lab-allowed", deployed, 443))
    assert tcp(lab, "lab-denied", deployed, 443) == "filtered"


def test_http_is_open_for_acme_everywhere(lab: Lab, deployed: str):
    assert passes(tcp(lab, "lab-denied", deployed, 80))
    assert passes(tcp(lab, "lab-allowed", deployed, 80))


def test_ssh_only_from_admin_sources(lab: Lab, deployed: str):
    assert lab.ssh(deployed, ["true"]).returncode == 0, "the operator (lab machine) gets in"
    assert passes(tcp(lab, None, deployed, 22))
    assert tcp(lab, "lab-allowed", deployed, 22) == "filtered"
    assert passes(tcp(lab, "lab-allowed", deployed, 443)), "lab-allowed reaches the host"
    assert tcp(lab, "lab-denied", deployed, 22) == "filtered"
    assert passes(tcp(lab, "lab-denied", deployed, 80)), "lab-denied reaches the host"


def test_flowers_port_is_unreachable_even_if_something_listens(
    lab: Lab, deployed: str, stray_listener: int
):
    assert (
        lab.ssh(deployed, f"curl -s -o /dev/null http://127.0.0.1:{stray_listener}/").returncode
        == 0
    )
    assert tcp(lab, "lab-allowed", deployed, stray_listener) == "filtered"
    assert passes(tcp(lab, "lab-allowed", deployed, 443)), "lab-allowed reaches the host"
    assert tcp(lab, "lab-denied", deployed, stray_listener) == "filtered"
    assert passes(tcp(lab, "lab-denied", deployed, 80)), "lab-denied reaches the host"


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
def own_host(module_hosts) -> str:
    """A fresh host for this module's lockout tests."""
    return module_hosts(prefix="fw")["name"]


@pytest.fixture(scope="module")
def guarded(lab: Lab, own_host: str) -> str:
    """The same host with a confirmed firewall (firewall-only deploy)."""
    result = run_deploy(own_host, deploy_file=FIREWALL_ONLY)
    assert result.ok, result.explain()
    return own_host


def assert_rolled_back(result: DeployResult) -> None:
    assert not result.ok, "the run reports the host failed"
    assert "no NEW SSH connection" in result.stderr and "flower_admin_sources" in result.stderr
    assert "the previous ruleset is restored" in result.stderr


def test_lockout_on_a_fresh_host_is_rolled_back(lab: Lab, fresh_host):
    name = fresh_host(prefix="fw")["name"]
    assert table(lab, name) == "", "a fresh host has no flowerbed table"
    result = run_deploy(name, LOCKED_OUT, deploy_file=FIREWALL_ONLY)
    assert_rolled_back(result)
    assert lab.ssh(name, ["true"]).returncode == 0, "the operator still gets in"
    assert table(lab, name) == "", "the host has its old (empty) ruleset"
    assert lab.ssh(name, ["test", "-e", BOOT_RULESET]).returncode == 1, "nothing at boot"


def test_lockout_keeps_the_previous_ruleset(lab: Lab, guarded: str):
    before = guarding(table(lab, guarded))
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
    before = guarding(table(lab, guarded))
    locking = before.replace("10.77.0.1 ", "10.77.0.99 ")
    assert locking != before
    replace_table = f"table inet flowerbed\ndelete table inet flowerbed\n{locking}"
    digest = re.search(r"flowerbed sha256:([0-9a-f]+)", before)[1]
    pending = pending_ruleset(digest)
    lab.ssh(guarded, f"printf %s {shlex.quote(replace_table)} > {pending}", check=True)
    lab.ssh(guarded, [*SWITCH, "apply", digest, "8", pending], check=True)
    assert lab.ssh(guarded, ["true"], timeout=20).returncode != 0, "new connections are cut off"
    deadline = time.monotonic() + 30
    while lab.ssh(guarded, ["true"], timeout=20).returncode != 0:
        assert time.monotonic() < deadline, "the rollback timer never restored the ruleset"
        time.sleep(1)
    assert table(lab, guarded) == before


def test_ruleset_failing_nft_check_is_never_loaded(lab: Lab, guarded: str):
    before = guarding(table(lab, guarded))
    broken = 'table inet flowerbed { comment "flowerbed sha256:0badc0de"; broken'
    pending = pending_ruleset("0badc0de")
    lab.ssh(guarded, f"echo {shlex.quote(broken)} > {pending}", check=True)
    result = lab.ssh(guarded, [*SWITCH, "apply", "0badc0de", "60", pending])
    assert result.returncode == 3 and "fails nft -c" in result.stderr
    assert table(lab, guarded) == before
    timers = lab.ssh(guarded, ["systemctl", "is-active", "flowerbed-firewall-rollback.timer"])
    assert timers.stdout.strip() != "active", "no rollback timer left armed"


def test_a_foreign_table_survives_apply_and_rollback(lab: Lab, guarded: str):
    """flowerbed replaces only its own table: another tool's table stays, rules and all."""
    before = guarding(table(lab, guarded))
    foreign = (
        "table inet someone_else {\n chain input {\n"
        "  type filter hook input priority 10; policy accept;\n"
        '  tcp dport 9999 counter accept comment "not flowerbed\'s"\n }\n}\n'
    )
    lab.ssh(guarded, f"nft -f - <<'EOF'\n{foreign}EOF", check=True)
    listed = ["nft", "-s", "list", "table", "inet", "someone_else"]
    theirs = lab.ssh(guarded, listed, check=True).stdout
    assert "not flowerbed's" in theirs
    try:
        assert_rolled_back(run_deploy(guarded, LOCKED_OUT, deploy_file=FIREWALL_ONLY))
        assert table(lab, guarded) == before
        assert lab.ssh(guarded, listed, check=True).stdout == theirs, "rolled back: still there"
        changed = run_deploy(
            guarded, {"flower_monitoring_sources": ["10.77.0.1/32", "10.77.0.98/32"]},
            deploy_file=FIREWALL_ONLY,
        )  # fmt: skip
        assert changed.ok, changed.explain()
        assert "10.77.0.98" in guarding(table(lab, guarded)), "a new ruleset was applied"
        assert lab.ssh(guarded, listed, check=True).stdout == theirs, "applied: still there"
    finally:
        lab.ssh(guarded, ["nft", "delete", "table", "inet", "someone_else"], check=True)
        restored = run_deploy(guarded, deploy_file=FIREWALL_ONLY)
        assert restored.ok, restored.explain()
    assert table(lab, guarded) == before


def test_table_survives_nftables_restart_and_reboot(lab: Lab, guarded: str):
    before = guarding(table(lab, guarded))
    lab.ssh(guarded, ["systemctl", "restart", "nftables.service"], check=True)
    assert table(lab, guarded) == before, "nftables.conf's `flush ruleset` was undone"
    assert "table inet filter" in lab.ssh(guarded, ["nft", "list", "tables"]).stdout
    # stopping nftables flushes everything: after the reboot only flowerbed's unit loads it
    lab.ssh(guarded, ["systemctl", "stop", "nftables.service"], check=True)
    assert table(lab, guarded) == "", "stopping nftables flushed flowerbed's table"
    booted = boot_id(lab, guarded)
    # the connection may end before ssh hears systemctl's exit status: the boot id decides
    lab.ssh(guarded, ["systemctl", "reboot"])
    time.sleep(3)
    deadline = time.monotonic() + 60
    while lab.ssh(guarded, ["true"], timeout=10).returncode != 0:
        assert time.monotonic() < deadline, "the host did not come back after a reboot"
        time.sleep(1)
    assert boot_id(lab, guarded) != booted, "the host really rebooted"
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
