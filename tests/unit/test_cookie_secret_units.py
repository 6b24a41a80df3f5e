"""Each host's own OAuth cookie secret (derived from the operator's), and Secure cookies."""

from __future__ import annotations

import base64
import hashlib
import hmac
from types import SimpleNamespace

from settings_helpers import OAUTH, settings_with, valid_data

from flowerbed.flower import env_text
from flowerbed.inputs.edge import dashboard_site
from flowerbed.inputs.secrets import COOKIE_DERIVATION, Secret, host_cookie_secret
from flowerbed.nginx import https_site_text
from flowerbed.preflight import host_problems

OPERATOR = Secret("$COOKIE_SECRET", "k9Xv2PqL7sWm4TzR8yNc3BfH6dJg1QaE")
ENVIRON = {
    "FLOWERBED_BROKER_URL": "redis://:Str0ng-broker-pw@10.0.0.5:6379/0",
    "OAUTH_SECRET": "oauth-client-secret-4711",
    "COOKIE_SECRET": OPERATOR.value,
}


def test_different_hosts_get_different_secrets_the_same_host_the_same():
    one = host_cookie_secret(OPERATOR, "flower-1.example.com")
    two = host_cookie_secret(OPERATOR, "flower-2.example.com")
    assert one.value != two.value
    assert one.value == host_cookie_secret(OPERATOR, "flower-1.example.com").value
    assert len(one.value) == 43 and OPERATOR.value not in one.value
    rotated = Secret("$COOKIE_SECRET", "Nq3vX8mZ2pL7wR4tY9kB6cJ1hF5dG0sA")
    assert host_cookie_secret(rotated, "flower-1.example.com").value != one.value
    assert "k9Xv" not in str(one) and "derived for flower-1.example.com" in str(one)


def test_the_derivation_is_hmac_sha256_of_the_site_name():
    """Documented so an operator can recompute a host's key (e.g. to test a session)."""
    mac = hmac.new(OPERATOR.value.encode(), COOKIE_DERIVATION + b"a.example", hashlib.sha256)
    expected = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    assert host_cookie_secret(OPERATOR, "a.example").value == expected


def host(name: str, **data) -> SimpleNamespace:
    data = valid_data(**OAUTH, **data)
    return SimpleNamespace(name=name, data=SimpleNamespace(dict=lambda: data))


def test_each_host_gets_its_own_key_and_never_the_operators_secret():
    written = {}
    for name, fqdn in (("h1", "flower-1.example.com"), ("h2", "flower-2.example.com")):
        checked, errors = host_problems(host(name, flower_fqdn=fqdn), ENVIRON)
        assert not errors, errors
        assert checked.secrets.cookie_secret.value == host_cookie_secret(OPERATOR, fqdn).value
        written[name] = env_text(checked.settings.flower, checked.secrets).value
    assert written["h1"] != written["h2"]
    assert all(OPERATOR.value not in text for text in written.values())
    # no flower_fqdn: the host's name is the dashboard's name
    checked, errors = host_problems(host("flower-3.example.com"), ENVIRON)
    assert not errors, errors
    assert (
        checked.secrets.cookie_secret.value
        == host_cookie_secret(OPERATOR, "flower-3.example.com").value
    )


def test_flowers_cookies_are_marked_secure_by_nginx():
    for mode in ({}, OAUTH):
        settings = settings_with(flower_fqdn="flower.example.com", **mode)
        site = https_site_text(dashboard_site(settings, "h1"), settings.dashboard_proxy)
        assert "proxy_cookie_flags ~ secure;" in site
