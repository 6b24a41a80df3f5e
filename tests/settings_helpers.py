"""One place for "the defaults plus these values": every unit test builds its settings here.

settings_with(flower_max_tasks=5000)            # Settings, or SettingsError(s) raised
error_for(flower_max_tasks=0)                   # the message of the error(s) it raises
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowerbed.resources import DEFAULTS
from flowerbed.settings import Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent

# Keys whose defaults are deliberately invalid: every operator must choose them.
OPERATOR_CHOICES = {
    "flower_allowed_sources": ["203.0.113.0/24"],
    "flower_admin_sources": ["198.51.100.7/32"],
}
# Flower doing the login (flower_auth_mode "oauth"): the only mode where Flower itself
# authenticates; its secrets are in the variables OAUTH_SECRET and COOKIE_SECRET.
OAUTH = {
    "flower_auth_mode": "oauth",
    "flower_unauthenticated_api": False,
    "flower_auth": ".*@example.com",
    "flower_auth_provider": "flower.views.auth.GithubLoginHandler",
    "flower_oauth2_key": "client-id",
    "flower_oauth2_redirect_uri": "https://flower.example.com/login",
    "flower_oauth2_secret_env": "OAUTH_SECRET",
    "flower_cookie_secret_env": "COOKIE_SECRET",
    "flower_healthcheck_min_workers": 0,
}


def defaults() -> dict:
    """Every key's default, as the package ships them (group_data/all.py)."""
    return dict(DEFAULTS)


def valid_data(**overrides) -> dict:
    """group_data/all.py with the operator's required choices, then `overrides`."""
    return {**defaults(), **OPERATOR_CHOICES, **overrides}


def settings_with(**overrides) -> Settings:
    return load_settings(valid_data(**overrides))


def error_for(**overrides) -> str:
    """The message of what load_settings raises for these values (every problem, one a line)."""
    with pytest.raises(SettingsError) as caught:
        settings_with(**overrides)
    return str(caught.value)
