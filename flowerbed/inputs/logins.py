"""The dashboard's logins (basic auth at nginx): read from the operator's environment or .env,
in the variable that flower_auth_users_env names:

    FLOWERBED_DASHBOARD_USERS=alice:PASSWORD[,bob:PASSWORD...]

A user name ends at the first ':' (a password may contain ':'); entries are split on ',', so a
password cannot contain ',' and an entry without ':' is refused. Their hashes on the hosts are
flowerbed.auth's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..settings import Auth, SettingsError
from ..validation import Problems
from .secrets import check_password, read_secret

USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
BCRYPT_MAX_BYTES = 72  # bcrypt ignores (newer versions refuse) anything longer


@dataclass(frozen=True)
class Login:
    user: str
    password: str = field(repr=False)


def dashboard_logins(auth: Auth, environ: Mapping[str, str]) -> tuple[Login, ...]:
    """The logins flower_auth_users_env names, validated; none when Flower logs in (OAuth)."""
    if auth.mode != "basic":
        return ()
    secret = read_secret("flower_auth_users_env", auth.users_env, environ)
    logins = tuple(
        parse_login(entry, f"entry {position} of ${auth.users_env}")
        for position, entry in enumerate(secret.value.split(","), start=1)
    )
    users = [login.user for login in logins]
    if len(set(users)) != len(users):
        raise SettingsError(
            "flower_auth_users_env", f"${auth.users_env} names a user twice", "drop one"
        )
    return logins


def parse_login(entry: str, where: str) -> Login:
    # Messages never quote the entry: after a ',' in a password, it is part of that password.
    user, colon, password = entry.strip().partition(":")
    if not colon or not password:
        raise SettingsError(
            "flower_auth_users_env",
            f"{where} is not user:password",
            "separate logins with ',' (so a password cannot contain ',')",
        )
    if not USER_NAME.fullmatch(user):
        raise SettingsError(
            "flower_auth_users_env",
            f"{where} has an invalid user name",
            "use letters, digits, ._@-",
        )
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise SettingsError(
            "flower_auth_users_env",
            f"{where} has a password longer than bcrypt's {BCRYPT_MAX_BYTES} bytes",
            "use a shorter password",
        )
    return Login(user, password)


def checked_logins(auth: Auth, environ: Mapping[str, str]) -> tuple[Login, ...]:
    """The dashboard's logins, each with a password that is not weak."""
    logins = dashboard_logins(auth, environ)
    problems = Problems()
    for login in logins:
        with problems.check():
            check_password(
                "flower_auth_users_env", login.password, login.user, f"${auth.users_env}"
            )
    problems.raise_any()
    return logins
