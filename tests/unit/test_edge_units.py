"""The edge without a lab: settings, logins, certificate decisions, rendered nginx sites."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bcrypt
import pytest
import settings_helpers
from settings_helpers import REPO

from flowerbed.auth import htpasswd_lines, parse_htpasswd
from flowerbed.inputs.edge import dashboard_site, edge_inputs
from flowerbed.inputs.logins import dashboard_logins
from flowerbed.nginx import (
    Neighbours,
    NginxNeighbours,
    http_site_text,
    https_site_text,
    listen_port,
)
from flowerbed.settings import LETS_ENCRYPT, SettingsError
from flowerbed.tls import CertificateRequest, certbot_argv, parse_lineage

HOOK = "lab/dns01-hook.sh"
ENVIRON = {"FLOWERBED_DASHBOARD_USERS": "admin:s3cret-pw-4711"}
SITE = {"flower_fqdn": "flower.example.com"}


def settings_with(**overrides):
    return settings_helpers.settings_with(**{**SITE, **overrides})


def error_for(**overrides) -> str:
    return settings_helpers.error_for(**{**SITE, **overrides})


def logins_from(value: str):
    return dashboard_logins(settings_with().auth, {"FLOWERBED_DASHBOARD_USERS": value})


def login_error(value: str) -> str:
    with pytest.raises(SettingsError) as caught:
        logins_from(value)
    return str(caught.value)


# --- settings -------------------------------------------------------------------------------


def test_defaults_issue_from_lets_encrypt_over_http01_with_nginx_logins():
    settings = settings_with()
    assert settings.tls.acme_directory == LETS_ENCRYPT["letsencrypt"]
    assert settings.tls.authenticator == "webroot"
    assert settings.auth.mode == "basic"


def test_staging_is_one_switch():
    staging = settings_with(flower_tls_acme_directory="letsencrypt-staging")
    assert staging.tls.acme_directory == LETS_ENCRYPT["letsencrypt-staging"]
    assert "flower_tls_acme_directory" in error_for(
        flower_tls_acme_directory="http://acme.example/dir"
    )


def test_names_are_checked_and_the_host_name_is_the_fallback():
    assert "flower_fqdn" in error_for(flower_fqdn="not a name")
    assert "flower_server_aliases[0]" in error_for(flower_server_aliases=["bad_name"])
    assert dashboard_site(settings_with(flower_fqdn=""), "flower.example.org").names[0] == (
        "flower.example.org"
    )
    with pytest.raises(SettingsError, match="flower_fqdn"):
        dashboard_site(settings_with(flower_fqdn=""), "h1")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"flower_tls_dns_hook": HOOK}, "flower_tls_challenge"),
        ({"flower_server_aliases": ["*.example.com"]}, "flower_tls_challenge"),
        ({"flower_tls_challenge": "dns-01"}, "flower_tls_challenge"),
        (
            {
                "flower_tls_challenge": "dns-01",
                "flower_tls_dns_plugin": "x",
                "flower_tls_dns_hook": HOOK,
            },
            "flower_tls_challenge",
        ),
        ({"flower_tls_dns_credentials_env": "CF_INI"}, "flower_tls_dns_credentials_env"),
        ({"flower_tls_dns_hook": "no/such/hook"}, "flower_tls_dns_hook"),
        ({"flower_nginx_proxy_read_timeout": 1}, "flower_nginx_proxy_read_timeout"),
        ({"flower_basic_auth": {"alice": "PW"}}, "flower_auth_mode"),
        ({"flower_unauthenticated_api": True}, "flower_auth_mode"),
        ({"flower_auth_mode": "oauth"}, "flower_auth_mode"),
        ({"flower_auth_users_env": ""}, "flower_auth_users_env"),
        ({"flower_nginx_server_snippets": ["add_header X 1"]}, "flower_nginx_server_snippets[0]"),
        ({"flower_monitoring_sources": ["10.0.0.1/8"]}, "flower_monitoring_sources[0]"),
    ],
)  # fmt: skip
def test_inconsistent_edge_settings_name_the_key(overrides, key):
    assert error_for(**overrides).startswith(f"{key}:")


def test_oauth_mode_needs_no_nginx_logins():
    settings = settings_with(
        flower_auth_mode="oauth",
        flower_auth=".*@example.com",
        flower_auth_provider="flower.views.auth.GithubLoginHandler",
        flower_oauth2_key="client-id",
        flower_oauth2_redirect_uri="https://flower.example.com/login",
        flower_oauth2_secret_env="OAUTH",
        flower_cookie_secret_env="COOKIE",
        flower_unauthenticated_api=False,
        flower_healthcheck_min_workers=0,
    )
    assert edge_inputs(settings, "h1", {}).logins == ()
    site = https_site_text(dashboard_site(settings, "h1"), settings.dashboard_proxy)
    assert "auth_basic_user_file" not in site and "Authorization" not in site


# --- logins ---------------------------------------------------------------------------------


def test_logins_allow_colons_in_passwords():
    logins = logins_from("alice:pa:ss,bob:x")
    assert [(login.user, login.password) for login in logins] == [("alice", "pa:ss"), ("bob", "x")]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("alice:pa,ss", "entry 2 of $FLOWERBED_DASHBOARD_USERS is not user:password"),
        ("alice", "entry 1 of $FLOWERBED_DASHBOARD_USERS is not user:password"),
        ("alice:", "is not user:password"),
        ("al ice:pw", "invalid user name"),
        ("alice:a,alice:b", "names a user twice"),
        ("alice:" + "x" * 73, "longer than bcrypt's 72 bytes"),
    ],
)
def test_bad_logins_are_refused_without_showing_them(value, problem):
    message = login_error(value)
    assert problem in message
    assert "pa,ss" not in message and "xxxx" not in message


def test_missing_logins_name_the_variable():
    with pytest.raises(SettingsError, match="FLOWERBED_DASHBOARD_USERS"):
        dashboard_logins(settings_with().auth, {})


def test_logins_never_print_their_password():
    (login,) = logins_from("alice:s3cret-pw")
    assert "s3cret-pw" not in repr(login)


def test_htpasswd_keeps_matching_hashes_and_rehashes_changed_passwords():
    first = htpasswd_lines(logins_from("alice:one,bob:two"), {})
    hashes = parse_htpasswd(first)
    assert set(hashes) == {"alice", "bob", "flowerbed+decoy"} and "one" not in first
    assert bcrypt.checkpw(b"one", hashes["alice"].encode())
    assert htpasswd_lines(logins_from("alice:one,bob:two"), hashes) == first
    rotated = parse_htpasswd(htpasswd_lines(logins_from("alice:new,bob:two"), hashes))
    assert rotated["bob"] == hashes["bob"] and rotated["alice"] != hashes["alice"]
    assert bcrypt.checkpw(b"new", rotated["alice"].encode())
    assert set(parse_htpasswd(htpasswd_lines(logins_from("bob:two"), hashes))) == {
        "bob",
        "flowerbed+decoy",
    }


# --- the certificate ------------------------------------------------------------------------

OPENSSL_OUTPUT = [
    "serial=7465C9C65423BA26",
    "notAfter=Nov 23 16:06:10 2031 GMT",
    "X509v3 Subject Alternative Name: ",
    "    DNS:flower.example.com, DNS:www.flower.example.com",
    f"server = {LETS_ENCRYPT['letsencrypt']}",
    "authenticator = webroot",
]


def request(**overrides) -> CertificateRequest:
    settings = settings_with(**overrides)
    return CertificateRequest(dashboard_site(settings, "h1").names, settings.tls)


def test_lineage_is_read_from_openssl_and_the_renewal_config():
    lineage = parse_lineage(OPENSSL_OUTPUT)
    assert lineage.names == ("flower.example.com", "www.flower.example.com")
    assert lineage.not_after == datetime(2031, 11, 23, 16, 6, 10, tzinfo=UTC)
    assert (lineage.serial, lineage.authenticator) == ("7465C9C65423BA26", "webroot")
    assert parse_lineage([]) is None


def test_certbot_runs_only_when_the_lineage_does_not_match():
    now = datetime(2026, 11, 23, tzinfo=UTC)
    lineage = parse_lineage(OPENSSL_OUTPUT)
    same = request(flower_server_aliases=["www.flower.example.com"])
    assert same.reason_to_issue(lineage, now) is None
    assert same.reason_to_issue(None, now) == "no certificate yet"
    assert "names" in request().reason_to_issue(lineage, now)
    staging = request(
        flower_server_aliases=["www.flower.example.com"],
        flower_tls_acme_directory="letsencrypt-staging",
    )
    assert "ACME directory" in staging.reason_to_issue(lineage, now)
    dns = request(
        flower_server_aliases=["www.flower.example.com"],
        flower_tls_challenge="dns-01",
        flower_tls_dns_plugin="cloudflare",
    )
    assert "webroot -> dns-cloudflare" in dns.reason_to_issue(lineage, now)
    later = lineage.not_after + timedelta(seconds=1)
    assert same.reason_to_issue(lineage, later) == "the certificate has expired"


def test_certbot_argv_per_challenge():
    webroot = certbot_argv(request(flower_tls_email="ops@example.com"))
    assert webroot[:2] == ["certbot", "certonly"]
    assert {"--webroot", "--email=ops@example.com", "--domain=flower.example.com"} <= set(webroot)
    private_ca = certbot_argv(request(flower_tls_acme_ca_bundle=str(REPO / "pyproject.toml")))
    assert private_ca[:2] == ["env", "REQUESTS_CA_BUNDLE=/etc/letsencrypt/flowerbed/acme-ca.pem"]
    plugin = certbot_argv(
        request(
            flower_tls_challenge="dns-01",
            flower_tls_dns_plugin="rfc2136",
            flower_tls_dns_credentials_env="INI",
        )
    )
    assert {
        "--dns-rfc2136",
        "--dns-rfc2136-credentials=/etc/letsencrypt/flowerbed/dns-credentials.ini",
    } <= set(plugin)
    hook = certbot_argv(
        request(flower_tls_challenge="dns-01", flower_tls_dns_hook="lab/dns01-hook.sh")
    )
    assert "--manual-auth-hook=/etc/letsencrypt/flowerbed/dns-hook auth" in hook
    assert "--register-unsafely-without-email" in hook


def test_dns_plugin_credentials_come_from_a_file_named_in_the_environment(tmp_path):
    settings = settings_with(
        flower_tls_challenge="dns-01",
        flower_tls_dns_plugin="cloudflare",
        flower_tls_dns_credentials_env="CF_INI",
    )
    ini = tmp_path / "cloudflare.ini"
    ini.write_text("dns_cloudflare_api_token = t0ken\n")
    inputs = edge_inputs(settings, "h1", {**ENVIRON, "CF_INI": str(ini)})
    assert inputs.dns_credentials.value.startswith("dns_cloudflare_api_token")
    assert "t0ken" not in str(inputs.dns_credentials)
    with pytest.raises(SettingsError, match="CF_INI"):
        edge_inputs(settings, "h1", {**ENVIRON, "CF_INI": str(tmp_path / "missing.ini")})


# --- nginx sites ----------------------------------------------------------------------------


def site_text(**overrides) -> str:
    settings = settings_with(**overrides)
    return https_site_text(dashboard_site(settings, "h1"), settings.dashboard_proxy)


def test_https_site_follows_mozilla_intermediate_and_strips_the_login():
    site = site_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in site
    assert "CBC" not in site and "SHA:" not in site
    assert site.count("ssl_ciphers") == 2, "the default (reject) server shares the profile"
    assert 'proxy_set_header Authorization "";' in site
    assert "proxy_set_header Host $host;" in site
    assert "server_tokens off;" in site
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in site


def test_hsts_is_configurable():
    assert "Strict-Transport-Security" not in site_text(flower_nginx_hsts_max_age=0)
    assert "; includeSubDomains" in site_text(flower_nginx_hsts_include_subdomains=True)


def test_metrics_admit_monitoring_sources_only():
    nowhere = site_text()
    assert "allow" not in nowhere.split("location = /metrics")[1].split("}")[0]
    monitored = site_text(flower_monitoring_sources=["192.0.2.0/24", "2001:db8::/48"])
    assert "    192.0.2.0/24 1;" in monitored and "allow 2001:db8::/48;" in monitored
    assert "location @flowerbed_metrics_0 {\n        return 403;" in monitored


def test_subpath_moves_every_location():
    site = site_text(flower_url_prefix="flower")
    for location in (
        "location /flower/ {",
        "location = /flower/metrics {",
        "location = /flower/healthcheck {",
    ):
        assert location in site
    assert "return 302 /flower/;" in site


def test_snippets_land_in_the_https_server():
    assert "\n    access_log off;\n}" in site_text(flower_nginx_server_snippets=["access_log off;"])


def test_port_80_serves_challenges_and_redirects_to_the_first_name():
    settings = settings_with(flower_server_aliases=["www.flower.example.com"])
    site = http_site_text(dashboard_site(settings, "h1"))
    assert "server_name flower.example.com www.flower.example.com;" in site
    assert "location ^~ /.well-known/acme-challenge/ {" in site
    assert "return 301 https://flower.example.com$request_uri;" in site
    assert "proxy_pass" not in site


# --- beside other sites -----------------------------------------------------------------------

NEIGHBOUR_OUTPUT = [
    "# configuration file /etc/nginx/nginx.conf:",
    "# configuration file /etc/nginx/conf.d/flowerbed-http.conf:",
    "    listen 80 default_server;",
    "# configuration file /etc/nginx/conf.d/flowerbed.conf:",
    "    listen 127.0.0.80:80;",
    "# configuration file /etc/nginx/sites-enabled/app:",
    "    listen 10.0.0.5:443 ssl http2;# the app",
    "# configuration file /etc/nginx/snippets/app-listen.conf:",
    "  listen [::]:8443 ssl ipv6only=on;",
    "# configuration file /etc/nginx/sites-enabled/default:",
    "\tlisten 80 default_server;",
    "\tlisten [::]:80 default_server;",
    "shipped 3e3f1f1ab8fa8e9fd2d2f8f9c8f0b0ad",
    "",
    "present 3e3f1f1ab8fa8e9fd2d2f8f9c8f0b0ad",
    "",
    "enabled /etc/nginx/sites-available/default",
]


def test_debians_unedited_default_site_is_flowerbeds_to_disable_and_claims_nothing():
    neighbours = NginxNeighbours().process(NEIGHBOUR_OUTPUT)
    assert neighbours.stock_default_enabled
    assert neighbours.listen_ports == {443, 8443}, "the app's (an include too), never flowerbed's"
    assert neighbours.claims_default(80) and not neighbours.claims_default(443)


def test_an_edited_default_site_is_the_operators_and_keeps_port_80():
    edited = [line.replace("present 3e3f", "present 0000") for line in NEIGHBOUR_OUTPUT]
    neighbours = NginxNeighbours().process(edited)
    assert not neighbours.stock_default_enabled
    assert neighbours.listen_ports == {80, 443, 8443}


def test_a_default_site_that_is_a_copy_not_the_link_is_the_operators():
    linked, copied = "enabled /etc/nginx/sites-available/", "enabled /etc/nginx/sites-enabled/"
    copied = [line.replace(linked, copied) for line in NEIGHBOUR_OUTPUT]
    assert not NginxNeighbours().process(copied).stock_default_enabled


def test_no_default_server_where_another_site_listens():
    settings = settings_with(flower_fqdn="h1.example.com")
    site = dashboard_site(settings, "h1")
    both = Neighbours(stock_default_enabled=False, listen_ports=frozenset({80, 443}))
    assert "default_server" not in http_site_text(site, both)
    https = https_site_text(site, settings.dashboard_proxy, both)
    assert "default_server" not in https and "ssl_reject_handshake" not in https
    alone = https_site_text(site, settings.dashboard_proxy)
    assert "listen 443 ssl default_server;" in alone and "ssl_reject_handshake on;" in alone
    assert "listen 80 default_server;" in http_site_text(site)


@pytest.mark.parametrize(
    ("line", "port"),
    [("listen 80;", 80), ("  listen [::]:443 ssl;", 443), ("listen 10.0.0.1:8080 default;", 8080),
     ("listen unix:/run/app.sock;", 0), ("listen localhost;", 80), ("listen 443;# x", 443)],
)  # fmt: skip
def test_the_port_of_a_listen_line(line, port):
    assert listen_port(line) == port
