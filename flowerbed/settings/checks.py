"""The checks every section shares: each takes (key, value) and returns the normalised value
or raises SettingsError naming the key, the problem and the fix."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import field, fields
from pathlib import PurePosixPath
from typing import Any

from ..validation import (
    SettingsError,
    directory_root_problem,
    has_credentials,
    looks_like_a_secret,
    shown,
    split_url,
    unit_name_problem,
)

DAY = 86400  # seconds
# What RFC 3986 lets a URL hold: unreserved, reserved and percent-encoded characters. A URL
# lands inside quotes (apt.conf), in ini files (pip.conf) and in environment files.
URL_CHARACTERS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")


# Checks: each returns the normalised value or raises SettingsError.
Check = Callable[[str, Any], Any]


def expect(key: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    # bool is an int in Python: never let True pass as a number
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        got = type(value).__name__ if key.endswith("_env") else shown(value)
        raise SettingsError(key, f"expected {what}, got {got}", f"set {key} to {what}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def setting(check: Check, doc: str = "") -> Any:
    return field(metadata={"check": check, "doc": doc})


def section_from(section: type, data: Mapping[str, Any]) -> Any:
    """One section (its keys: section.prefix + field name) checked from `data`, for the runs
    that read only their own knobs; the first problem raises, a misspelt key included."""
    checks = {section.prefix + f.name: f.metadata["check"] for f in fields(section)}
    unknown = sorted(key for key in data if key.startswith(section.prefix) and key not in checks)
    if unknown:
        raise SettingsError(unknown[0], "unknown key", f"use one of {sorted(checks)}")
    return section(
        **{key.removeprefix(section.prefix): check(key, data[key]) for key, check in checks.items()}
    )


def boolean() -> Check:
    def check(key: str, value: Any) -> bool:
        expect(key, value, bool, "True or False")
        return value

    return check


def integer(minimum: int = 0, maximum: int = 10**9, optional: bool = False) -> Check:
    """An integer from minimum to maximum: a sensible ceiling catches a unit mix-up (ms/s)."""
    hint = f"an integer from {minimum} to {maximum}" + (" or None" if optional else "")

    def check(key: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        expect(key, value, int, hint)
        if value < minimum:
            raise SettingsError(key, f"{value} is below {minimum}", f"use {hint}")
        if value > maximum:
            raise SettingsError(key, f"{value} is above {maximum}", f"use {hint}")
        return value

    return check


def text(pattern: str = r".*", hint: str = "a string") -> Check:
    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if not re.fullmatch(pattern, value):
            raise SettingsError(key, f"{shown(value)} is not {hint}", f"set {key} to {hint}")
        return value

    return check


def name() -> Check:
    return text(r"[a-z_][a-z0-9_-]{0,31}", "a system user/group name like 'flower'")


def env_name(optional: bool = False) -> Check:
    """The NAME of a variable holding a secret; a value pasted here is never quoted back."""
    hint = "the NAME of an environment variable (e.g. 'FLOWERBED_BROKER_URL'), not its value"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if optional and value == "" or re.fullmatch(r"[A-Z_][A-Z0-9_]*", value):
            return value
        what = "looks like a URL or a secret" if looks_like_a_secret(value) else "is not"
        raise SettingsError(
            key,
            f"{what}, not a variable name (the value is not shown)",
            f"put the value in .env (see .env.example) and set {key} to {hint}",
        )

    return check


def account() -> Check:
    """A user or group name: whether it may be Flower's is decided from the host
    (flowerbed/ownership.py)."""
    return name()


def service_name() -> Check:
    def check(key: str, value: Any) -> str:
        text(r"[a-z][a-z0-9-]{0,30}", "a unit name like 'flower'")(key, value)
        if found := unit_name_problem(value):
            raise SettingsError(key, found, f"use a name of Flower's own, e.g. {key} = 'flower'")
        return value

    return check


def absolute_path(optional: bool = False, inside_roots: bool = False) -> Check:
    """An absolute path of plain characters; `inside_roots`: a directory flowerbed makes
    (root:root 0755), inside /etc, /opt, /srv, /usr/local, /var/lib or /var/opt. Whether it
    may be Flower's is decided from the host (flowerbed/ownership.py)."""

    def check(key: str, value: Any) -> str:
        expect(key, value, str, "an absolute path")
        if optional and value == "":
            return ""
        path = PurePosixPath(value)
        # these paths go into unit files and commands unquoted: plain characters only
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", value) or {".", ".."} & set(value.split("/")):
            raise SettingsError(
                key, f"{shown(value)} is not an absolute path", "use a path like /opt/x"
            )
        if inside_roots and (found := directory_root_problem(str(path))):
            raise SettingsError(key, found, "use a directory of Flower's own, like /opt/flower")
        return str(path)

    return check


def url(schemes: tuple[str, ...], optional: bool = True) -> Check:
    """A URL without credentials: it lands in world-readable config or on a command line."""

    def check(key: str, value: Any) -> str:
        expect(key, value, str, f"a URL ({'/'.join(schemes)})")
        if not value and optional:
            return ""
        example = f"{schemes[0]}://host.example.com:3128"
        if not URL_CHARACTERS.fullmatch(value):
            raise SettingsError(
                key,
                "has characters no URL holds (quotes, spaces, braces, backslashes...; not shown)",
                f"percent-encode them, or use e.g. {example}",
            )
        parts = split_url(key, value, example)
        if parts.scheme not in schemes or not parts.hostname:
            raise SettingsError(
                key, f"{shown(value)} is not a {'/'.join(schemes)} URL", f"use e.g. {example}"
            )
        if has_credentials(parts):
            raise SettingsError(
                key,
                "the URL carries credentials (user:password@ or :password@), which would land in "
                "world-readable config or on a command line (not shown)",
                "use a proxy/mirror that authenticates by source address, without user:password@",
            )
        return value

    return check


def string_list(item: Check) -> Check:
    def check(key: str, value: Any) -> tuple[str, ...]:
        expect(key, value, (list, tuple), "a list")
        return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))

    return check


def env_mapping() -> Check:
    """{"user": "ENV_VAR_WITH_THE_PASSWORD", ...}"""

    def check(key: str, value: Any) -> tuple[tuple[str, str], ...]:
        expect(key, value, dict, "a dict of user name -> environment variable name")
        for user in value:
            # a "user:password" pasted as the user name is not quoted back
            if not isinstance(user, str) or not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", user):
                raise SettingsError(
                    key,
                    "has a user name that is not letters, digits and ._@- (not shown)",
                    f'set {key} = {{"alice": "FLOWERBED_FLOWER_PASSWORD_ALICE"}}',
                )
        return tuple((u, env_name()(f"{key}[{u!r}]", v)) for u, v in value.items())

    return check


def one_of(choices: tuple[str, ...], optional: bool = True) -> Check:
    def check(key: str, value: Any) -> str:
        expect(key, value, str, "a string")
        if value not in choices and not (optional and value == ""):
            raise SettingsError(key, f"{value!r} is not supported", f"use one of {choices}")
        return value

    return check
