"""The operator's secrets: read from the environment, checked, never shown.

Data never holds a secret, only the NAME of the environment variable that does
(`flower_broker_url_env = "FLOWERBED_BROKER_URL"`). Values come from the operator's
environment, `.env` in the working directory, or the file named by FLOWERBED_ENV_FILE
(python-dotenv; what is already in the environment wins). Writing one to a host is
flowerbed.secrets' `secret_file`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dotenv import load_dotenv

from ..settings import BROKER_SCHEMES, Flower, SettingsError
from ..validation import (
    CONTROL_CHARACTER,
    Problems,
    broker_url_problem,
    sample_secret,
    split_url,
    weak_cookie_secret_problem,
    weak_password_problem,
)

ENV_FILE_VARIABLE = "FLOWERBED_ENV_FILE"


@dataclass(frozen=True)
class Secret:
    """A secret value that prints as where it came from, never as itself."""

    source: str
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


@dataclass(frozen=True)
class FlowerSecrets:
    broker_url: Secret
    basic_auth: Secret | None  # "user:password,user2:password2", Flower's format
    oauth2_secret: Secret | None
    cookie_secret: Secret | None
    broker_api: Secret | None


def load_operator_env() -> None:
    """Load the operator's .env (or $FLOWERBED_ENV_FILE) without overriding the environment."""
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named and not Path(named).is_file():
        raise SettingsError(ENV_FILE_VARIABLE, f"{named} does not exist", "point it at your .env")
    load_dotenv(named or Path.cwd() / ".env", override=False)


def read_secret(key: str, env_name: str, environ: Mapping[str, str]) -> Secret:
    """The value of the variable that data key `key` names, or a SettingsError that never
    shows the value: unset, not one line, whitespace around it, or a sample value."""
    value = environ.get(env_name, "")
    if not value:
        raise SettingsError(
            key,
            f"the environment variable {env_name} it names is unset or empty",
            f"set {env_name} in your .env (see .env.example) or the environment",
        )
    if CONTROL_CHARACTER.search(value):
        raise SettingsError(
            key,
            f"${env_name} spans several lines or holds a control character",
            "use a one-line value",
        )
    if value != value.strip():
        raise SettingsError(
            key, f"${env_name} starts or ends with whitespace", "remove the spaces around it"
        )
    if sample_secret(value):
        raise SettingsError(
            key,
            f"${env_name} still holds a sample value (from .env.example or a well-known one)",
            f"set {env_name} to a real secret, e.g. from `openssl rand -base64 32`",
        )
    return Secret(f"${env_name}", value)


def check_password(key: str, password: str, user: str, where: str) -> None:
    """A login's password: long enough and not a sample (bcrypt makes guessing slow, not
    impossible). `where` says which login, without showing it."""
    if problem := weak_password_problem(password, user):
        raise SettingsError(
            key,
            f"the password of {user!r} in {where} {problem}",
            "use a random password of 12 characters or more, e.g. `openssl rand -base64 18`",
        )


def read_optional_secret(key: str, env_name: str, environ: Mapping[str, str]) -> Secret | None:
    return read_secret(key, env_name, environ) if env_name else None


def broker_url(flower: Flower, environ: Mapping[str, str]) -> Secret:
    """Parsed in full, as kombu will: a malformed URL makes kombu log part of the password."""
    secret = read_secret("flower_broker_url_env", flower.broker_url_env, environ)
    if found := broker_url_problem(secret.value, BROKER_SCHEMES):
        problem, fix = found
        raise SettingsError("flower_broker_url_env", f"${flower.broker_url_env} {problem}", fix)
    return secret


def basic_auth(flower: Flower, environ: Mapping[str, str]) -> Secret | None:
    pairs = []
    for user, env_name in flower.basic_auth:
        key = f"flower_basic_auth[{user!r}]"
        password = read_secret(key, env_name, environ)
        if "," in password.value:
            raise SettingsError(
                key,
                f"the password in ${env_name} contains ',', where Flower splits basic_auth",
                "choose a password without ','",
            )
        check_password(key, password.value, user, f"${env_name}")
        pairs.append(f"{user}:{password.value}")
    return Secret("flower_basic_auth", ",".join(pairs)) if pairs else None


def broker_api(flower: Flower, environ: Mapping[str, str]) -> Secret | None:
    secret = read_optional_secret("flower_broker_api_env", flower.broker_api_env, environ)
    fix = "use RabbitMQ's management API URL, e.g. http://user:password@rabbit:15672/api/"
    if secret:
        parts = split_url("flower_broker_api_env", secret.value, fix.rpartition(" ")[2])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                "flower_broker_api_env", f"${flower.broker_api_env} is not an http(s) URL", fix
            )
    return secret


def oauth2_secret(flower: Flower, environ: Mapping[str, str]) -> Secret | None:
    return read_optional_secret("flower_oauth2_secret_env", flower.oauth2_secret_env, environ)


def cookie_secret(flower: Flower, environ: Mapping[str, str]) -> Secret | None:
    """With OAuth, whoever knows the cookie secret can forge a login: long and random."""
    secret = read_optional_secret("flower_cookie_secret_env", flower.cookie_secret_env, environ)
    if secret and (problem := weak_cookie_secret_problem(secret.value)):
        raise SettingsError(
            "flower_cookie_secret_env",
            f"${flower.cookie_secret_env} {problem}",
            "use 32 random bytes or more, e.g. `openssl rand -base64 32`",
        )
    return secret


COOKIE_DERIVATION = b"flowerbed: Flower's cookie secret for one dashboard, v1\0"


def host_cookie_secret(operator_secret: Secret, site: str) -> Secret:
    """The cookie secret of the dashboard named `site`: HMAC-SHA256 of the operator's secret
    with that name. Each host signs its sessions with its own key, derived one way: root on one
    host (who can read that key) can neither find the operator's secret nor mint a session
    another host accepts. The same name always gets the same key, so sessions survive restarts
    and deploys; a new operator's secret (rotate.py --data rotate=cookie) changes every key."""
    if not site:
        raise ValueError("a cookie secret is derived for a named dashboard")
    mac = hmac.new(
        operator_secret.value.encode(), COOKIE_DERIVATION + site.encode(), hashlib.sha256
    )
    derived = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")  # 43 characters
    return Secret(f"{operator_secret.source} (derived for {site})", derived)


def load_flower_secrets(
    flower: Flower, environ: Mapping[str, str], site: str = ""
) -> FlowerSecrets:
    """Every secret the data names, checked; all problems at once (SettingsErrors). With
    `site` (the dashboard's name), the cookie secret is that host's own (host_cookie_secret):
    the operator's secret itself never leaves this machine."""
    problems, loaded = Problems(), {}
    for load in (broker_url, basic_auth, oauth2_secret, cookie_secret, broker_api):
        # incomplete: a key that names a variable may have failed its own check already
        with problems.check(incomplete=True):
            loaded[load.__name__] = load(flower, environ)
    problems.raise_any()
    secrets = FlowerSecrets(**loaded)
    if site and secrets.cookie_secret:
        secrets = replace(secrets, cookie_secret=host_cookie_secret(secrets.cookie_secret, site))
    return secrets
