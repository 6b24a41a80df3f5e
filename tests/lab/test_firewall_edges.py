"""The firewall at its edges, on a host of its own: overlapping runs and DHCP.

- `confirm` names the ruleset it confirms (its digest): a run whose ruleset another run has
  since replaced cannot confirm that newer one, which the host then rolls back on its timer.
- DHCPv4 and DHCPv6 replies reach a host, so one that gets its address by DHCP keeps it at
  its next lease renewal: real datagrams from the bridge, to a listener on the host.
"""

from __future__ import annotations

import re
import shlex
import socket

import pytest
from conftest import Lab
from deploy_helpers import run_deploy
from polling import until

from flowerbed.firewall import BOOT_RULESET, SCRIPT, STATE_DIR, pending_ruleset

pytestmark = pytest.mark.lab

FIREWALL_ONLY = "tests/deploys/firewall_only.py"
SWITCH = [SCRIPT, STATE_DIR, BOOT_RULESET]
DIGEST = re.compile(r'comment "flowerbed sha256:([0-9a-f]+)"')
NEWER_ROLLBACK = 8  # seconds: the rollback timer of the newer, never confirmed ruleset


@pytest.fixture(scope="module")
def guarded(module_hosts) -> str:
    """A fresh host with flowerbed's confirmed firewall (firewall-only deploy)."""
    name = module_hosts(prefix="fe")["name"]
    result = run_deploy(name, deploy_file=FIREWALL_ONLY)
    assert result.ok, result.explain()
    return name


def table(lab: Lab, host: str) -> str:
    """flowerbed's live table; every test here expects it loaded, so its absence fails."""
    return lab.ssh(host, ["nft", "-s", "list", "table", "inet", "flowerbed"], check=True).stdout


def boot_file(lab: Lab, host: str) -> str:
    return lab.ssh(host, ["sha256sum", BOOT_RULESET], check=True).stdout


def stage(lab: Lab, host: str, live: str, digest: str) -> None:
    """A pending ruleset: the live table under another digest (the operator keeps SSH)."""
    text = "table inet flowerbed\ndelete table inet flowerbed\n" + DIGEST.sub(
        f'comment "flowerbed sha256:{digest}"', live
    )
    lab.ssh(host, f"printf %s {shlex.quote(text)} > {pending_ruleset(digest)}", check=True)


def apply(digest: str, seconds: int) -> list[str]:
    """The switch's apply command for a staged ruleset, as the deploy runs it."""
    return [*SWITCH, "apply", digest, str(seconds), pending_ruleset(digest)]


def live_digest(lab: Lab, host: str) -> str | None:
    found = DIGEST.search(table(lab, host))
    return found[1] if found else None


# --- overlapping runs -----------------------------------------------------------------------


def test_a_run_cannot_confirm_a_newer_runs_ruleset(lab: Lab, guarded: str):
    before, boot_before = table(lab, guarded), boot_file(lab, guarded)
    confirmed = live_digest(lab, guarded)
    older, newer = "0000aaaa0000aaaa", "1111bbbb1111bbbb"
    stage(lab, guarded, before, older)
    lab.ssh(guarded, apply(older, 60), check=True)
    assert live_digest(lab, guarded) == older
    # a second run loads its ruleset before the first one confirmed its own
    stage(lab, guarded, before, newer)
    lab.ssh(guarded, apply(newer, NEWER_ROLLBACK), check=True)
    assert live_digest(lab, guarded) == newer

    refused = lab.ssh(guarded, [*SWITCH, "confirm", older])
    assert refused.returncode == 5, refused.stderr
    assert f"refusing to confirm ruleset {older}" in refused.stderr
    assert f"waiting for confirmation is {newer}" in refused.stderr
    assert "Fix: run the deploy again" in refused.stderr
    assert live_digest(lab, guarded) == newer, "the newer ruleset stays pending, unconfirmed"
    assert boot_file(lab, guarded) == boot_before, "nothing became the boot ruleset"

    until(
        lambda: live_digest(lab, guarded) == confirmed,
        NEWER_ROLLBACK + 30,
        "rollback of the newer ruleset by its timer",
    )
    assert table(lab, guarded) == before
    assert boot_file(lab, guarded) == boot_before
    late = lab.ssh(guarded, [*SWITCH, "confirm", newer])
    assert late.returncode == 5 and "no ruleset is waiting for confirmation" in late.stderr
    again = run_deploy(guarded, deploy_file=FIREWALL_ONLY)
    assert again.ok and again.totals["success"] == 0, again.explain()


def test_confirm_of_the_loaded_ruleset_makes_it_the_boot_ruleset(lab: Lab, guarded: str):
    before = table(lab, guarded)
    digest = "2222cccc2222cccc"
    stage(lab, guarded, before, digest)
    try:
        lab.ssh(guarded, apply(digest, 60), check=True)
        lab.ssh(guarded, [*SWITCH, "confirm", digest], check=True)
        boot = lab.ssh(guarded, ["cat", BOOT_RULESET], check=True).stdout
        assert f'comment "flowerbed sha256:{digest}"' in boot
        timer = lab.ssh(guarded, ["systemctl", "is-active", "flowerbed-firewall-rollback.timer"])
        assert timer.stdout.strip() != "active", "the rollback timer is disarmed"
    finally:
        # the deploy puts its own ruleset back (a different digest: it is applied again)
        again = run_deploy(guarded, deploy_file=FIREWALL_ONLY)
        assert again.ok, again.explain()
    assert table(lab, guarded) == before


# --- DHCP -----------------------------------------------------------------------------------

LISTENER = """
import select, socket, sys
v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v4.bind(("0.0.0.0", 68))
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.bind(("::", 546))
while True:
    for s in select.select([v4, v6], [], [])[0]:
        data, peer = s.recvfrom(512)
        with open(sys.argv[1], "a") as out:
            out.write(f"{data.decode()} from port {peer[1]}\\n")
"""
HOST_LINK_LOCAL = "fe80::6c:77"  # the lab's hosts have no IPv6 address: the test adds one


def link_local_of(interface: str) -> str:
    with open("/proc/net/if_inet6") as table_file:
        for line in table_file:
            address, _, _, scope, _, name = line.split()
            if name == interface and scope == "20":  # link scope
                return ":".join(address[i : i + 4] for i in range(0, 32, 4))
    raise AssertionError(f"{interface} has no IPv6 link-local address")


def send_udp(family: int, source: tuple, destination: tuple, payload: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sender.bind(source)
        sender.sendto(payload.encode(), destination)


@pytest.fixture
def dhcp_listener(lab: Lab, guarded: str):
    """A listener on the host's DHCP client ports; yields a function that reads what arrived."""
    unit, received = "flowerbed-test-dhcp-listener", "/run/flowerbed-test-dhcp.txt"
    lab.ssh(guarded, ["ip", "-6", "addr", "add", f"{HOST_LINK_LOCAL}/64", "dev", "host0", "nodad"])
    lab.ssh(guarded, f"printf %s {shlex.quote(LISTENER)} > /run/dhcp-listener.py", check=True)
    start = ["systemd-run", f"--unit={unit}", "--collect", "python3", "/run/dhcp-listener.py"]
    lab.ssh(guarded, [*start, received], check=True)

    def listening() -> bool:
        return ":546 " in lab.ssh(guarded, ["ss", "-Hlun"]).stdout

    until(listening, 10, "DHCP listener on the host's ports", every=0.1)

    def arrived(awaited: set[str]) -> list[str]:
        """Every line that arrived, once each of `awaited` has."""

        def lines() -> list[str] | None:
            got = lab.ssh(guarded, f"cat {received} 2>/dev/null || true").stdout.splitlines()
            return got if awaited <= set(got) else None

        return until(lines, 10, f"datagrams {sorted(awaited)} at the listener", every=0.2)

    try:
        yield arrived
    finally:
        lab.ssh(guarded, ["systemctl", "stop", unit])
        lab.ssh(guarded, ["ip", "-6", "addr", "del", f"{HOST_LINK_LOCAL}/64", "dev", "host0"])


def test_dhcp_replies_reach_the_host_and_other_udp_does_not(lab: Lab, guarded: str, dhcp_listener):
    bridge = lab.state["bridge"]
    v4_from, v4_to = bridge["address"], lab.host(guarded)["address"]
    scope = socket.if_nametoindex(bridge["name"])
    v6_from = link_local_of(bridge["name"])
    for port, label in ((1067, "v4 other"), (67, "v4 dhcp")):
        send_udp(socket.AF_INET, (v4_from, port), (v4_to, 68), label)
    for port, label in ((1547, "v6 other"), (547, "v6 dhcp")):
        send_udp(
            socket.AF_INET6, (v6_from, port, 0, scope), (HOST_LINK_LOCAL, 546, 0, scope), label
        )
    # each family's other datagram went first, through the same socket: had the firewall let
    # it in, it would be read before that family's DHCP reply, which the listener awaits
    replies = ["v4 dhcp from port 67", "v6 dhcp from port 547"]
    assert sorted(dhcp_listener(set(replies))) == replies
