"""The login ban (flowerbed/ban.py): fail2ban's jail, filter and action as rendered, the filter
against lines in nginx's own log format (fail2ban-regex), and the IPv6 /64 source map (Python's
re, whose syntax these patterns share with nginx's PCRE, against ipaddress; and nginx itself
where it is installed). What the ban does to a guesser is tested on lab hosts
(tests/lab/test_login_ban.py)."""

from __future__ import annotations

import ipaddress
import random
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
import settings_helpers

from flowerbed.ban import BAN, SOURCE_PREFIX_MAP, jail_text, login_bans
from flowerbed.inputs.edge import dashboard_site
from flowerbed.nginx import dashboard_context, https_site_text
from flowerbed.render import render
from flowerbed.settings import SettingsError

SITE = {"flower_fqdn": "flower.example.com", "flower_admin_sources": ["198.51.100.7/32"]}


def settings_with(**overrides):
    return settings_helpers.settings_with(**{**SITE, **overrides})


def source_of(address: str) -> str:
    """What nginx's map makes of $remote_addr (the first matching regex; else the address)."""
    for pattern, replacement in SOURCE_PREFIX_MAP:
        match = re.search(pattern.removeprefix("~"), address)
        if match:
            groups = match.groups()
            value = replacement.replace("$remote_addr", address)
            for index in range(len(groups), 0, -1):
                value = value.replace(f"${index}", groups[index - 1])
            return value
    return address


def nginx_spelling(address: ipaddress.IPv6Address) -> str:
    """nginx's ngx_inet6_ntop: lower case, no leading zeros, the first longest run of two or
    more zero groups as "::" (Python's `compressed` makes the same choices)."""
    return address.compressed


def addresses(count: int = 3000):
    rng = random.Random(19)
    for _ in range(count):
        groups = [rng.choice((0, 0, 0, 1, 0xFFFF, rng.getrandbits(16))) for _ in range(8)]
        yield ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    for bits in range(128):
        yield ipaddress.IPv6Address(1 << bits)
        yield ipaddress.IPv6Address(((1 << 128) - 1) ^ (1 << bits))


def test_an_ipv6_source_is_its_64_in_every_spelling_nginx_makes():
    for address in addresses():
        text = nginx_spelling(address)
        if address.ipv4_mapped:
            continue  # nginx spells those with a dotted quad: see below
        network = ipaddress.IPv6Network(source_of(text))
        assert network == ipaddress.IPv6Network((int(address) >> 64 << 64, 64)), text


def test_an_ipv4_source_is_its_address():
    for text in ("198.51.100.7", "10.0.0.1", "::ffff:192.0.2.1"):
        assert source_of(text) == text


def test_the_source_keys_throttles_connections_and_the_failure_log():
    site = https_site_text(dashboard_site(settings_with(), "h1"), settings_with().dashboard_proxy)
    assert "limit_req_zone $flowerbed_source zone=flowerbed_requests" in site
    assert "limit_conn_zone $flowerbed_source zone=flowerbed_connections" in site
    assert "limit_conn flowerbed_connections 20;" in site
    assert "limit_req_zone $http_x_flowerbed_source_key zone=flowerbed_login_failures" in site
    assert "proxy_set_header X-Flowerbed-Source-Key $flowerbed_login_source_key;" in site
    assert f"access_log {BAN.log_path} flowerbed_login_failures" in site


def test_the_jail_bans_on_80_and_443_and_never_admin_sources_or_loopback():
    settings = settings_with(
        flower_nginx_ban_failures=4,
        flower_nginx_ban_window_seconds=120,
        flower_nginx_ban_seconds=30,
    )
    jail = jail_text(settings.nginx, settings.firewall)
    section = jail.split("[flowerbed-login]")[1].split("[sshd]")[0]
    assert "maxretry = 4\n" in section and "findtime = 120\n" in section
    assert "bantime = 30\n" in section and "port = 80,443\n" in section
    assert "banaction = flowerbed-nftables\n" in section
    assert f"logpath = {BAN.log_path}\n" in section
    for block in jail.split("\n[")[1:]:
        assert "ignoreip = 127.0.0.0/8 ::1 198.51.100.7/32\n" in block


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("flower_nginx_ban_failures", -1),
        ("flower_nginx_ban_window_seconds", 5),
        ("flower_nginx_ban_seconds", 0),
        ("flower_nginx_ban_seconds", "1h"),
        ("flower_nginx_connections_per_source", 0),
    ],
)
def test_ban_settings_are_checked(key, value):
    with pytest.raises(SettingsError, match=key):
        settings_with(**{key: value})


def test_fail2ban_client_status_is_read():
    output = [
        "Status for the jail: flowerbed-login",
        "|- Filter",
        "|  |- Currently failed:\t0",
        "|  |- Total failed:\t12",
        "|  `- File list:\t/var/log/nginx/flowerbed-login-failures.log",
        "`- Actions",
        "   |- Currently banned:\t2",
        "   |- Total banned:\t3",
        "   `- Banned IP list:\t192.0.2.9 2001:db8:1:2::/64",
    ]
    assert login_bans(output) == {
        "running": True,
        "banned": ["192.0.2.9", "2001:db8:1:2::/64"],
        "total": 3,
    }
    assert login_bans(["absent"]) == {"running": False, "banned": [], "total": 0}


def log_line(source: str, address: str, status: int = 401) -> str:
    """A line as nginx's log_format flowerbed_login_failures writes it."""
    http = render("nginx-dashboard-http.conf.j2", **dashboard_context(
        dashboard_site(settings_with(), "h1"), settings_with().dashboard_proxy))  # fmt: skip
    template = re.search(r"log_format flowerbed_login_failures '([^']*)';", http).group(1)
    return (
        template.replace("$time_iso8601", "2026-12-05T01:00:00+00:00")
        .replace("$http_x_flowerbed_source_key", source)
        .replace("$http_x_flowerbed_source", address)
        .replace("$status", str(status))
    )


def test_fail2ban_reads_the_source_of_each_failed_login(tmp_path):
    assert shutil.which("fail2ban-regex"), "fail2ban is missing: `make unit-packages`"
    lines = [
        log_line("198.51.100.20", "198.51.100.20"),
        log_line("2001:db8:1:2::/64", "2001:db8:1:2:a:b:c:d", 429),
        log_line("0::/64", "::1"),
    ]
    (tmp_path / "failures.log").write_text("\n".join(lines) + "\nsomething else\n")
    (tmp_path / "filter.conf").write_text(render("fail2ban-filter-flowerbed-nginx-login.conf.j2"))
    found = subprocess.run(
        ["fail2ban-regex", str(tmp_path / "failures.log"),
         str(tmp_path / "filter.conf")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Lines: 4 lines, 0 ignored, 3 matched, 1 missed" in found
    hits = subprocess.run(
        ["fail2ban-regex", "--out", "ip", str(tmp_path / "failures.log"),
         str(tmp_path / "filter.conf")],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert hits == ["198.51.100.20", "2001:db8:1:2::/64", "::/64"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_nginx_maps_the_addresses_it_spells_to_their_64(tmp_path):
    """nginx's own map on nginx's own spelling: realip turns a header into $remote_addr."""
    assert shutil.which("nginx"), "nginx is missing: `make unit-packages` (never started)"
    port = free_port()
    entries = "\n".join(f'    "{p}" "{r}";' for p, r in SOURCE_PREFIX_MAP)
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
  access_log off;
  map $remote_addr $flowerbed_source {{
    default $remote_addr;
{entries}
  }}
  server {{
    listen 127.0.0.1:{port};
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Test;
    location / {{ return 200 "$flowerbed_source"; }}
  }}
}}
""")
    nginx = ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    subprocess.run([*nginx, "-t", "-q"], check=True, capture_output=True)
    subprocess.run([*nginx, "-g", "daemon on;"], check=True)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        for _ in range(50):
            if (tmp_path / "nginx.pid").exists():
                break
            time.sleep(0.1)
        for address in list(addresses(300)) + [ipaddress.IPv4Address("192.0.2.1")]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/", headers={"X-Test": str(address)}
            )
            with direct.open(request) as answer:
                source = answer.read().decode()
            if "." in source:  # IPv4; IPv6 with 80 or 96 leading zero bits, a dotted quad
                assert "/" not in source and (address.version == 4 or int(address) < 1 << 48)
                continue
            expected = ipaddress.IPv6Network((int(address) >> 64 << 64, 64))
            assert ipaddress.IPv6Network(source) == expected, (address, source)
    finally:
        subprocess.run([*nginx, "-s", "stop"], check=False)
