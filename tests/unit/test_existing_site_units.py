"""Flower inside the operator's site, without a lab: the settings, the server-block parser that
decides where the include line goes, and the locations flowerbed ships for it."""

from __future__ import annotations

import pytest
import settings_helpers

from flowerbed.existing_site import (
    INCLUDE,
    SiteFile,
    http_level_text,
    locations_text,
    server_blocks,
    site_problem,
)
from flowerbed.inputs.edge import dashboard_site

IN_SITE = {
    "flower_fqdn": "app.example.com",
    "flower_url_prefix": "flower",
    "flower_existing_site": "/etc/nginx/sites-available/app",
}
APP = """# the app
server {
    listen 80;
    server_name app.example.com;
    return 301 https://$host$request_uri;
}

server {  # the app over TLS
    listen 443 ssl http2;
    listen [::]:443 ssl;
    server_name  app.example.com www.example.com;
    ssl_certificate "/etc/ssl/app; the cert.crt";
    location / { proxy_pass http://127.0.0.1:8000; }
    location /x#y { return 200 "{ not a block; }"; }
}
server { listen 443 ssl; server_name other.example.com; }
"""


def test_the_https_server_for_the_name_is_found_as_nginx_reads_the_file():
    blocks = server_blocks(APP)
    assert [(b.opening_line, b.tls, b.names) for b in blocks] == [
        (2, False, ("app.example.com",)),
        (8, True, ("app.example.com", "www.example.com")),
        (16, True, ("other.example.com",)),
    ]
    assert [b.opening_alone for b in blocks] == [True, True, False]
    found = SiteFile("/etc/nginx/sites-available/app", "/etc/nginx/sites-available/app", APP, ())
    assert found.server("app.example.com").opening_line == 8
    assert found.server("other.example.com").opening_line == 16
    assert found.server("nobody.example.com") is None


def test_an_unusable_site_is_refused_with_the_key_and_the_fix():
    path = "/etc/nginx/sites-available/app"
    missing = SiteFile(path, path, None, ())
    assert "does not exist on this host" in site_problem(missing, "app.example.com", True)
    found = SiteFile(path, path, APP, ())
    assert site_problem(found, "app.example.com", True) is None
    assert "no HTTPS server" in site_problem(found, "www2.example.com", False)
    one_line = site_problem(found, "other.example.com", True)
    assert f"{path}:16" in one_line and INCLUDE in one_line
    assert site_problem(found, "other.example.com", False) is None, "printed, not edited"
    included = APP.replace("server { listen 443 ssl;", f"server {{ listen 443 ssl; {INCLUDE}")
    assert site_problem(SiteFile(path, path, included, ()), "other.example.com", True) is None


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"flower_url_prefix": ""}, "flower_url_prefix"),
        ({"flower_nginx_server_snippets": ["access_log off;"]}, "flower_nginx_server_snippets"),
        ({"flower_existing_site": "/etc/nginx/../shadow"}, "flower_existing_site"),
        ({"flower_existing_site": "/etc/passwd"}, "flower_existing_site"),
        ({"flower_existing_site": "/etc/nginx/conf.d/flowerbed.conf"}, "flower_existing_site"),
        ({"flower_existing_site": "/etc/nginx/sites-available/app;x"}, "flower_existing_site"),
    ],
)
def test_inside_a_site_settings_are_checked(overrides, key):
    assert key in settings_helpers.error_for(**{**IN_SITE, **overrides})


def test_every_location_carries_the_guard_and_the_server_stays_the_operators():
    settings = settings_helpers.settings_with(**IN_SITE)
    site = dashboard_site(settings, "h1")
    locations = locations_text(site, settings.dashboard_proxy, settings.site)
    assert "server" not in locations.replace("server_tokens", "").split("#")[0]
    assert "listen" not in locations and "ssl_" not in locations
    assert "Strict-Transport-Security" not in locations, "the site's HSTS is its own"
    for path in ("/flower/ {", "= /flower/metrics {", "= /flower/healthcheck {"):
        block = locations.split(f"location {path}", 1)[1].split("\n    }", 1)[0]
        for guard in ("$flowerbed_outsider", "$flowerbed_cross_site", "limit_req zone",
                      'auth_basic "Flower"', "more_set_input_headers"):  # fmt: skip
            assert guard in block, f"{path}: {guard}"
    assert "location = / " not in locations, "the site's / is the app's"
    http_level = http_level_text(site, settings.dashboard_proxy, settings.site)
    assert "geo $flowerbed_outsider" in http_level and "203.0.113.0/24 0;" in http_level
    assert "location /flower" not in http_level and "include /etc/nginx/snip" not in http_level
    assert "include /etc/nginx/flowerbed-users.map;" in http_level, "the decoy's login names"
