"""OAuth settings: Flower's auth pattern and what each provider's login handler reads."""

from __future__ import annotations

import pytest
import settings_helpers
from settings_helpers import error_for, settings_with

from flowerbed.flower import unit_text
from flowerbed.settings import GITHUB, GITLAB, OKTA

# the shared OAuth data without a provider: each test names the one it checks
OAUTH = {
    **{k: v for k, v in settings_helpers.OAUTH.items() if k != "flower_auth_provider"},
    "flower_auth": "alice@example.com",
}
OKTA_URL = "https://example.okta.com/oauth2/default"


def provider_environment(**overrides) -> list[tuple[str, str]]:
    settings = settings_with(**OAUTH, **overrides)
    return settings.oauth_provider.environment(settings.options.auth_provider)


def environment_lines(**overrides) -> list[str]:
    settings = settings_with(**OAUTH, **overrides)
    environment = settings.oauth_provider.environment(settings.options.auth_provider)
    unit = unit_text(settings.flower, environment)
    return [line for line in unit.splitlines() if line.startswith('Environment="FLOWER_')]


@pytest.mark.parametrize(
    "pattern", ["alice@example.com", "alice@example.com|bob@example.org", ".*@example.com"]
)
def test_flower_auth_takes_the_patterns_flower_matches(pattern):
    assert settings_with(**{**OAUTH, "flower_auth_provider": GITHUB, "flower_auth": pattern})


@pytest.mark.parametrize(
    "pattern",
    [
        r".*@example\.com",
        "*@example.com",
        "*@*.example.com",
        "*@a.com|b@b.com",
        "a*b*@x.com",
        "alice",
        "^a@x.com$",
    ],
)
def test_a_regexp_or_a_pattern_flower_rejects_is_an_error(pattern):
    message = error_for(**{**OAUTH, "flower_auth_provider": GITHUB, "flower_auth": pattern})
    assert message.startswith("flower_auth:") and "not a regexp" in message
    assert "*@example.com" in message, "the message shows the right form"


def test_okta_needs_its_base_url():
    message = error_for(**OAUTH, flower_auth_provider=OKTA)
    assert message.startswith("flower_oauth2_okta_base_url:") and "None/v1" in message


def test_okta_base_url_reaches_flowers_environment():
    assert provider_environment(
        flower_auth_provider=OKTA, flower_oauth2_okta_base_url=OKTA_URL + "/"
    ) == [("FLOWER_OAUTH2_OKTA_BASE_URL", OKTA_URL)]
    assert environment_lines(flower_auth_provider=OKTA, flower_oauth2_okta_base_url=OKTA_URL) == [
        f'Environment="FLOWER_OAUTH2_OKTA_BASE_URL={OKTA_URL}"'
    ]


@pytest.mark.parametrize(
    "url", ["http://example.okta.com", f"{OKTA_URL}/v1", f"{OKTA_URL}?x=1", "example.okta.com"]
)
def test_okta_base_url_must_be_an_https_base(url):
    message = error_for(**OAUTH, flower_auth_provider=OKTA, flower_oauth2_okta_base_url=url)
    assert message.startswith("flower_oauth2_okta_base_url:")


def test_github_enterprise_domain():
    assert provider_environment(flower_auth_provider=GITHUB) == [], "github.com: nothing to set"
    assert environment_lines(
        flower_auth_provider=GITHUB, flower_github_oauth_domain="GitHub.Example.com"
    ) == ['Environment="FLOWER_GITHUB_OAUTH_DOMAIN=github.example.com"']
    for bad in ("https://github.example.com", "*.example.com", "github example"):
        message = error_for(**OAUTH, flower_auth_provider=GITHUB, flower_github_oauth_domain=bad)
        assert message.startswith("flower_github_oauth_domain:")


def test_gitlab_domain_groups_and_access_level():
    assert provider_environment(flower_auth_provider=GITLAB) == [
        ("FLOWER_GITLAB_MIN_ACCESS_LEVEL", "20")
    ]
    assert provider_environment(
        flower_auth_provider=GITLAB,
        flower_gitlab_oauth_domain="gitlab.example.com",
        flower_gitlab_auth_allowed_groups=["acme/ops", "acme/dev-team"],
        flower_gitlab_min_access_level=30,
    ) == [
        ("FLOWER_GITLAB_OAUTH_DOMAIN", "gitlab.example.com"),
        ("FLOWER_GITLAB_AUTH_ALLOWED_GROUPS", "acme/ops,acme/dev-team"),
        ("FLOWER_GITLAB_MIN_ACCESS_LEVEL", "30"),
    ]


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"flower_gitlab_min_access_level": 25}, "flower_gitlab_min_access_level"),
        ({"flower_gitlab_min_access_level": "30"}, "flower_gitlab_min_access_level"),
        ({"flower_gitlab_auth_allowed_groups": ["a,b"]}, "flower_gitlab_auth_allowed_groups[0]"),
        ({"flower_gitlab_auth_allowed_groups": "acme"}, "flower_gitlab_auth_allowed_groups"),
        ({"flower_gitlab_oauth_domain": "gitlab/x"}, "flower_gitlab_oauth_domain"),
    ],
)
def test_bad_gitlab_settings_name_the_key(overrides, key):
    assert error_for(**OAUTH, flower_auth_provider=GITLAB, **overrides).startswith(f"{key}:")


@pytest.mark.parametrize(
    "key, value, provider",
    [
        ("flower_oauth2_okta_base_url", OKTA_URL, GITHUB),
        ("flower_github_oauth_domain", "github.example.com", GITLAB),
        ("flower_gitlab_oauth_domain", "gitlab.example.com", OKTA),
        ("flower_gitlab_auth_allowed_groups", ["acme"], GITHUB),
    ],
)
def test_a_setting_for_another_provider_is_an_error(key, value, provider):
    extra = {"flower_oauth2_okta_base_url": OKTA_URL} if provider == OKTA else {}
    message = error_for(**OAUTH, **extra, flower_auth_provider=provider, **{key: value})
    assert message.startswith(f"{key}: only ")


def test_a_percent_in_the_environment_is_not_a_systemd_specifier():
    lines = environment_lines(
        flower_auth_provider=OKTA, flower_oauth2_okta_base_url="https://x.okta.com/a%20b"
    )
    assert lines == ['Environment="FLOWER_OAUTH2_OKTA_BASE_URL=https://x.okta.com/a%%20b"']


def test_basic_mode_units_set_no_provider_environment():
    assert "FLOWER_OAUTH2" not in unit_text(settings_with().flower)
