"""Password rotation (rotate.py): dashboard logins, or the broker password, with no downtime.

Dashboard logins (the default, `--data rotate=logins`):
  1. A new password for each rotated user (`--data rotate_users='["alice"]'`, default: every user
     in $flower_auth_users_env): $FLOWERBED_NEW_DASHBOARD_USERS (user:password,...) or generated.
  2. Before any host changes, the env file the logins came from (.env, $FLOWERBED_ENV_FILE) gets
     the new value, and the old one as <VARIABLE>_PREVIOUS: whatever happens next, the operator
     holds the password each host accepts.
  3. Each host gets the new bcrypt hashes (atomically replaced; nginx reads the file at every
     request, so nothing is reloaded or restarted).
  4. From the operator's machine, over HTTPS: the new password gets in, the old one is refused.
  5. When every targeted host confirmed, <VARIABLE>_PREVIOUS is removed. Otherwise it stays, the
     report says what each host accepts, and running rotate.py again finishes the job.

The broker password (`--data rotate=broker`): the new broker URL comes from
$FLOWERBED_NEW_BROKER_URL (the broker must already accept it: add the new password at the broker
first, remove the old one after). Same env-file bookkeeping; the hosts then restart Flower one at
a time, each healthy and seeing the workers before the next; a failing host stops the roll.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dotenv import dotenv_values, set_key, unset_key
from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, operation

from .auth import Login, parse_login
from .flower import env_text
from .probe import https_get
from .secrets import ENV_FILE_VARIABLE, FlowerSecrets, broker_url, secret_file
from .settings import Settings, SettingsError
from .shell import command
from .verify import log_unhealthy

ROTATE_KINDS = ("logins", "broker")
NEW_LOGINS_VARIABLE = "FLOWERBED_NEW_DASHBOARD_USERS"
NEW_BROKER_VARIABLE = "FLOWERBED_NEW_BROKER_URL"
PREVIOUS = "_PREVIOUS"
PASSWORD_BYTES = 24  # token_urlsafe: 32 characters, 192 bits
CONFIRM_PATH = "api/task/types"  # any path behind the login; cheap for Flower
UNQUOTED = re.compile(r"[A-Za-z0-9_.:,@/+=%-]*")  # values the lab's simple readers parse too


# --- the operator's env file --------------------------------------------------------------


def env_file_holding(variable: str, environ: Mapping[str, str]) -> Path:
    """The env file `variable` comes from (checked before that file is loaded)."""
    if variable in environ:
        raise SettingsError(
            variable,
            "is set in the environment, so rotate.py cannot write the new value where it came from",
            f"unset it and keep it in .env or in the file ${ENV_FILE_VARIABLE} names",
        )
    named = environ.get(ENV_FILE_VARIABLE)
    path = Path(named) if named else Path.cwd() / ".env"
    if not path.is_file():
        raise SettingsError(
            ENV_FILE_VARIABLE, f"{path} does not exist", "point it at the file holding your secrets"
        )
    if not dotenv_values(path).get(variable):
        raise SettingsError(variable, f"is not set in {path}", "add it (see .env.example)")
    return path


def update_env_file(path: Path, values: Mapping[str, str | None]) -> None:
    """Set (None: remove) keys: written to a 0600 copy through python-dotenv, then renamed."""
    fd, staging = tempfile.mkstemp(prefix=".flowerbed-", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as copy:
            copy.write(path.read_text())
        for key, value in values.items():
            if value is None:
                if key in dotenv_values(staging):
                    unset_key(staging, key)
            else:
                quote = "never" if UNQUOTED.fullmatch(value) else "always"
                set_key(staging, key, value, quote_mode=quote)
        os.chmod(staging, 0o600)
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)


# --- what a run rotates -------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    """One run's rotation, decided once on the operator's machine before any host is touched."""

    kind: str  # "logins" or "broker"
    env_file: Path
    variable: str
    old: str = field(repr=False)  # the value hosts accept now
    new: str = field(repr=False)  # the value they will accept
    users: tuple[str, ...]  # the rotated logins ("logins" only)
    resumed: bool  # a rotation an earlier run left unfinished
    targets: tuple[str, ...]  # the hosts that must confirm before the old value is dropped

    @property
    def previous(self) -> str:
        return self.variable + PREVIOUS


def rotation_kind(data: Mapping) -> str:
    kind = data.get("rotate", "logins")
    if kind not in ROTATE_KINDS:
        raise SettingsError(
            "rotate", f"{kind!r} is not something rotate.py rotates", f"use one of {ROTATE_KINDS}"
        )
    return kind


def plan_rotation(
    settings: Settings, data: Mapping, environ: Mapping[str, str], targets
) -> Rotation:
    kind = rotation_kind(data)
    variable = settings.auth.users_env if kind == "logins" else settings.flower.broker_url_env
    if kind == "logins" and settings.auth.mode != "basic":
        raise SettingsError(
            "flower_auth_mode",
            "is not 'basic': there are no nginx logins to rotate",
            "rotate Flower's OAuth secret at the provider",
        )
    path = env_file_holding(variable, environ)
    values = dotenv_values(path)
    current, previous = values[variable], values.get(variable + PREVIOUS)
    common = dict(kind=kind, env_file=path, variable=variable, targets=tuple(targets))
    if previous:  # an earlier run wrote the new value and has not seen every host confirm it
        users = changed_users(previous, current) if kind == "logins" else ()
        return Rotation(old=previous, new=current, users=users, resumed=True, **common)
    if kind == "broker":
        new = new_broker_url(settings, environ)
        return Rotation(old=current, new=new, users=(), resumed=False, **common)
    new, users = new_logins(
        current, data.get("rotate_users") or [], environ.get(NEW_LOGINS_VARIABLE, ""), variable
    )
    return Rotation(old=current, new=new, users=users, resumed=False, **common)


def new_broker_url(settings: Settings, environ: Mapping[str, str]) -> str:
    if not environ.get(NEW_BROKER_VARIABLE):
        raise SettingsError(
            NEW_BROKER_VARIABLE,
            "is unset",
            "set it to the new broker URL, after adding its password at the broker",
        )
    return broker_url(replace(settings.flower, broker_url_env=NEW_BROKER_VARIABLE), environ).value


def new_logins(
    current: str, chosen: list, given: str, variable: str
) -> tuple[str, tuple[str, ...]]:
    """The new value of the logins variable, and the users whose password changes."""
    logins = parse_logins(current, variable)
    names = [login.user for login in logins]
    if not isinstance(chosen, list) or not all(isinstance(user, str) for user in chosen):
        raise SettingsError(
            "rotate_users",
            "is not a list of user names",
            "use e.g. --data rotate_users='[\"alice\"]'",
        )
    unknown = [user for user in chosen if user not in names]
    if unknown:
        raise SettingsError(
            "rotate_users", f"{unknown} are not users in ${variable}", f"choose from {names}"
        )
    users = tuple(chosen) or tuple(names)
    passwords = (
        {login.user: login.password for login in parse_logins(given, NEW_LOGINS_VARIABLE)}
        if given
        else {}
    )
    strangers = sorted(set(passwords) - set(users))
    if strangers:
        raise SettingsError(
            NEW_LOGINS_VARIABLE,
            f"names {strangers}, which this run does not rotate",
            "name only rotated users",
        )
    rotated = [
        Login(login.user, passwords.get(login.user) or secrets.token_urlsafe(PASSWORD_BYTES))
        if login.user in users
        else login
        for login in logins
    ]
    if any(
        old.password == new.password
        for old, new in zip(logins, rotated, strict=True)
        if old.user in users
    ):
        raise SettingsError(
            NEW_LOGINS_VARIABLE, "gives a user the password it has now", "choose a new password"
        )
    return ",".join(f"{login.user}:{login.password}" for login in rotated), users


def parse_logins(value: str, variable: str) -> tuple[Login, ...]:
    return tuple(
        parse_login(entry, f"entry {n} of ${variable}")
        for n, entry in enumerate(value.split(","), start=1)
    )


def changed_users(old: str, new: str) -> tuple[str, ...]:
    before = {login.user: login.password for login in parse_logins(old, "previous logins")}
    return tuple(
        login.user
        for login in parse_logins(new, "logins")
        if before.get(login.user) != login.password
    )


def logins_of(value: str) -> dict[str, str]:
    return {login.user: login.password for login in parse_logins(value, "logins")}


_rotation: dict[str, Rotation] = {}


def prepared_rotation(host_, inventory, checked) -> Rotation:
    """Decide the rotation once (before the first host's checks), then put the new value in
    the environment, so the deploy's own checks and operations use it."""
    if "plan" not in _rotation:
        from .preflight import InvalidDeploy
        from .settings import load_settings

        try:
            settings = load_settings(host_.data.dict())
            # hosts that could not even be connected to are targets that never confirm
            reached = set(inventory.get_active_hosts()) | set(state.failed_hosts)
            targets = sorted(h.name for h in reached)
            rotation = plan_rotation(settings, host_.data.dict(), os.environ, targets)
        except SettingsError as error:
            raise InvalidDeploy(f"rotate.py: {error}") from error
        os.environ[rotation.variable] = rotation.new
        _rotation["plan"] = rotation
    checked(host_, inventory)
    return _rotation["plan"]


# --- the run's operations -----------------------------------------------------------------


_progress: dict = {"recorded": False, "reported": False, "confirmed": {}, "stopped_at": None}


@operation(is_idempotent=False)
def new_value_recorded(rotation: Rotation):
    """The new value is in the env file, the old one beside it, before any host changes."""
    if rotation.resumed:
        host.noop(f"{rotation.env_file} already holds the new value and the previous one")
        return
    if not state.is_executing:
        host.log(
            f"Will write the new ${rotation.variable} to {rotation.env_file} "
            f"(keeping the old one as ${rotation.previous})"
        )
        yield FunctionCommand(_noop, (), {})
        return
    yield FunctionCommand(_record_once, (rotation,), {})


def _noop(state, host) -> bool:
    return True


def _record_once(state, host, rotation: Rotation) -> bool:
    if not _progress["recorded"]:
        _progress["recorded"] = True
        update_env_file(
            rotation.env_file, {rotation.variable: rotation.new, rotation.previous: rotation.old}
        )
        logger.info(
            f"--> Wrote the new ${rotation.variable} to {rotation.env_file}; the old one stays "
            f"as ${rotation.previous} until every host confirms"
        )
    return True


@operation(is_idempotent=True)
def logins_confirmed(rotation: Rotation, fqdn: str, base: str, ca_bundle: str):
    """From the operator's machine: the new passwords get in, the old ones are refused."""
    if not state.is_executing:
        host.noop("the logins are checked over HTTPS when the run executes")
        return
    yield FunctionCommand(_confirm_logins, (rotation, fqdn, base, ca_bundle), {})


def _confirm_logins(state, host, rotation: Rotation, fqdn: str, base: str, ca_bundle: str) -> bool:
    old, new = logins_of(rotation.old), logins_of(rotation.new)
    verdicts = {}
    for user in rotation.users:
        probe = {
            which: https_get(fqdn, base + CONFIRM_PATH, ca_bundle=ca_bundle, login=(user, password))
            for which, password in (("new", new[user]), ("old", old.get(user, "")))
        }
        verdicts[user] = accepted(probe["new"].status, probe["old"].status, probe["new"].error)
    confirmed = all(verdict == "new" for verdict in verdicts.values())
    _progress["confirmed"][host.name] = (confirmed, verdicts)
    for user, verdict in verdicts.items():
        text = VERDICTS.get(verdict, verdict)
        host.log_styled(
            f"login {user}: {text}",
            fg="green" if verdict == "new" else "red",
            log_func=logger.info if verdict == "new" else logger.error,
        )
    return True


VERDICTS = {
    "new": "accepts the new password and refuses the old one",
    "old": "still accepts only the OLD password",
}


def accepted(new_status: int, old_status: int, error: str) -> str:
    if new_status == 200 and old_status == 401:
        return "new"
    if old_status == 200 and new_status == 401:
        return "old"
    if not new_status:
        return f"no answer over HTTPS ({error})"
    return f"unexpected answers: new password {new_status}, old password {old_status}"


@operation(is_idempotent=True)
def rotation_finished(rotation: Rotation):
    """The per-host report; the old value leaves the env file once every target confirmed."""
    if not state.is_executing:
        host.noop("the rotation is reported when the run executes")
        return
    yield FunctionCommand(_finish, (rotation,), {})


def _finish(state, host, rotation: Rotation) -> bool:
    if not _progress["reported"]:
        _progress["reported"] = True
        report(rotation)
    return _progress["confirmed"].get(host.name, (False, {}))[0]


def report(rotation: Rotation) -> None:
    confirmed = _progress["confirmed"]
    logger.info(
        f"--> Rotation of ${rotation.variable} ({', '.join(rotation.users) or 'broker URL'}):"
    )
    for name in rotation.targets:
        ok, verdicts = confirmed.get(name, (False, {}))
        if rotation.kind == "logins":
            detail = "; ".join(f"{user}: {VERDICTS.get(v, v)}" for user, v in verdicts.items())
        else:
            detail = "healthy on the new URL" if ok else verdicts.get("problem", "not reached")
        line = f"    {name}: {'confirmed' if ok else 'NOT confirmed'}" + (
            f" ({detail})" if detail else ""
        )
        logger.info(line) if ok else logger.error(line)
    if all(confirmed.get(name, (False,))[0] for name in rotation.targets):
        update_env_file(rotation.env_file, {rotation.previous: None})
        logger.info(
            f"--> Every host confirmed: ${rotation.previous} removed from {rotation.env_file}"
        )
    else:
        logger.error(
            f"--> Not every host confirmed: {rotation.env_file} keeps the old value as "
            f"${rotation.previous}; run rotate.py again to finish"
        )


# --- the broker: one host at a time -------------------------------------------------------


@operation(is_idempotent=False)
def broker_rolled(settings: Settings, flower_secrets: FlowerSecrets, healthcheck: tuple[str, ...]):
    """Flower restarted on the new broker URL and healthy (seeing workers) before the next host.

    Run with _serial=True: after a host fails, the rest are left untouched. The operation
    itself never fails (so the report runs), the report fails every host not rolled.
    """
    flower = settings.flower
    if _progress["stopped_at"]:
        yield FunctionCommand(_stopped, (_progress["stopped_at"],), {})
        return
    changes = list(secret_file._inner(flower.env_file, env_text(flower, flower_secrets)))
    if changes:
        yield from changes
        yield command("systemctl", "restart", flower.unit_name)
    if state.is_executing:
        yield FunctionCommand(_healthy_or_stop, (healthcheck,), {})


def _stopped(state, host, where: str) -> bool:
    host.log_styled(
        f"the roll stopped at {where}: this host was left on the old broker URL",
        fg="red",
        log_func=logger.error,
    )
    _progress["confirmed"][host.name] = (
        False,
        {"problem": f"not rolled: the roll stopped at {where}"},
    )
    return True  # the report fails this host: it must run


def _healthy_or_stop(state, host, healthcheck: tuple[str, ...]) -> bool:
    import json

    ok, output = host.run_shell_command(command(*healthcheck), print_output=False)
    report_ = json.loads("\n".join(output.stdout_lines)) if ok else {"ok": False}
    if report_.get("ok"):
        _progress["confirmed"][host.name] = (True, {})
        host.log_styled(
            f"Flower is healthy on the new broker URL and sees {len(report_['workers'])} worker(s)",
            fg="green",
            log_func=logger.info,
        )
        return True
    problem = report_.get("problem", "the health check did not run")
    _progress["stopped_at"] = host.name
    _progress["confirmed"][host.name] = (False, {"problem": f"the roll stopped here: {problem}"})
    log_unhealthy(
        host, f"Flower is unhealthy on the new broker URL: {problem}; the roll stops here", report_
    )
    return True  # the report (after the roll) fails this host
