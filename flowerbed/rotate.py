"""Secret rotation (rotate.py): dashboard logins, the broker password or the OAuth cookie secret.

Dashboard logins (the default, `--data rotate=logins`):
  1. A new password for each rotated user (`--data rotate_users='["alice"]'`, default: every user
     in $flower_auth_users_env): $FLOWERBED_NEW_DASHBOARD_USERS (user:password,...) or generated.
  2. Before any host changes, the env file the logins came from (.env, $FLOWERBED_ENV_FILE) gets
     the new value, and the old one as <VARIABLE>_PREVIOUS: whatever happens next, the operator
     holds the password each host accepts.
  3. Each host gets the new bcrypt hashes (atomically replaced; nginx reads the file at every
     request, so nothing is reloaded or restarted).
  4. From the operator's machine, over HTTPS: the new password gets in, the old one is refused.
  5. When every host that uses the variable confirmed, <VARIABLE>_PREVIOUS is removed. Otherwise
     it stays, the report says what each host accepts, and running rotate.py again finishes the
     job.

Targets and --limit: every host of the inventory that uses the rotated variable is a target,
whatever --limit says. A run limited to some of them rotates those, keeps the old value as
<VARIABLE>_PREVIOUS (what the others still accept) and names the others as NOT rotated; a run
without --limit finishes the rotation. Hosts inside the limit that use another variable are
refused up front (one variable per run).

The env file is written under an exclusive lock (fcntl.flock on <file>.lock beside it, held
for the whole run, so two rotate.py runs never interleave) and atomically (a 0600 copy renamed
over it); the write checks that the file still holds what the run planned from
(flowerbed.env_file).

The broker password (`--data rotate=broker`): the new broker URL comes from
$FLOWERBED_NEW_BROKER_URL (the broker must already accept it: add the new password at the broker
first, remove the old one after). Same env-file bookkeeping; the hosts then restart Flower one at
a time, each healthy and seeing the workers before the next; a failing host stops the roll.

The OAuth cookie secret (`--data rotate=cookie`): a new operator's secret from
$FLOWERBED_NEW_COOKIE_SECRET, or generated. Each host signs sessions with its own key derived
from it (flowerbed.inputs.secrets.host_cookie_secret); the hosts restart Flower one at a time
like the broker roll, and every session signed with the old key ends (users sign in again).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dotenv import dotenv_values
from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, operation

from .env_file import env_file_holding, hold_env_file, update_env_file
from .flower import env_text
from .healthcheck import log_unhealthy
from .inputs.logins import Login, parse_login
from .inputs.secrets import FlowerSecrets, broker_url, read_secret
from .probe import https_get
from .secrets import secret_file
from .settings import Settings, SettingsError
from .shell import command
from .validation import weak_cookie_secret_problem

ROTATE_KINDS = ("logins", "broker", "cookie")
NEW_LOGINS_VARIABLE = "FLOWERBED_NEW_DASHBOARD_USERS"
NEW_BROKER_VARIABLE = "FLOWERBED_NEW_BROKER_URL"
NEW_COOKIE_VARIABLE = "FLOWERBED_NEW_COOKIE_SECRET"
PREVIOUS = "_PREVIOUS"
PASSWORD_BYTES = 24  # token_urlsafe: 32 characters, 192 bits
COOKIE_SECRET_BYTES = 48  # token_urlsafe: 64 characters, 384 bits
CONFIRM_PATH = "api/task/types"  # any path behind the login; cheap for Flower


# --- what a run rotates -------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    """One run's rotation, decided once on the operator's machine before any host is touched."""

    kind: str  # "logins", "broker" or "cookie"
    env_file: Path
    variable: str
    old: str = field(repr=False)  # the value hosts accept now
    new: str = field(repr=False)  # the value they will accept
    users: tuple[str, ...]  # the rotated logins ("logins" only)
    resumed: bool  # a rotation an earlier run left unfinished
    targets: tuple[str, ...]  # the hosts that must confirm before the old value is dropped
    outside: tuple[str, ...] = ()  # targets this run does not reach (outside --limit)
    instance: str = ""  # the instance (flower_instances) whose logins rotate ('' = the main ones)

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


def variable_used(kind: str, data: Mapping) -> str:
    """The variable a host's data has it use for `kind` ('' = none): read from the raw data
    (group_data/all.py holds every default), so a host outside --limit counts too. With
    `rotate_instance`, that instance's logins variable."""
    if kind == "logins" and data.get("rotate_instance"):
        entries = data.get("flower_instances") or []
        named = [
            e for e in entries if isinstance(e, dict) and e.get("name") == data["rotate_instance"]
        ]
        return str(named[0].get("logins_env", "")) if named else ""
    if kind == "logins":
        basic = data.get("flower_auth_mode", "basic") == "basic"
        return data.get("flower_auth_users_env", "") if basic else ""
    if kind == "broker":
        return data.get("flower_broker_url_env", "")
    return data.get("flower_cookie_secret_env", "")


def rotation_targets(
    kind: str, variable: str, fleet: Mapping[str, Mapping], in_run: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(targets, outside): every host of the inventory (`fleet`: name -> data) that uses
    `variable`, and those of them this run does not reach. A host in the run that uses another
    variable would get values that are not its own: refused."""
    in_run = set(in_run)
    targets = tuple(name for name, data in fleet.items() if variable_used(kind, data) == variable)
    strangers = sorted(name for name in in_run if name in fleet and name not in targets)
    if strangers:
        raise SettingsError(
            "rotate",
            f"hosts {', '.join(strangers)} in this run do not use ${variable} for {kind}",
            "rotate one variable per run: --limit the hosts that use it",
        )
    return targets, tuple(name for name in targets if name not in in_run)


def plan_rotation(
    settings: Settings,
    data: Mapping,
    environ: Mapping[str, str],
    fleet: Mapping[str, Mapping],
    in_run: Iterable[str],
) -> Rotation:
    kind = rotation_kind(data)
    variable = {
        "logins": settings.auth.users_env,
        "broker": settings.flower.broker_url_env,
        "cookie": settings.flower.cookie_secret_env,
    }[kind]
    instance = rotated_instance(settings, data, kind)
    if instance:
        variable = instance.logins_env
    if kind == "logins" and settings.auth.mode != "basic":
        raise SettingsError(
            "flower_auth_mode",
            "is not 'basic': there are no nginx logins to rotate",
            "rotate the OAuth cookie secret with --data rotate=cookie, the client secret at "
            "the provider",
        )
    if kind == "cookie" and not variable:
        raise SettingsError(
            "flower_cookie_secret_env",
            "is unset: Flower makes a new cookie secret at every start, there is none to rotate",
            "name the variable that holds it (see .env.example)",
        )
    targets, outside = rotation_targets(kind, variable, fleet, in_run)
    path = env_file_holding(variable, environ)
    values = dotenv_values(path)
    current, previous = values[variable], values.get(variable + PREVIOUS)
    common = dict(kind=kind, env_file=path, variable=variable, targets=targets, outside=outside)
    common["instance"] = instance.name if instance else ""
    if previous:  # an earlier run wrote the new value and has not seen every host confirm it
        users = changed_users(previous, current) if kind == "logins" else ()
        return Rotation(old=previous, new=current, users=users, resumed=True, **common)
    if kind == "broker":
        new = new_broker_url(settings, environ)
        return Rotation(old=current, new=new, users=(), resumed=False, **common)
    if kind == "cookie":
        new = new_cookie_secret(current, environ)
        return Rotation(old=current, new=new, users=(), resumed=False, **common)
    new, users = new_logins(
        current, data.get("rotate_users") or [], environ.get(NEW_LOGINS_VARIABLE, ""), variable
    )
    return Rotation(old=current, new=new, users=users, resumed=False, **common)


def rotated_instance(settings: Settings, data: Mapping, kind: str):
    """The instance `--data rotate_instance=NAME` names (its logins only), or None."""
    name = data.get("rotate_instance")
    if not name:
        return None
    if kind != "logins":
        raise SettingsError(
            "rotate_instance", "rotates an instance's logins only", "drop --data rotate=..."
        )
    found = [i for i in settings.instances.instances if i.name == name]
    if not found:
        names = [i.name for i in settings.instances.instances]
        raise SettingsError(
            "rotate_instance", f"{name!r} is not in flower_instances", f"choose from {names}"
        )
    return found[0]


def new_broker_url(settings: Settings, environ: Mapping[str, str]) -> str:
    if not environ.get(NEW_BROKER_VARIABLE):
        raise SettingsError(
            NEW_BROKER_VARIABLE,
            "is unset",
            "set it to the new broker URL, after adding its password at the broker",
        )
    return broker_url(replace(settings.flower, broker_url_env=NEW_BROKER_VARIABLE), environ).value


def new_cookie_secret(current: str, environ: Mapping[str, str]) -> str:
    """The operator's new cookie secret: $FLOWERBED_NEW_COOKIE_SECRET (checked as a cookie
    secret is) or 64 random characters."""
    if not environ.get(NEW_COOKIE_VARIABLE):
        return secrets.token_urlsafe(COOKIE_SECRET_BYTES)
    given = read_secret(NEW_COOKIE_VARIABLE, NEW_COOKIE_VARIABLE, environ).value
    if problem := weak_cookie_secret_problem(given):
        raise SettingsError(
            NEW_COOKIE_VARIABLE, problem, "use 32 random bytes or more: `openssl rand -base64 32`"
        )
    if given == current:
        raise SettingsError(
            NEW_COOKIE_VARIABLE, "is the cookie secret in use now", "choose a new one"
        )
    return given


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
            # every host of the inventory counts, --limit or not: those outside the limit are
            # targets this run cannot confirm; hosts that could not even be connected to are
            # in the run and never confirm
            fleet = {h.name: h.data.dict() for h in inventory}
            in_run = [h.name for h in inventory if state.is_host_in_limit(h)]
            rotation = plan_rotation(settings, host_.data.dict(), os.environ, fleet, in_run)
            hold_env_file(rotation.env_file)  # until this run ends: no other rotate.py
        except SettingsError as error:
            raise InvalidDeploy(f"rotate.py: {error}") from error
        if rotation.outside:
            logger.warning(
                f"--> {len(rotation.outside)} host(s) outside --limit use "
                f"${rotation.variable}: {', '.join(rotation.outside)}. They will NOT be "
                f"rotated by this run; {rotation.env_file} keeps the value they accept as "
                f"${rotation.previous} until a run without --limit finishes the rotation"
            )
        os.environ[rotation.variable] = rotation.new
        _rotation["plan"] = rotation
    checked(host_, inventory)
    return _rotation["plan"]


# --- the run's operations -----------------------------------------------------------------


_progress: dict = {
    "recorded": False,
    "record_error": None,
    "reported": False,
    "confirmed": {},
    "stopped_at": None,
}


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
    """Fails every host (so none changes) when the env file changed since the plan read it."""
    if not _progress["recorded"]:
        _progress["recorded"] = True
        try:
            update_env_file(
                rotation.env_file,
                {rotation.variable: rotation.new, rotation.previous: rotation.old},
                expect={rotation.variable: rotation.old, rotation.previous: None},
            )
        except SettingsError as error:
            _progress["record_error"] = str(error)
            logger.error(f"--> rotate.py: {error}")
        else:
            logger.info(
                f"--> Wrote the new ${rotation.variable} to {rotation.env_file}; the old one "
                f"stays as ${rotation.previous} until every host confirms"
            )
    if _progress["record_error"]:
        host.log_styled(
            "not rotated: the env file could not be written", fg="red", log_func=logger.error
        )
        return False
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


WHAT = {"logins": "", "broker": "broker URL", "cookie": "cookie secret"}


def report_lines(rotation: Rotation, confirmed: Mapping[str, tuple]) -> tuple[list[str], bool]:
    """The per-host lines ("  name: confirmed (...)", "  name: NOT ..."), and whether every
    target confirmed (only then may the old value leave the env file)."""
    lines = []
    for name in rotation.targets:
        if name in rotation.outside:
            lines.append(
                f"    {name}: NOT rotated (outside --limit: this run did not reach it; it "
                f"still accepts the value kept as ${rotation.previous})"
            )
            continue
        ok, verdicts = confirmed.get(name, (False, {}))
        if rotation.kind == "logins":
            detail = "; ".join(f"{user}: {VERDICTS.get(v, v)}" for user, v in verdicts.items())
        else:
            healthy = f"healthy on the new {WHAT[rotation.kind]}"
            detail = healthy if ok else verdicts.get("problem", "not reached")
        lines.append(
            f"    {name}: {'confirmed' if ok else 'NOT confirmed'}"
            + (f" ({detail})" if detail else "")
        )
    done = all(
        name not in rotation.outside and confirmed.get(name, (False,))[0]
        for name in rotation.targets
    )
    return lines, done


def report(rotation: Rotation) -> None:
    what = ", ".join(rotation.users) or WHAT[rotation.kind]
    logger.info(f"--> Rotation of ${rotation.variable} ({what}):")
    lines, done = report_lines(rotation, _progress["confirmed"])
    for line in lines:
        logger.info(line) if ": confirmed" in line else logger.error(line)
    if done:
        update_env_file(rotation.env_file, {rotation.previous: None})
        logger.info(
            f"--> Every host confirmed: ${rotation.previous} removed from {rotation.env_file}"
        )
    elif rotation.outside:
        logger.warning(
            f"--> Rotation pending: {', '.join(rotation.outside)} (outside --limit) still use "
            f"the old value: {rotation.env_file} keeps it as ${rotation.previous}; run "
            "rotate.py without --limit to finish (hosts already rotated are only checked)"
        )
    else:
        logger.error(
            f"--> Not every host confirmed: {rotation.env_file} keeps the old value as "
            f"${rotation.previous}; run rotate.py again to finish"
        )


# --- the broker: one host at a time -------------------------------------------------------


@operation(is_idempotent=False)
def broker_rolled(
    settings: Settings,
    flower_secrets: FlowerSecrets,
    healthcheck: tuple[str, ...],
    what: str = "broker URL",
):
    """Flower restarted on the new `what` (broker URL, cookie secret) and healthy (seeing
    workers) before the next host.

    Run with _serial=True: after a host fails, the rest are left untouched. The operation
    itself never fails (so the report runs), the report fails every host not rolled.
    """
    flower = settings.flower
    if _progress["stopped_at"]:
        yield FunctionCommand(_stopped, (_progress["stopped_at"], what), {})
        return
    changes = list(secret_file._inner(flower.env_file, env_text(flower, flower_secrets)))
    if changes:
        yield from changes
        yield command("systemctl", "restart", flower.unit_name)
    if state.is_executing:
        yield FunctionCommand(_healthy_or_stop, (healthcheck, what), {})


def _stopped(state, host, where: str, what: str = "broker URL") -> bool:
    host.log_styled(
        f"the roll stopped at {where}: this host was left on the old {what}",
        fg="red",
        log_func=logger.error,
    )
    _progress["confirmed"][host.name] = (
        False,
        {"problem": f"not rolled: the roll stopped at {where}"},
    )
    return True  # the report fails this host: it must run


def _healthy_or_stop(state, host, healthcheck: tuple[str, ...], what: str = "broker URL") -> bool:
    import json

    ok, output = host.run_shell_command(command(*healthcheck), print_output=False)
    report_ = json.loads("\n".join(output.stdout_lines)) if ok else {"ok": False}
    if report_.get("ok"):
        _progress["confirmed"][host.name] = (True, {})
        host.log_styled(
            f"Flower is healthy on the new {what} and sees {len(report_['workers'])} worker(s)",
            fg="green",
            log_func=logger.info,
        )
        return True
    problem = report_.get("problem", "the health check did not run")
    _progress["stopped_at"] = host.name
    _progress["confirmed"][host.name] = (False, {"problem": f"the roll stopped here: {problem}"})
    log_unhealthy(
        host, f"Flower is unhealthy on the new {what}: {problem}; the roll stops here", report_
    )
    return True  # the report (after the roll) fails this host
