"""Each instance's inputs (flower_instances, flowerbed.instances): its broker URL and logins from
the operator's environment, checked, and the names and paths it gets from the main Flower's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..settings import BROKER_SCHEMES, Flower, Instance, Settings, SettingsError
from ..validation import Problems, broker_url_problem
from .logins import Login, parse_login
from .secrets import Secret, check_password, read_secret

HTPASSWD_PATTERN = "/etc/nginx/flowerbed-instance-{name}.htpasswd"


@dataclass(frozen=True)
class InstanceInputs:
    """One instance's checked data and secrets."""

    instance: Instance
    broker_url: Secret
    logins: tuple[Login, ...] = field(repr=False)


@dataclass(frozen=True)
class SiteInstance:
    """What the site's templates need of an instance."""

    name: str
    base: str
    socket: str
    htpasswd: str
    proxy_login: str


def instances_dir(flower: Flower) -> str:
    return f"{flower.config_dir}/instances"


def htpasswd_path(name: str) -> str:
    return HTPASSWD_PATTERN.format(name=name)


def instance_flower(flower: Flower, instance: Instance) -> Flower:
    """The main Flower's install (venv, user), with the instance's names, broker and app."""
    return replace(
        flower,
        service=instance.service,
        config_dir=f"{instances_dir(flower)}/{instance.name}",
        app=instance.app,
        healthcheck_min_workers=instance.healthcheck_min_workers,
        broker_url_env=instance.broker_env,
        broker_api_env="",
        basic_auth=(),
        oauth2_secret_env="",
        cookie_secret_env="",
    )


def site_instances(settings: Settings) -> tuple[SiteInstance, ...]:
    result = []
    for instance in settings.instances.instances:
        flower = instance_flower(settings.flower, instance)
        result.append(
            SiteInstance(
                name=instance.name,
                base=instance.base,
                socket=flower.socket,
                htpasswd=htpasswd_path(instance.name),
                proxy_login=flower.proxy_login_nginx,
            )
        )
    return tuple(result)


def instance_inputs(settings: Settings, environ: Mapping[str, str]) -> tuple[InstanceInputs, ...]:
    """Every instance's broker URL and logins, checked; every problem at once, no value shown."""
    problems, result = Problems(), []
    for instance in settings.instances.instances:
        key = f"flower_instances[{instance.name!r}]"
        found = {}
        with problems.check():
            found["broker_url"] = instance_broker(f"{key}.broker_env", instance.broker_env, environ)
        with problems.check():
            found["logins"] = instance_logins(f"{key}.logins_env", instance.logins_env, environ)
        if len(found) == 2:
            result.append(InstanceInputs(instance, **found))
    problems.raise_any()
    return tuple(result)


def instance_broker(key: str, env_name: str, environ: Mapping[str, str]) -> Secret:
    secret = read_secret(key, env_name, environ)
    if found := broker_url_problem(secret.value, BROKER_SCHEMES):
        problem, fix = found
        raise SettingsError(key, f"${env_name} {problem}", fix)
    return secret


def instance_logins(key: str, env_name: str, environ: Mapping[str, str]) -> tuple[Login, ...]:
    """user:password[,user:password] as the main logins (flowerbed/auth.py), under `key`."""
    secret = read_secret(key, env_name, environ)
    problems, logins = Problems(), []
    for position, entry in enumerate(secret.value.split(","), start=1):
        try:
            login = parse_login(entry, f"entry {position} of ${env_name}")
            check_password(key, login.password, login.user, f"${env_name}")
            logins.append(login)
        except SettingsError as error:
            problems.errors.append(SettingsError(key, *_problem_and_fix(error)))
    users = [login.user for login in logins]
    if len(set(users)) != len(users):
        problems.errors.append(SettingsError(key, f"${env_name} names a user twice", "drop one"))
    problems.raise_any()
    return tuple(logins)


def _problem_and_fix(error: SettingsError) -> tuple[str, str]:
    """An auth error's problem and fix, to report them under the instance's key."""
    text = str(error).removeprefix(f"{error.key}: ")
    problem, _, fix = text.partition(". Fix: ")
    return problem, fix
