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
from dataclasses import dataclass
from datetime import UTC, datetime
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from .hostfiles import root_directory, root_file
from .packages import pip_conf, system_packages
from .render import render
from .secrets import FlowerSecrets, Secret, secret_file
from .settings import Flower, FlowerOptions, Settings, local_app_dir
from .venv import AppPackage, app_from_source, locked_venv, only_venv, venv_key


@dataclass(frozen=True)
class Installed:
    """The venv Flower runs from, and whether this run built or switched it."""

    key: str
    venv: OperationMeta
    link: OperationMeta


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


def config_text(settings: Settings) -> str:
    values = flower_config_values(settings.flower, settings.options)
    return render("flowerconfig.py.j2", values=values)


def exec_start(flower: Flower) -> list[str]:
    """Celery's options before `flower`, Flower's in its config file; no secret anywhere."""
    app = [f"--app={flower.app}"] if flower.app else []
    return [f"{flower.venv}/bin/celery", *app, "flower", f"--conf={flower.config_file}"]


def unit_text(flower: Flower, environment: list[tuple[str, str]] | None = None) -> str:
    """The unit; `environment` = what the OAuth provider's handler reads (not secret)."""
    return render(
        "flower.service.j2",
        flower=flower,
        exec_start=" ".join(exec_start(flower)),
        environment=[unit_quote(f"{name}={value}") for name, value in environment or []],
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
def install_flower(settings: Settings) -> Installed:
    """Flower's user, directories and a complete venv the service's link points at."""
    flower = settings.flower
    system_packages(required_packages(flower))
    flower_user(flower)
    root_directory("Flower's install directory (root-owned)", flower.venvs_dir)
    plan = venv_plan(flower)
    venv = locked_venv(
        name=f"Flower {flower.version} venv from its hash-pinned lock",
        path=f"{flower.venvs_dir}/{plan.key}",
        lock=plan.lock,
        pip_conf=pip_conf(settings.egress),
        app=plan.app,
        proxy=settings.egress.egress_proxy,
    )
    link = files.link(
        name="Point Flower at its venv",
        path=flower.venv,
        target=f"{flower.venvs_dir}/{plan.key}",
        user="root",
        group="root",
    )
    return Installed(key=plan.key, venv=venv, link=link)


def flower_user(flower: Flower) -> None:
    """A static system user; its group admits the socket's clients and nothing else."""
    server.group(name="Flower's group", group=flower.group, system=True)
    server.user(
        name="Flower's system user",
        user=flower.user,
        group=flower.group,
        home=flower.state_dir,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=False,
    )
    for client in flower.socket_clients:
        server.user(
            name=f"Let {client} reach Flower's socket",
            user=client,
            groups=[flower.group],
            append=True,
            ensure_home=False,
        )


@deploy("Flower service")
def flower_service(settings: Settings, secrets: FlowerSecrets, installed: Installed):
    """Flower runs the installed venv with the current config; restarted only on change."""
    config, env = configure_flower(settings, secrets)
    provider_environment = settings.oauth_provider.environment(settings.options.auth_provider)
    unit = flower_unit(settings.flower, provider_environment)
    return restart_on_change(settings.flower, unit, config, env, installed.venv, installed.link)


def configure_flower(settings: Settings, secrets: FlowerSecrets) -> tuple[OperationMeta, ...]:
    """Root-owned config (world-readable, no secrets) and a root-only environment file."""
    flower = settings.flower
    root_directory("Flower's config directory (root-owned)", flower.config_dir)
    config = root_file(
        "Flower's options (flowerconfig.py)", StringIO(config_text(settings)), flower.config_file
    )
    env = secret_file(
        name="Flower's secrets (root-only environment file)",
        path=flower.env_file,
        content=env_text(flower, secrets),
    )
    if flower.app_workdir:
        root_directory("Flower's working directory for the app", flower.app_workdir)
    return config, env


def flower_unit(flower: Flower, environment: list[tuple[str, str]]) -> OperationMeta:
    return root_file(
        "Flower's hardened systemd unit",
        StringIO(unit_text(flower, environment)),
        flower.unit_file,
    )


def restart_on_change(flower: Flower, unit: OperationMeta, *inputs: OperationMeta) -> OperationMeta:
    """daemon-reload only for a new unit; one restart for any change; enabled and running.

    A run killed after writing an input but before the restart leaves the files right and the
    service stale: the next run sees no change, so the host itself is asked (StaleService)."""
    stale = stale_check(flower)
    systemd.daemon_reload(
        name="Reload systemd (Flower's unit changed)",
        _if=lambda: unit.did_change() or stale()["reload"],
    )
    inputs_changed = any_changed(unit, *inputs)

    def changed() -> bool:
        return inputs_changed() or stale()["restart"]

    # StartLimitBurst is there to stop crash loops, not the (re)starts a deploy asks for
    server.shell(
        name="Clear Flower's start limit before the deploy (re)starts it",
        # a unit systemd has not loaded yet (never started) has no limit to clear
        commands=[f"{shlex.join(['systemctl', 'reset-failed', flower.unit_name])} || true"],
        _if=lambda: changed() or not is_running(flower.unit_name),
    )
    restart = systemd.service(
        name="Restart Flower (unit, environment, config or venv changed)",
        service=flower.unit_name,
        running=True,
        restarted=True,
        _if=changed,
    )
    systemd.service(
        name="Flower is enabled and running",
        service=flower.unit_name,
        running=True,
        enabled=True,
    )
    return restart


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
    time), whether Flower predates its unit, config, environment file or venv link."""
    paths = (flower.unit_file, flower.config_file, flower.env_file, flower.venv)
    answer: dict = {}

    def stale() -> dict:
        if not answer:
            answer.update(host.get_fact(StaleService, unit_name=flower.unit_name, paths=paths))
        return answer

    return stale


def is_running(unit_name: str) -> bool:
    return bool(host.get_fact(SystemdStatus, services=[unit_name]).get(unit_name))


@deploy("Tidy Flower")
def remove_old_venvs(flower: Flower, installed: Installed) -> None:
    only_venv(
        name="Remove venvs Flower no longer runs",
        venvs_dir=flower.venvs_dir,
        keep=installed.key,
    )
