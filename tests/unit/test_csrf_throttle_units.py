"""The edge's CSRF control, login throttles and bcrypt cost, without a lab (rendered config).

What nginx does with them is tested on lab hosts (test_edge.py, test_browser.py); here: that
every mode renders them, and that the origin patterns match what they should and nothing else.
"""

from __future__ import annotations

import re

import bcrypt
import pytest
from settings_helpers import OAUTH, settings_with

from flowerbed.auth import BCRYPT_ROUNDS, bcrypt_cost, htpasswd_lines, parse_htpasswd
from flowerbed.inputs.edge import dashboard_site
from flowerbed.inputs.logins import Login
from flowerbed.nginx import https_site_text, origin_patterns

SITE = {"flower_fqdn": "flower.example.com"}


def site_text(**overrides) -> str:
    settings = settings_with(**{**SITE, **overrides})
    return https_site_text(dashboard_site(settings, "h1"), settings.dashboard_proxy)


def server_block(site: str) -> str:
    """The dashboard's server block (the one with server_name)."""
    return site[site.index("server_name") :]


@pytest.mark.parametrize(
    "mode", [{}, {"flower_url_prefix": "flower"}, OAUTH], ids=["basic", "subpath", "oauth"]
)
def test_every_mode_refuses_cross_site_control_and_hides_flowers_cors(mode):
    site = site_text(**mode)
    dashboard = server_block(site)
    assert "if ($flowerbed_cross_site) {\n        return 403;" in dashboard
    assert "~^(GET|HEAD|OPTIONS): 0;" in site
    assert "~*^https://flower\\.example\\.com(:443)?$ same;" in site
    for header in ("Origin", "Headers", "Methods"):
        assert f"proxy_hide_header Access-Control-Allow-{header};" in dashboard
    assert "limit_req zone=flowerbed_requests burst=50 nodelay;" in dashboard


def test_failed_logins_are_counted_in_basic_mode_only():
    basic = site_text(flower_nginx_login_failures_per_minute=7, flower_nginx_login_failures_burst=3)
    assert "zone=flowerbed_login_failures:1m rate=7r/m;" in basic
    assert "limit_req zone=flowerbed_login_failures burst=3 nodelay;" in basic
    assert "error_page 401 = @flowerbed_login_failed;" in basic
    assert "proxy_pass http://127.0.0.80:80;" in basic
    oauth = site_text(**OAUTH)
    assert "flowerbed_login_failures" not in oauth and "error_page 401" not in oauth


def test_request_limit_is_a_knob():
    site = site_text(flower_nginx_requests_per_second=9, flower_nginx_requests_burst=90)
    assert "zone=flowerbed_requests:1m rate=9r/s;" in site
    assert "limit_req zone=flowerbed_requests burst=90 nodelay;" in site


@pytest.mark.parametrize(
    ("origin", "same"),
    [
        ("https://flower.example.com", True),
        ("https://FLOWER.example.com", True),
        ("https://flower.example.com:443", True),
        ("https://www.example.org", True),
        ("https://a-1.apps.example.net", True),
        ("http://flower.example.com", False),
        ("https://flower.example.com:8443", False),
        ("https://flower.example.com.evil.example", False),
        ("https://flowerxexample.com", False),
        ("https://evil.example/https://flower.example.com", False),
        ("https://a.b.apps.example.net", False),
        ("https://apps.example.net", False),
        ("null", False),
    ],
)
def test_origin_patterns_match_the_sites_names_only(origin, same):
    """nginx matches `~*^PATTERN(:443)?$`; PCRE and Python agree on these patterns."""
    names = ("flower.example.com", "www.example.org", "*.apps.example.net")
    patterns = [f"^{pattern}(:443)?$" for pattern in origin_patterns(names)]
    assert any(re.match(p, origin, re.IGNORECASE) for p in patterns) == same


def test_a_changed_bcrypt_cost_rehashes_and_a_current_one_is_kept():
    login = Login("alice", "a-long-random-password")
    old = bcrypt.hashpw(login.password.encode(), bcrypt.gensalt(4)).decode()
    rehashed = parse_htpasswd(htpasswd_lines((login,), {"alice": old}))["alice"]
    assert bcrypt_cost(rehashed) == BCRYPT_ROUNDS and rehashed != old
    assert bcrypt.checkpw(login.password.encode(), rehashed.encode())
    assert parse_htpasswd(htpasswd_lines((login,), {"alice": rehashed}))["alice"] == rehashed
