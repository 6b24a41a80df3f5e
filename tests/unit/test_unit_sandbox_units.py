"""Flower's unit, scored offline: `systemd-analyze security --offline=true` on the rendered file.

The same score the lab reads on a running host (tests/lab/test_flower.py), without a host:
systemd >= 250 scores a unit file on its own. The points left are listed in docs/security.md;
a directive that drops out (or a new one systemd starts to count) shows up here as a change in
that list, not only in the total.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from settings_helpers import OAUTH, settings_with

from flowerbed.flower import unit_text

MAX_EXPOSURE = 1.0
# What still costs points, and why it stays (docs/security.md, "Flower's unit").
LEFT = {
    "PrivateNetwork=",  # Flower reaches the broker (and an OAuth provider) over the network
    "RestrictAddressFamilies=~AF_(INET|INET6)",  # the same
    "RestrictAddressFamilies=~AF_UNIX",  # Flower listens on a unix socket for nginx
    "IPAddressDeny=",  # an allow-list, but of every unicast address: the broker may be anywhere
    "DeviceAllow=",  # ProtectClock= adds char-rtc:r itself (systemd issue 32513)
    "RootDirectory=/RootImage=",  # Flower runs from the host's Python and venv
}
# What the IP allow-list keeps Flower from: link-local (the cloud metadata service), multicast
# and the reserved 240/4 with broadcast. Everything else must stay reachable.
DENIED = ("169.254.0.0/16", "224.0.0.0/3", "fe80::/10", "ff00::/8")


def unit(**data) -> str:
    settings = settings_with(**data)
    environment = settings.oauth_provider.environment(settings.options.auth_provider)
    return unit_text(settings.flower, environment, settings.auth.mode)


def security(path: Path) -> tuple[float, set[str], str]:
    """The overall exposure and the names of the failed checks."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    run = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(rf"Overall exposure level for {re.escape(path.name)}: ([\d.]+)", run.stdout)
    if not found:
        pytest.skip(f"systemd-analyze cannot score a unit offline here: {run.stderr.strip()}")
    failed = {m[1] for m in re.finditer(r"(?m)^✗ (\S+)", run.stdout)}
    return float(found[1]), failed, run.stdout


@pytest.mark.parametrize("mode", ["basic", "oauth"])
def test_unit_scores_at_most_1_0_offline(tmp_path: Path, mode: str):
    data = OAUTH if mode == "oauth" else {}
    path = tmp_path / settings_with(**data).flower.unit_name
    path.write_text(unit(**data))
    score, failed, report = security(path)
    left = "\n".join(line for line in report.splitlines() if line.startswith("✗"))
    print(f"offline exposure ({mode}): {score}\n{left}")
    assert score <= MAX_EXPOSURE, report
    assert failed == LEFT, report


def allowed_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    lines = [line for line in text.splitlines() if line.startswith("IPAddressAllow=")]
    return [ipaddress.ip_network(n) for line in lines for n in line.split("=", 1)[1].split()]


def test_ip_allow_list_is_every_address_but_link_local_and_multicast():
    text = unit()
    assert "IPAddressDeny=any\n" in text
    allowed = allowed_networks(text)
    denied = [ipaddress.ip_network(n) for n in DENIED]
    for network in allowed:
        assert not any(network.overlaps(d) for d in denied), network
    # together, the allowed and the denied networks cover each family exactly once
    for everything in (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")):
        both = [n for n in allowed + denied if n.version == everything.version]
        assert list(ipaddress.collapse_addresses(both)) == [everything]
        assert sum(n.num_addresses for n in both) == everything.num_addresses
    for address in ("127.0.0.1", "10.77.0.1", "192.168.1.5", "203.0.113.9", "::1", "2001:db8::5"):
        assert any(ipaddress.ip_address(address) in n for n in allowed), address
    for address in ("169.254.169.254", "224.0.0.251", "255.255.255.255", "fe80::1", "ff02::1"):
        assert not any(ipaddress.ip_address(address) in n for n in allowed), address


def test_costless_directives_are_set():
    text = unit()
    for line in ("PrivateIPC=yes", "PrivateMounts=yes", "TasksMax=128", "LimitNOFILE=1024"):
        assert f"\n{line}\n" in text, line
