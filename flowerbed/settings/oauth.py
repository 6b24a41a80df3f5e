"""OAuth providers: what Flower's login handlers read from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..validation import SettingsError
from .checks import Check, expect, setting, string_list, text, url
from .edge import dns_name

if TYPE_CHECKING:
    from . import Settings


OKTA, GITHUB, GITLAB = (f"flower.views.auth.{h}LoginHandler" for h in ("Okta", "Github", "GitLab"))


GITLAB_ACCESS_LEVELS = (5, 10, 15, 20, 30, 40, 50)  # minimal, guest, planner, reporter, ...


def gitlab_access_level() -> Check:
    def check(key: str, value: Any) -> int:
        expect(key, value, int, f"a GitLab access level {GITLAB_ACCESS_LEVELS}")
        if value not in GITLAB_ACCESS_LEVELS:
            raise SettingsError(
                key, f"{value} is not a GitLab access level", f"use one of {GITLAB_ACCESS_LEVELS}"
            )
        return value

    return check


def oauth_domain() -> Check:
    def check(key: str, value: Any) -> str:
        value = dns_name(optional=True)(key, value)
        if value.startswith("*."):
            raise SettingsError(key, "a wildcard is not a domain", "name the provider's host")
        return value

    return check


def okta_base_url() -> Check:
    def check(key: str, value: Any) -> str:
        value = url(("https",))(key, value).rstrip("/")
        parts = urlsplit(value)
        if parts.query or parts.fragment or value.endswith("/v1"):
            raise SettingsError(
                key,
                f"{value!r} is not a base URL: Flower appends /v1/authorize, /v1/token and "
                "/v1/userinfo to it",
                "use e.g. https://example.okta.com/oauth2/default (no /v1, query or fragment)",
            )
        return value

    return check


@dataclass(frozen=True)
class OAuthProvider:
    """Settings Flower's login handlers read from the environment (the unit's Environment=)."""

    flower_oauth2_okta_base_url: str = setting(
        okta_base_url(), "Okta: the authorization server, e.g. https://x.okta.com/oauth2/default"
    )
    flower_github_oauth_domain: str = setting(
        oauth_domain(), "GitHub Enterprise's domain ('' = github.com)"
    )
    flower_gitlab_oauth_domain: str = setting(
        oauth_domain(), "a self-hosted GitLab's domain ('' = gitlab.com)"
    )
    flower_gitlab_auth_allowed_groups: tuple[str, ...] = setting(
        string_list(text(r"[\w.-]+(/[\w.-]+)*", "a GitLab group's full path like 'acme/ops'")),
        "GitLab groups (full paths) a user must belong to ([] = any)",
    )
    flower_gitlab_min_access_level: int = setting(
        gitlab_access_level(), "the access level a user needs in one of those groups"
    )

    prefix = ""

    def environment(self, provider: str) -> list[tuple[str, str]]:
        """The variables `provider`'s handler reads, as Flower names them."""
        if provider == OKTA:
            return [("FLOWER_OAUTH2_OKTA_BASE_URL", self.flower_oauth2_okta_base_url)]
        if provider == GITHUB and self.flower_github_oauth_domain:
            return [("FLOWER_GITHUB_OAUTH_DOMAIN", self.flower_github_oauth_domain)]
        if provider == GITLAB:
            groups = ",".join(self.flower_gitlab_auth_allowed_groups)
            domain = self.flower_gitlab_oauth_domain
            return [
                *([("FLOWER_GITLAB_OAUTH_DOMAIN", domain)] if domain else []),
                *([("FLOWER_GITLAB_AUTH_ALLOWED_GROUPS", groups)] if groups else []),
                ("FLOWER_GITLAB_MIN_ACCESS_LEVEL", str(self.flower_gitlab_min_access_level)),
            ]
        return []


def check_oauth_provider(s: Settings) -> Iterator[SettingsError]:
    """Each provider setting only with its provider; Okta cannot work without its base URL."""
    provider, p = s.options.auth_provider, s.oauth_provider
    if provider == OKTA and not p.flower_oauth2_okta_base_url:
        yield SettingsError(
            "flower_oauth2_okta_base_url",
            "Okta's login handler builds every URL from it (without it users go to None/v1/...)",
            "set it to your Okta authorization server, e.g. https://x.okta.com/oauth2/default",
        )
    owners = {
        "flower_oauth2_okta_base_url": OKTA,
        "flower_github_oauth_domain": GITHUB,
        "flower_gitlab_oauth_domain": GITLAB,
        "flower_gitlab_auth_allowed_groups": GITLAB,
    }
    for key, owner in owners.items():
        if getattr(p, key) and provider != owner:
            yield SettingsError(
                key,
                f"only {owner.rsplit('.', 1)[1]} reads it (flower_auth_provider is "
                f"{provider or 'unset'!r})",
                f"remove {key}, or set flower_auth_provider = {owner!r}",
            )
