"""Several Flowers per host (flower_instances): one entry per Celery app or broker, each its
own unit, socket, state, logins and path under the site, running the main Flower's venv.

    flower_instances = [
        {"name": "billing", "broker_env": "BILLING_BROKER_URL", "path": "billing",
         "logins_env": "BILLING_DASHBOARD_USERS", "max_tasks": 20000},
    ]

Fields: name, broker_env, path, logins_env (required); app, max_tasks,
healthcheck_min_workers (optional). Every problem of every entry is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..validation import Problems, SettingsError, shown
from .checks import env_name, expect, integer, setting, text

if TYPE_CHECKING:
    from . import Settings

NAME = r"[a-z][a-z0-9]{0,19}"
NAME_HINT = "a short name of lower-case letters and digits, starting with a letter ('billing')"
SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
PATH_HINT = "a URL path of plain segments under the site, like 'billing' or 'ops/billing'"
# Flower's own routes (first path segment): an instance there would shadow the main Flower's
FLOWER_ROUTES = (
    "api", "broker", "dashboard", "healthcheck", "login", "logout", "metrics", "monitor",
    "static", "task", "tasks", "worker", "workers",
)  # fmt: skip
REQUIRED = ("name", "broker_env", "path", "logins_env")
OPTIONAL = ("app", "max_tasks", "healthcheck_min_workers")
KEY = "flower_instances"


@dataclass(frozen=True)
class Instance:
    """One more Flower on the host."""

    name: str
    broker_env: str
    path: str
    logins_env: str
    app: str = ""
    max_tasks: int | None = None  # None: flower_max_tasks
    healthcheck_min_workers: int = 0

    @property
    def service(self) -> str:
        return f"flower-{self.name}"

    @property
    def base(self) -> str:
        return f"/{self.path}/"


def entry_key(position: int, entry: Any, field: str = "") -> str:
    label = entry.get("name") if isinstance(entry, dict) else None
    where = f"{KEY}[{label!r}]" if isinstance(label, str) and label else f"{KEY}[{position}]"
    return f"{where}.{field}" if field else where


FIELD_CHECKS = {
    "name": text(NAME, NAME_HINT),
    "broker_env": env_name(),
    "logins_env": env_name(),
    "app": text(r"([\w.]+(:[\w.]+)?)?", "a Celery app like 'proj.celery:app'"),
    "max_tasks": integer(minimum=1, maximum=10_000_000, optional=True),
    "healthcheck_min_workers": integer(maximum=100_000),
}


def instance_path(key: str, value: Any) -> str:
    expect(key, value, str, PATH_HINT)
    path = value.strip("/")
    if not re.fullmatch(rf"{SEGMENT}(/{SEGMENT})*", path) or any(
        part in (".", "..") for part in path.split("/")
    ):
        raise SettingsError(key, f"{shown(value)} is not {PATH_HINT}", f"set {key} to {PATH_HINT}")
    if path.split("/")[0] in FLOWER_ROUTES:
        raise SettingsError(
            key,
            f"{shown(value)} starts with one of Flower's own routes ({', '.join(FLOWER_ROUTES)})",
            "pick a path that is not a Flower route, e.g. the instance's name",
        )
    return path


def one_entry(position: int, entry: Any, problems: Problems) -> Instance | None:
    """An entry as an Instance; its problems (all of them) into `problems`."""
    if not isinstance(entry, dict):
        problems.errors.append(
            SettingsError(
                entry_key(position, entry),
                "is not a dict",
                f"give each entry as a dict with {', '.join(REQUIRED)}",
            )
        )
        return None
    before = len(problems.errors)
    for field in entry:
        if field not in REQUIRED + OPTIONAL:
            problems.errors.append(
                SettingsError(
                    entry_key(position, entry, str(field)),
                    "unknown field",
                    f"use only {', '.join(REQUIRED + OPTIONAL)}",
                )
            )
    values: dict[str, Any] = {}
    for field in REQUIRED + OPTIONAL:
        key = entry_key(position, entry, field)
        if field not in entry:
            if field in REQUIRED:
                problems.errors.append(SettingsError(key, "missing", f"set {field}"))
            continue
        with problems.check():
            check = instance_path if field == "path" else FIELD_CHECKS[field]
            values[field] = check(key, entry[field])
    return Instance(**values) if len(problems.errors) == before else None


def paths_overlap(one: str, other: str) -> bool:
    return one == other or one.startswith(other + "/") or other.startswith(one + "/")


def among_entries(instances: list[Instance]) -> Iterator[SettingsError]:
    """Names, paths and login variables each belong to one entry."""
    for i, one in enumerate(instances):
        for other in instances[:i]:
            key = f"{KEY}[{one.name!r}]"
            if one.name == other.name:
                yield SettingsError(key, "names an instance twice", "give each a name of its own")
            if paths_overlap(one.path, other.path):
                yield SettingsError(
                    f"{key}.path",
                    f"{one.path!r} is the same as or nested with {other.name!r}'s {other.path!r}",
                    "give each instance a path of its own, neither inside the other",
                )
            if one.logins_env == other.logins_env:
                yield SettingsError(
                    f"{key}.logins_env",
                    f"${one.logins_env} is also {other.name!r}'s login variable",
                    "give each Flower logins of its own (a variable each)",
                )


def instance_list(key: str, value: Any) -> tuple[Instance, ...]:
    expect(key, value, (list, tuple), "a list of dicts (name, broker_env, path, logins_env)")
    problems, instances = Problems(), []
    for position, entry in enumerate(value):
        if instance := one_entry(position, entry, problems):
            instances.append(instance)
    problems.errors.extend(among_entries(instances))
    problems.raise_any()
    return tuple(instances)


@dataclass(frozen=True)
class Instances:
    """More Flowers on the host, beside the main one ([] = only the main one)."""

    instances: tuple[Instance, ...] = setting(
        instance_list, "name, broker_env, path, logins_env; app, max_tasks"
    )

    prefix = "flower_"


def check_instances(s: Settings) -> Iterator[SettingsError]:
    """Rules between the instances and the main Flower's keys."""
    instances = s.instances.instances
    if not instances:
        return
    if s.auth.mode != "basic" or s.options.auth:
        yield SettingsError(
            KEY, "instances need logins at nginx: OAuth is not supported with them",
            "set flower_auth_mode = 'basic' and flower_auth = '', or flower_instances = []",
        )  # fmt: skip
    if s.site.existing_site:
        yield SettingsError(
            KEY, "instances are served from flowerbed's own site only",
            "set flower_existing_site = '' or flower_instances = []",
        )  # fmt: skip
    prefix = s.options.url_prefix
    for instance in instances:
        key = f"{KEY}[{instance.name!r}]"
        if prefix and paths_overlap(instance.path, prefix):
            yield SettingsError(
                f"{key}.path",
                f"{instance.path!r} is the same as or nested with flower_url_prefix {prefix!r}",
                "give the instance a path outside the main Flower's",
            )
        if instance.logins_env == s.auth.users_env:
            yield SettingsError(
                f"{key}.logins_env",
                f"${instance.logins_env} is also the main Flower's flower_auth_users_env",
                "give each Flower logins of its own (a variable each)",
            )
        main_broker, main_logins = s.flower.broker_url_env, s.auth.users_env
        if main_logins == instance.broker_env or main_broker == instance.logins_env:
            yield SettingsError(
                key, "mixes up a broker variable and a login variable", "name each its own"
            )
        if instance.app and not s.flower.app_source:
            yield SettingsError(
                f"{key}.app",
                "an app needs flower_app_source (instances run the main Flower's venv)",
                "set flower_app_source to the package holding the app, or drop the app",
            )
        if instance.service == s.flower.service:
            yield SettingsError(
                f"{key}.name", f"its unit would be the main Flower's ({instance.service})",
                "pick another name",
            )  # fmt: skip
