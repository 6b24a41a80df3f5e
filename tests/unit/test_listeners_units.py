"""The host's other services, without the lab: openings and acknowledgements validated, the
ruleset with extra openings checked by nft, `ss` output read, and what a new ruleset would cut."""

from __future__ import annotations

import pytest
from settings_helpers import error_for, settings_with
from test_firewall_units import needs_nft, nft_available, nft_check  # noqa: F401 (fixture)

from flowerbed.firewall import kept_ports, ruleset, shared_ports
from flowerbed.listeners import (
    Listener,
    Listening,
    ListeningSockets,
    LoadedOpenPorts,
    cut_off,
    refusal,
)
from flowerbed.nginx import Neighbours

REDIS = {"port": 6379, "sources": ["10.0.0.0/24", "2001:db8::/64"], "purpose": "Redis (workers)"}
SS = """\
tcp   LISTEN 0 128          0.0.0.0:22    0.0.0.0:* users:(("sshd",pid=69,fd=6))
tcp   LISTEN 0 511        127.0.0.1:6380  0.0.0.0:* users:(("redis-server",pid=9,fd=6))
tcp   LISTEN 0 511          0.0.0.0:6379  0.0.0.0:* users:(("redis-server",pid=9,fd=7))
udp   UNCONN 0 0   10.77.0.11%host0:68    0.0.0.0:* users:(("systemd-network",pid=1,fd=1))
tcp   LISTEN 0 511             [::]:8080     [::]:* users:(("python3",pid=5,fd=3))
tcp   LISTEN 0 511                *:9100        *:* users:(("node_exporter",pid=5,fd=3))
tcp   LISTEN 0 4096         0.0.0.0:8081  0.0.0.0:* users:(("docker-proxy",pid=7,fd=4))
tcp   LISTEN 0 511            [::1]:25       [::]:*
udp   UNCONN 0 0      [fe80::1]%eth0:5353    [::]:* users:(("avahi-daemon",pid=3,fd=12))
""".splitlines()


def listeners() -> Listening:
    return ListeningSockets().process(["32768\t60999", *SS])


def firewall_with(**overrides):
    return settings_with(**overrides).firewall


# --- settings -------------------------------------------------------------------------------


def test_an_opening_is_read_with_tcp_by_default_and_its_sources_normalised():
    (opening,) = firewall_with(flower_firewall_openings=[REDIS]).firewall_openings
    assert (opening.port, opening.protocol, opening.purpose) == (6379, "tcp", "Redis (workers)")
    assert opening.sources == ("10.0.0.0/24", "2001:db8::/64")


@pytest.mark.parametrize(
    ("opening", "problem"),
    [
        ({**REDIS, "port": 70000}, "flower_firewall_openings[0]['port']: 70000 is not a port"),
        ({**REDIS, "protocol": "sctp"}, "flower_firewall_openings[0]['protocol']: 'sctp'"),
        ({**REDIS, "sources": []}, "flower_firewall_openings[0]['sources']: an opening with no"),
        ({**REDIS, "sources": ["10.0.0.1/24"]}, "has host bits set"),
        ({**REDIS, "purpose": 'x"; drop'}, "flower_firewall_openings[0]['purpose']:"),
        ({**REDIS, "purpose": ""}, "flower_firewall_openings[0]['purpose']:"),
        ({"port": 6379, "sources": ["10.0.0.0/24"]}, "missing 'purpose'"),
        ({**REDIS, "ports": 1}, "unknown key(s) 'ports'"),
        ({**REDIS, "port": 443}, "443/tcp is flowerbed's HTTPS (the dashboard) port"),
        ({**REDIS, "port": 22}, "22/tcp is flowerbed's SSH port"),
        ("6379/tcp", "flower_firewall_openings[0]: expected an opening like"),
    ],
)
def test_a_bad_opening_names_the_item_the_problem_and_the_fix(opening, problem):
    message = error_for(flower_firewall_openings=[opening])
    assert problem in message and "Fix: " in message


def test_a_port_opened_twice_is_an_error():
    message = error_for(flower_firewall_openings=[REDIS, {**REDIS, "sources": ["10.1.0.0/16"]}])
    assert "flower_firewall_openings[1]: 6379/tcp is opened twice" in message


def test_a_udp_opening_on_a_web_port_number_is_allowed():
    udp = {**REDIS, "port": 443, "protocol": "udp"}
    assert firewall_with(flower_firewall_openings=[udp]).firewall_openings[0].protocol == "udp"


@pytest.mark.parametrize("bad", ["8080", "8080/sctp", "0/tcp", "99999/tcp", "8080/tcp ", 8080])
def test_close_listeners_is_a_list_of_port_and_protocol(bad):
    message = error_for(flower_firewall_close_listeners=[bad])
    assert message.startswith("flower_firewall_close_listeners[0]: ")


def test_close_listeners_are_read_as_port_and_protocol():
    closes = firewall_with(flower_firewall_close_listeners=["8080/tcp", "5353/udp"])
    assert closes.firewall_close_listeners == ((8080, "tcp"), (5353, "udp"))


# --- the ruleset ----------------------------------------------------------------------------


def test_an_opening_adds_a_rule_for_its_protocol_port_and_sources():
    udp = {"port": 5353, "protocol": "udp", "sources": ["10.0.0.0/24"], "purpose": "mDNS"}
    text = ruleset(firewall_with(flower_firewall_openings=[REDIS, udp])).text
    assert "ip saddr @open_tcp_6379_v4 tcp dport 6379 accept" in text
    assert "ip6 saddr @open_tcp_6379_v6 tcp dport 6379 accept" in text
    assert "ip saddr @open_udp_5353_v4 udp dport 5353 accept" in text
    assert 'comment "Redis (workers): flower_firewall_openings"' in text


def test_no_opening_leaves_the_ruleset_and_its_digest_as_before():
    """Hosts deployed before openings existed keep their loaded ruleset: no re-apply. The
    digest is the defaults' from before openings (commit df5907b)."""
    text = ruleset(firewall_with()).text
    assert "open_" not in text
    assert ruleset(firewall_with()).digest == "84651a8c1d815ab6"


@needs_nft
def test_a_ruleset_with_openings_passes_nft_check(tmp_path):
    udp = {"port": 5353, "protocol": "udp", "sources": ["0.0.0.0/0", "::/0"], "purpose": "mDNS"}
    text = ruleset(firewall_with(flower_firewall_openings=[REDIS, udp])).text
    result = nft_check(text, tmp_path)
    assert result.returncode == 0, result.stderr


# --- the host's listeners -------------------------------------------------------------------


def test_ss_lines_are_read_with_their_address_port_and_process():
    assert listeners().ephemeral == (32768, 60999)
    assert listeners().sockets == (
        Listener("tcp", "0.0.0.0", 22, "sshd"),
        Listener("tcp", "127.0.0.1", 6380, "redis-server"),
        Listener("tcp", "0.0.0.0", 6379, "redis-server"),
        Listener("udp", "10.77.0.11", 68, "systemd-network"),
        Listener("tcp", "::", 8080, "python3"),
        Listener("tcp", "*", 9100, "node_exporter"),
        Listener("tcp", "0.0.0.0", 8081, "docker-proxy"),
        Listener("tcp", "::1", 25, "unknown"),
        Listener("udp", "fe80::1", 5353, "avahi-daemon"),
    )


def test_a_first_ruleset_would_cut_every_undeclared_listener_beyond_loopback():
    """(not Docker's published 8081: others reach it through Docker's forward chain)"""
    cut = cut_off(listeners(), kept_ports(firewall_with()), None)
    assert [(c.port, c.protocol) for c in cut] == [
        (5353, "udp"), (6379, "tcp"), (8080, "tcp"), (9100, "tcp"),
    ]  # fmt: skip


def test_an_opening_or_an_acknowledgement_keeps_a_listener_from_the_refusal():
    firewall = firewall_with(
        flower_firewall_openings=[REDIS],
        flower_firewall_close_listeners=["8080/tcp", "9100/tcp", "5353/udp"],
    )
    assert cut_off(listeners(), kept_ports(firewall), None) == []


def test_a_port_the_loaded_table_already_closes_is_not_refused_again():
    loaded = LoadedOpenPorts().process(
        [
            "table inet flowerbed {",
            "\t\tip saddr @admin_v4 tcp dport 22 accept",
            "\t\ttcp dport 9100 accept",
        ]
    )
    assert loaded == {(22, "tcp"), (9100, "tcp")}
    cut = cut_off(listeners(), kept_ports(firewall_with()), loaded)
    assert [(c.port, c.protocol) for c in cut] == [(9100, "tcp")]
    assert LoadedOpenPorts().process([]) is None


def test_the_refusal_names_each_port_its_process_and_both_settings():
    message = refusal(cut_off(listeners(), kept_ports(firewall_with()), None), {})
    for part in ("6379/tcp (redis-server on 0.0.0.0)", "8080/tcp (python3 on ::)",
                 "9100/tcp (node_exporter on *)", "5353/udp (avahi-daemon on fe80::1)",
                 "flower_firewall_openings = [{'port': 5353, 'protocol': 'udp'",
                 "flower_firewall_close_listeners = ['5353/udp', '6379/tcp', '8080/tcp', "
                 "'9100/tcp']", "nothing was changed"):  # fmt: skip
        assert part in message, part


def test_a_udp_socket_on_an_ephemeral_port_is_a_clients_never_refused():
    client = ListeningSockets().process(
        ["32768\t60999", "udp UNCONN 0 0 0.0.0.0:41234 0.0.0.0:* users:((\"dhclient\",pid=1,fd=7))",
         "tcp LISTEN 0 5 0.0.0.0:41235 0.0.0.0:* users:((\"app\",pid=2,fd=3))"]
    )  # fmt: skip
    cut = cut_off(client, kept_ports(firewall_with()), None)
    assert [(c.port, c.protocol) for c in cut] == [(41235, "tcp")], "a TCP listener always counts"


def test_another_nginx_site_on_443_is_refused_unless_open_to_all_or_agreed():
    nginx = ListeningSockets().process(
        ["32768 60999", 'tcp LISTEN 0 511 0.0.0.0:443 0.0.0.0:* users:(("nginx",pid=3,fd=9))']
    )
    alone = Neighbours(stock_default_enabled=False, listen_ports=frozenset())
    app = Neighbours(stock_default_enabled=False, listen_ports=frozenset({443}))
    firewall = firewall_with()
    assert cut_off(nginx, kept_ports(firewall, shared_ports(firewall, alone)), None) == [], (
        "flowerbed's own site"
    )
    cut = cut_off(nginx, kept_ports(firewall, shared_ports(firewall, app)), None)
    assert [(c.port, c.protocol) for c in cut] == [(443, "tcp")]
    message = refusal(cut, shared_ports(firewall, app))
    assert (
        "another nginx site listens on 443 too" in message and "flower_allowed_sources" in message
    )
    assert "flower_firewall_openings" not in message, "443 cannot be an extra opening"
    agreed = firewall_with(flower_firewall_close_listeners=["443/tcp"])
    assert cut_off(nginx, kept_ports(agreed, shared_ports(agreed, app)), None) == []
    public = firewall_with(flower_allowed_sources=["0.0.0.0/0", "::/0"])
    assert cut_off(nginx, kept_ports(public, shared_ports(public, app)), None) == []
