"""Flower itself: its user, venv, configuration, secrets and hardened systemd unit.

Access model: Flower runs as the static system user `flower_user` with primary group
`flower_group`. It listens only on a unix socket inside its RuntimeDirectory (/run/<service>,
mode 0750, owned by that user and group). Flower makes the socket itself 0777, so the
directory is the gate: root, Flower, and the members of `flower_group` get in. The only
members flowerbed adds are `flower_socket_clients` (www-data, the reverse proxy's user).
Everything else the group could reach is root-owned or 0700 (state), so membership grants
the socket and nothing more.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations.util import any_changed

from . import facts, memory
from .hooks import HOOK_FILES, KEEPER_FILE, hook_block, hook_path, hook_paths, hook_source
from .hostfiles import RootDirectory, RootFile, changed, root_files
from .inputs.secrets import FlowerSecrets, Secret
from .packages import pip_conf, system_packages
from .proxy_login import env_files, no_proxy_login, proxy_login
from .render import render
from .secrets import checked_secret_file
from .settings import Egress, Flower, FlowerOptions, FlowerRun, OAuthProvider, local_app_dir
from .shell import command
from .units import UnitStates, unit_running, unit_state
from .venv import AppPackage, app_from_source, linked_venv, only_the_venv, venv_key

NOLOGIN = "/usr/sbin/nologin"
# The GECOS comment of a user flowerbed created (and of its group, when it created that too):
# remove.py deletes only accounts carrying it (see created_accounts).
CREATED = "Flower (created by flowerbed)"
CREATED_WITH_GROUP = "Flower (created by flowerbed with its group)"
# Loads the Celery app the way `celery --app=APP` does (the working directory on the path).
# Prints only the error's kind and, for an import, the module's name: an app's own message
# could quote its settings, the broker URL among them.
APP_CHECK = """import sys
from celery.app.utils import find_app
try:
    find_app(sys.argv[1])
except Exception as error:
    name = getattr(error, "name", None)
    module = f" {name}" if isinstance(name, str) and isinstance(error, ImportError) else ""
    sys.exit(f"the Celery app {sys.argv[1]} cannot be loaded: {type(error).__name__}{module}")
"""


@dataclass(frozen=True)
class Installed:
    """The venv Flower runs from, and whether this run built or switched it."""

    key: str
    venv: OperationMeta


@dataclass(frozen=True)
class VenvPlan:
    lock: bytes
    app: AppPackage | None

    @property
    def key(self) -> str:
        return venv_key(self.lock, self.app)


def venv_plan(flower: Flower) -> VenvPlan:
    app = None
    if flower.app_source:
        local = local_app_dir(flower) if flower.app_is_local else None
        app = app_from_source(flower.app_source, local)
    return VenvPlan(lock=flower.lock_file.read_bytes(), app=app)


def required_packages(flower: Flower) -> list[str]:
    # python3-gdbm: Python's dbm falls back to Berkeley DB without it, which leaves a 0-byte
    # temp file when Flower's state save hits a full disk and then blocks every later save
    # (and Flower with it); GNU dbm fails that save cleanly and the next one succeeds
    packages = ["python3-venv", "python3-gdbm"]
    return [*packages, "git"] if flower.app_is_git else packages


# --- rendered files -------------------------------------------------------------------------


def flower_config_values(flower: Flower, options: FlowerOptions) -> list[tuple[str, object]]:
    """Flower's options as the Python values its config file must hold (typed as Flower's)."""
    values: dict[str, object] = {
        "unix_socket": flower.socket,
        "db": f"{flower.state_dir}/{options.db}",
        "url_prefix": options.url_prefix,
        "max_tasks": options.max_tasks,
        "max_workers": options.max_workers,
        "purge_offline_workers": options.purge_offline_workers,
        "persistent": options.persistent,
        "state_save_interval": options.state_save_interval,
        "read_only": options.read_only,
        "natural_time": options.natural_time,
        "tasks_columns": options.tasks_columns,
        "inspect_timeout": float(options.inspect_timeout),  # Flower's option is a float
        "enable_events": options.enable_events,
        "auto_refresh": options.auto_refresh,
        "auth": options.auth,
        "auth_provider": options.auth_provider or None,
        "oauth2_key": options.oauth2_key or None,
        "oauth2_redirect_uri": options.oauth2_redirect_uri or None,
    }
    return [(name, value) for name, value in values.items() if value is not None]


def config_text(flower: Flower, options: FlowerOptions) -> str:
    values = flower_config_values(flower, options)
    return render("flowerconfig.py.j2", values=values, hooks=hooks_block(flower, options))


def memory_ceiling(flower: Flower, options: FlowerOptions) -> memory.Ceiling:
    """The main Flower's ceiling: flower_memory_max, or derived from flower_max_tasks."""
    return memory.ceiling(flower.memory_max, options.max_tasks)


def hooks_block(flower: Flower, options: FlowerOptions) -> str:
    """What flowerconfig.py starts inside Flower (flowerbed/hooks.py): the socket keeper, then
    the memory watchdog."""
    keeper = hook_block(KEEPER_FILE, flower.config_file, path=flower.socket)
    watchdog = memory.config_block(
        memory_ceiling(flower, options), flower.config_file, flower.state_dir, flower.socket,
        flower.stop_timeout_sec,
    )  # fmt: skip
    return keeper + watchdog


def hook_files(flower: Flower) -> list[RootFile]:
    """The modules flowerconfig.py starts, in Flower's config directory."""
    return [RootFile(hook_path(flower.config_dir, f), hook_source(f)) for f in HOOK_FILES]


def exec_start(flower: Flower) -> list[str]:
    """Celery's options before `flower`, Flower's in its config file; no secret anywhere."""
    app = [f"--app={flower.app}"] if flower.app else []
    return [f"{flower.venv}/bin/celery", *app, "flower", f"--conf={flower.config_file}"]


def unit_text(
    flower: Flower,
    environment: list[tuple[str, str]] | None = None,
    auth_mode: str = "basic",
    ceiling: memory.Ceiling | None = None,
) -> str:
    """The unit; `environment` = what the OAuth provider's handler reads (not secret); with
    logins at nginx, Flower also reads its proxy login (flowerbed/proxy_login.py); `ceiling`:
    its MemoryHigh/MemoryMax (flowerbed/memory.py)."""
    return render(
        "flower.service.j2",
        flower=flower,
        env_files=env_files(flower, auth_mode),
        exec_start=" ".join(exec_start(flower)),
        environment=[unit_quote(f"{name}={value}") for name, value in environment or []],
        memory=memory.unit_lines(ceiling) if ceiling else [],
    )


def unit_quote(assignment: str) -> str:
    """One Environment= assignment, quoted for a unit file (where % starts a specifier)."""
    if any(c in assignment for c in "\n\r"):
        raise ValueError("a unit's Environment= value cannot span lines")
    escaped = assignment.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def env_text(flower: Flower, secrets: FlowerSecrets) -> Secret:
    text = render("flower.env.j2", flower=flower, secrets=secrets)
    return Secret(flower.env_file, text)


# --- deploys --------------------------------------------------------------------------------


@deploy("Install Flower")
def install_flower(flower: Flower, egress: Egress) -> Installed:
    """Flower's user and group, and a complete venv the service's link points at."""
    system_packages(required_packages(flower))
    flower_accounts(flower)
    plan = venv_plan(flower)
    venv = linked_venv(
        name=f"Flower {flower.version} venv from its hash-pinned lock, linked from {flower.venv}",
        venvs_dir=flower.venvs_dir,
        key=plan.key,
        link=flower.venv,
        lock=plan.lock,
        pip_conf=pip_conf(egress),
        app=plan.app,
        proxy=egress.egress_proxy,
    )
    return Installed(key=plan.key, venv=venv)


# --- the user and group ---------------------------------------------------------------------


class Accounts(FactBase):
    """`getent` lines: {"passwd": {name: fields}, "group": {name: fields}} for these names."""

    def command(self, users: tuple[str, ...], groups: tuple[str, ...]) -> StringCommand:
        return StringCommand(
            command("getent", "passwd", *users),
            ";",
            command("getent", "group", *groups),
            ";",
            "true",
        )

    @staticmethod
    def default() -> dict:
        return {"passwd": {}, "group": {}}

    def process(self, output: list[str]) -> dict:
        found: dict = {"passwd": {}, "group": {}}
        for line in output:
            fields = line.split(":")
            kind = "passwd" if len(fields) == 7 else "group" if len(fields) == 4 else None
            if kind:
                found[kind][fields[0]] = fields
        return found


def flower_accounts(flower: Flower) -> OperationMeta:
    facts.expect(Accounts, users=(flower.user, *flower.socket_clients), groups=(flower.group,))
    return accounts(
        name=f"Flower's system user and group ({', '.join(flower.socket_clients)} in it)",
        user=flower.user,
        group=flower.group,
        home=flower.state_dir,
        clients=flower.socket_clients,
    )


@operation()
def accounts(user: str, group: str, home: str, clients: tuple[str, ...]):
    """A static system user with its own group; the group admits `clients` (the socket's)."""
    found = facts.ask(Accounts, users=(user, *clients), groups=(group,))
    group_entry = found["group"].get(group)
    if not group_entry:
        yield command("groupadd", "--system", group)
    passwd = found["passwd"].get(user)
    wanted = {"--gid": group, "--home": home, "--shell": NOLOGIN}
    if not passwd:
        comment = CREATED if group_entry else CREATED_WITH_GROUP
        yield command(
            "useradd", "--system", "--no-create-home", "--gid", group, "--home-dir", home,
            "--shell", NOLOGIN, "--comment", comment, user,
        )  # fmt: skip
    elif not group_entry or (passwd[3], passwd[5], passwd[6]) != (group_entry[2], home, NOLOGIN):
        yield command("usermod", *(part for item in wanted.items() for part in item), user)
    members = group_entry[3].split(",") if group_entry else []
    for client in clients:
        if client not in members:
            yield command("usermod", "--append", "--groups", group, client)


def created_accounts(found: dict, user: str, group: str) -> tuple[str, ...]:
    """Of `user` and `group` (an Accounts fact), those flowerbed created: marked in the user's
    GECOS comment by `accounts` (a user made before that record, or by hand, is kept)."""
    passwd = found["passwd"].get(user)
    comment = passwd[4] if passwd else ""
    if comment == CREATED_WITH_GROUP and group in found["group"]:
        return (user, group)
    return (user,) if comment in (CREATED, CREATED_WITH_GROUP) else ()


# --- the service ----------------------------------------------------------------------------


@deploy("Flower service")
def flower_service(
    run: FlowerRun, oauth_provider: OAuthProvider, secrets: FlowerSecrets, installed: Installed
):
    """Flower runs the installed venv with the current config; restarted only on change.
    Its memory ceiling: flower_memory_max, else derived from flower_max_tasks."""
    flower, options, auth_mode = run.flower, run.options, run.auth.mode
    environment = oauth_provider.environment(options.auth_provider)
    unit = unit_text(flower, environment, auth_mode, memory_ceiling(flower, options))
    root_files(
        "Flower's options (flowerconfig.py), its socket keeper and memory watchdog, hardened "
        "unit and directories",
        [
            RootDirectory(flower.config_dir),
            RootFile(flower.config_file, config_text(flower, options)),
            *hook_files(flower),
            RootFile(flower.unit_file, unit),
        ],  # flower_app_workdir is only read: never made or chowned (flowerbed/ownership.py)
    )
    env = checked_secret_file(
        name="Flower's secrets (root-only environment file)",
        path=flower.env_file,
        content=env_text(flower, secrets),
    )
    login = proxy_login(flower) if auth_mode == "basic" else no_proxy_login(flower)
    check = app_check(flower, auth_mode)
    return restart_on_change(flower, env, installed.venv, login, app_check=check)


def app_check(flower: Flower, auth_mode: str) -> tuple[str, ...]:
    """A command that loads the Celery app (flower_app) from the venv Flower will run, as its
    unit would: its user, environment files and working directory. Empty in app-less mode."""
    if not flower.app:
        return ()
    return (
        "systemd-run", "--wait", "--pipe", "--quiet", "--collect",
        f"--uid={flower.user}", f"--gid={flower.group}",
        *(f"--property=EnvironmentFile=-{path}" for path in env_files(flower, auth_mode)),
        f"--property=WorkingDirectory=-{flower.workdir}",
        f"{flower.venv}/bin/python", "-c", APP_CHECK, flower.app,
    )  # fmt: skip


def restart_on_change(
    flower: Flower, *inputs: OperationMeta, app_check: tuple[str, ...] = ()
) -> OperationMeta:
    """daemon-reload only for a new unit; one restart for any change; enabled and running.
    `app_check` runs first: an app that cannot be loaded fails the host before the restart,
    so a running Flower keeps serving.

    A run killed after writing an input but before the restart leaves the files right and the
    service stale: the next run sees no change, so the host itself is asked (StaleService)."""
    stale = stale_check(flower)
    unit_changed = changed(flower.unit_file)
    inputs_changed = any_changed(*inputs)
    config_changed = changed(flower.unit_file, flower.config_file, *hook_paths(flower.config_dir))
    facts.expect(UnitStates, units=(flower.unit_name,))
    restart = restarted(
        name="Restart Flower (unit, environment, config or venv changed)",
        unit=flower.unit_name,
        daemon_reload=lambda: unit_changed() or stale()["reload"],
        app_check=app_check,
        _if=lambda: config_changed() or inputs_changed() or stale()["restart"],
    )
    unit_running("Flower is enabled and running", flower.unit_name, reset_failed=True)
    return restart


@operation()
def restarted(unit: str, daemon_reload: Callable[[], bool], app_check: tuple[str, ...] = ()):
    """`unit` (re)started, after a daemon-reload if its unit file is new to systemd; first
    `app_check`, whose failure leaves the running service and what systemd loaded as they are."""
    state = unit_state(unit)
    if app_check:
        yield command(*app_check)
    if daemon_reload():
        yield command("systemctl", "daemon-reload")
    # StartLimitBurst is there to stop crash loops, not the (re)starts a deploy asks for. Only
    # a unit systemd keeps loaded (running or failed) has a limit to clear: reset-failed of a
    # unit it has not loaded is an error
    if state["running"] or state["failed"]:
        yield command("systemctl", "reset-failed", unit)
    yield command("systemctl", "restart" if state["running"] else "start", unit)


class StaleService(FactBase):
    """Whether a running service predates its inputs: {"reload": systemd has not loaded the unit
    file on disk, "restart": that, or a file it reads is newer than its process}."""

    def command(self, unit_name: str, paths: tuple[str, ...]) -> StringCommand:
        properties = ["NeedDaemonReload", "MainPID", "ExecMainStartTimestamp"]
        show = ["systemctl", "show", unit_name, "--timestamp=us+utc"]
        show += [f"--property={name}" for name in properties]
        # `stat` without -L: a switched venv link has the link's own time
        mtimes = ["stat", "-c", "%.9Y", *paths]
        return StringCommand(shlex.join(show), ";", shlex.join(mtimes), "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> dict:
        return {"reload": False, "restart": False}

    def process(self, output: list[str]) -> dict:
        shown = dict(line.split("=", 1) for line in output if "=" in line)
        mtimes = [float(line) for line in output if line and "=" not in line]
        reload = shown.get("NeedDaemonReload") == "yes"
        if shown.get("MainPID", "0") == "0" or not shown.get("ExecMainStartTimestamp"):
            return {"reload": reload, "restart": False}  # not running: nothing is stale
        started = datetime.strptime(shown["ExecMainStartTimestamp"], "%a %Y-%m-%d %H:%M:%S.%f %Z")
        started_at = started.replace(tzinfo=UTC).timestamp()
        return {"reload": reload, "restart": reload or any(t > started_at for t in mtimes)}


def stale_check(flower: Flower):
    """For `_if`: asks the host once, when the first operation that needs it runs (not at plan
    time), whether Flower predates its unit, config, environment files or venv link."""
    paths = (flower.unit_file, flower.config_file, flower.env_file, flower.proxy_login_env,
             flower.venv)  # fmt: skip
    answer: dict = {}

    facts.expect(StaleService, unit_name=flower.unit_name, paths=paths)

    def stale() -> dict:
        if not answer:
            answer.update(facts.ask(StaleService, unit_name=flower.unit_name, paths=paths))
        return answer

    return stale


@deploy("Tidy Flower")
def remove_old_venvs(flower: Flower, installed: Installed) -> None:
    only_the_venv(
        name="Remove venvs Flower no longer runs",
        venvs_dir=flower.venvs_dir,
        keep=installed.key,
    )
