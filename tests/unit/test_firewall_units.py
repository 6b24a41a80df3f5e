"""The firewall without the lab: validation, the rendered ruleset (checked by nft), the script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from settings_helpers import defaults, error_for, settings_with

from flowerbed.firewall import (
    DIGEST_PREFIX,
    SCRIPT_SOURCE,
    LoadedRulesetDigest,
    merged,
    ruleset,
)
from flowerbed.settings import Firewall

PRIVATE_ACME = {
    "flower_tls_acme_directory": "https://acme.internal.example/dir",
    "flower_acme_sources": ["::/0"],
}
DNS_01 = {"flower_tls_challenge": "dns-01", "flower_tls_dns_plugin": "cloudflare"}


def firewall_with(**overrides) -> Firewall:
    return settings_with(**overrides).firewall


# --- validation -----------------------------------------------------------------------------


def test_acme_is_open_everywhere_by_default():
    assert firewall_with().acme_sources == ("0.0.0.0/0", "::/0")


@pytest.mark.parametrize(
    "key", ["flower_allowed_sources", "flower_admin_sources", "flower_acme_sources"]
)
def test_an_empty_list_is_an_error_never_open_to_all(key):
    message = error_for(**{key: []})
    assert message.startswith(f"{key}: an empty list")
    assert "Fix: " in message


def test_restricting_port_80_with_lets_encrypt_http_01_is_an_error():
    message = error_for(flower_acme_sources=["10.0.0.0/8"])
    assert message.startswith("flower_acme_sources: Let's Encrypt validates HTTP-01 from addresses")
    assert "flower_tls_challenge = 'dns-01'" in message
    assert error_for(flower_acme_sources=["0.0.0.0/0"]).startswith(
        "flower_acme_sources: Let's Encrypt"
    )


def test_port_80_may_be_restricted_for_a_private_acme_or_closed_with_dns_01():
    assert firewall_with(**PRIVATE_ACME).acme_sources == ("::/0",)
    closed = firewall_with(**DNS_01, flower_acme_sources=[])
    assert "elements" not in ruleset(closed).text.split("set acme_v4")[1].split("}")[0]


def test_the_operator_must_name_allowed_and_admin_sources():
    """group_data/all.py leaves both empty: a deploy without them fails before touching a host."""
    assert error_for(flower_allowed_sources=[]) == error_for(
        flower_allowed_sources=defaults()["flower_allowed_sources"]
    )
    assert error_for(flower_admin_sources=[]) == error_for(
        flower_admin_sources=defaults()["flower_admin_sources"]
    )


def test_invalid_cidr_names_the_item_and_the_fix():
    message = error_for(flower_allowed_sources=["203.0.113.0/24", "10.0.0.300/24"])
    assert message.startswith("flower_allowed_sources[1]: '10.0.0.300/24' is not an IPv4/IPv6")
    assert "Fix: use CIDR notation" in message


@pytest.mark.parametrize(
    ("cidr", "network", "single"),
    [
        ("10.1.2.3/8", "10.0.0.0/8", "10.1.2.3/32"),
        ("2001:db8::1/32", "2001:db8::/32", "2001:db8::1/128"),
    ],
)
def test_host_bits_set_suggests_the_network_and_the_address(cidr, network, single):
    message = error_for(flower_admin_sources=[cidr])
    assert message.startswith(f"flower_admin_sources[0]: {cidr!r} has host bits set")
    assert repr(network) in message and repr(single) in message


def test_a_string_instead_of_a_list_is_an_error():
    assert error_for(flower_allowed_sources="10.0.0.0/8").startswith(
        "flower_allowed_sources: expected a list"
    )


def test_addresses_are_normalised_to_networks():
    firewall = firewall_with(flower_allowed_sources=["10.0.0.1", " 2001:db8::/32", "0.0.0.0/0"])
    assert firewall.allowed_sources == ("10.0.0.1/32", "2001:db8::/32", "0.0.0.0/0")


@pytest.mark.parametrize("port", [80, 443])
def test_ssh_port_cannot_be_a_web_port(port):
    assert error_for(flower_firewall_ssh_port=port).startswith(
        f"flower_firewall_ssh_port: {port} is flowerbed's"
    )


def test_ssh_port_and_rollback_delay_are_bounded():
    assert "is not a port" in error_for(flower_firewall_ssh_port=70000)
    assert error_for(flower_firewall_rollback_seconds=5).startswith(
        "flower_firewall_rollback_seconds: 5 is below"
    )


def test_misspelt_firewall_key_is_an_error():
    assert error_for(flower_firewall_ssh_prot=2222).startswith(
        "flower_firewall_ssh_prot: unknown key"
    )
    assert "did you mean 'flower_allowed_sources'" in error_for(
        flower_allowed_source=["10.0.0.0/8"]
    )


# --- the ruleset ----------------------------------------------------------------------------


def test_ruleset_replaces_only_flowerbeds_table():
    text = ruleset(firewall_with()).text
    assert "flush ruleset" not in text
    assert "table inet flowerbed\ndelete table inet flowerbed\n" in text
    tables = [line for line in text.splitlines() if line.startswith("table ")]
    assert set(tables) == {"table inet flowerbed", "table inet flowerbed {"}


def test_ruleset_opens_each_port_to_its_sources_only():
    firewall = firewall_with(
        flower_allowed_sources=["10.77.0.192/27", "2001:db8:1::/48"],
        flower_admin_sources=["10.77.0.1/32"],
        flower_firewall_ssh_port=2222,
    )
    text = ruleset(firewall).text
    assert "policy drop;" in text
    assert "elements = { 10.77.0.192/27 }" in text and "elements = { 2001:db8:1::/48 }" in text
    assert "ip saddr @allowed_v4 tcp dport 443 accept" in text
    assert "ip6 saddr @allowed_v6 tcp dport 443 accept" in text
    assert "ip saddr @admin_v4 tcp dport 2222 accept" in text
    assert "ip saddr @acme_v4 tcp dport 80 accept" in text
    assert "tcp dport 22 " not in text
    for essential in ("nd-neighbor-solicit", "nd-neighbor-advert", "packet-too-big"):
        assert essential in text


def test_overlapping_sources_are_merged():
    """nft rejects overlapping intervals in one set."""
    assert merged(("10.0.0.0/8", "10.1.0.0/16", "192.0.2.1/32", "::/0"), 4) == (
        "10.0.0.0/8",
        "192.0.2.1/32",
    )
    assert merged(("10.0.0.0/8",), 6) == ()


def test_digest_follows_the_sources_and_is_stable():
    first, again = ruleset(firewall_with()), ruleset(firewall_with())
    other = ruleset(firewall_with(flower_allowed_sources=["203.0.113.0/25"]))
    assert first == again
    assert first.digest != other.digest
    assert f'comment "{DIGEST_PREFIX}{first.digest}"' in first.text


def test_loaded_digest_is_read_from_the_live_table():
    live = ["table inet flowerbed {", f'\tcomment "{DIGEST_PREFIX}0123abcd"', "\tset admin_v4 {"]
    assert LoadedRulesetDigest().process(live) == "0123abcd"
    assert LoadedRulesetDigest().process([]) is None


@pytest.fixture
def nft_available() -> None:
    """`make test` installs nft and runs as root: a missing one is a failure, never a skip."""
    if not (shutil.which("nft") and shutil.which("unshare") and os.geteuid() == 0):
        pytest.fail("nft -c needs nft and unshare (make machine-packages) and root")


needs_nft = pytest.mark.usefixtures("nft_available")


def nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`nft -c -f` in a new, empty network namespace: this machine's own ruleset is never read."""
    path = tmp_path / "flowerbed.nft"
    path.write_text(text)
    return subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True
    )


@needs_nft
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "flower_allowed_sources": ["0.0.0.0/0", "::/0"],
            "flower_admin_sources": ["2001:db8::/32"],
        },
        {"flower_allowed_sources": ["10.0.0.0/8", "10.1.0.0/16", "10.77.0.1"], **PRIVATE_ACME},
    ],
)
def test_rendered_ruleset_passes_nft_check(overrides, tmp_path):
    result = nft_check(ruleset(firewall_with(**overrides)).text, tmp_path)
    assert result.returncode == 0, result.stderr


@needs_nft
def test_nft_check_catches_a_broken_ruleset(tmp_path):
    broken = ruleset(firewall_with()).text.replace("policy drop;", "policy maybe;")
    assert nft_check(broken, tmp_path).returncode != 0


# --- the host-side switch script ------------------------------------------------------------


def test_switch_script_is_valid_sh():
    result = subprocess.run(["sh", "-n", str(SCRIPT_SOURCE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_switch_script_passes_shellcheck():
    assert shutil.which("shellcheck"), (
        "shellcheck is in MACHINE_PACKAGES: run make machine-packages"
    )
    result = subprocess.run(["shellcheck", str(SCRIPT_SOURCE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "sources",
    [["0.0.0.0/1", "128.0.0.0/1"], ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"], ["10.0.0.0/7"],
     ["2000::/3"], ["198.51.100.7/32", "::/1", "8000::/1"]],
)  # fmt: skip
def test_networks_that_add_up_to_the_internet_need_the_opt_in(sources):
    message = error_for(flower_admin_sources=sources)
    assert message.startswith("flower_admin_sources: ") and "whole internet" in message
    assert "flower_firewall_allow_ssh_from_anywhere = True" in message
    opted_in = firewall_with(
        flower_admin_sources=sources, flower_firewall_allow_ssh_from_anywhere=True
    )
    assert opted_in.admin_sources


def test_a_private_slash_8_is_not_the_internet():
    assert firewall_with(flower_admin_sources=["10.0.0.0/8", "fd00::/16"]).admin_sources


@pytest.mark.parametrize(
    "value", ["198.51.100.7/24 ", "10.0.0.0/8; drop", "10.0.0.0 /8", "10.0.0.0/8\u200b", ""]
)
def test_a_bad_network_is_a_clean_error_never_a_crash(value):
    message = error_for(flower_allowed_sources=[value])
    assert message.startswith("flower_allowed_sources[0]: ") and "Fix: " in message
