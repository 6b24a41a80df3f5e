"""Several Flowers per host (flower_instances): one more Flower per Celery app or broker.

Each instance runs the main Flower's venv as the same user, under names of its own:

- the unit `flower-<name>.service` (its own SyslogIdentifier, so its own journal), its socket in
  /run/flower-<name>/ and its state in /var/lib/flower-<name>;
- its options, broker URL (root-only) and proxy login in <flower_config_dir>/instances/<name>/;
- its logins in /etc/nginx/flowerbed-instance-<name>.htpasswd (root:www-data 0640);
- the locations /<path>/ (with its metrics and health check) in flowerbed's site, where its
  worker pages, refreshes and task applies count in the expensive-request budget;
- its own health check after a change.

The host's record RECORD (root 0600) names every instance flowerbed put there, written before
one is made: an instance dropped from the data is removed on the next run (its location first,
through `nginx -t` and a reload, then its unit; its state in a dated backup unless
flower_remove_keep_state = False), and remove.py removes every recorded one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta

from . import facts
from .auth import HTPASSWD, htpasswd
from .flower import (
    Installed,
    app_check,
    config_text,
    env_text,
    hook_files,
    memory_ceiling,
    restart_on_change,
    unit_text,
)
from .healthcheck import verify_flower
from .hostfiles import Absent, PathStates, RootDirectory, RootFile, root_files
from .inputs.instances import InstanceInputs, htpasswd_path, instance_flower, instances_dir
from .inputs.logins import Login
from .inputs.secrets import FlowerSecrets, Secret
from .ownership import UNIT_DIRS
from .proxy_login import proxy_login
from .secrets import checked_secret_file
from .settings import Flower, FlowerRun, Instance, Instances, Remove
from .shell import command, refused
from .units import UnitStates, unit_state

RECORD = "/var/lib/flowerbed/flower-instances"
BACKUP_DIR = "/var/backups"


# --- what each instance is ------------------------------------------------------------------


def instance_run(main: FlowerRun, instance: Instance) -> FlowerRun:
    """The main Flower's sections, for this instance: what the main Flower's functions read."""
    options = replace(
        main.options,
        url_prefix=instance.path,
        max_tasks=instance.max_tasks or main.options.max_tasks,
    )
    return replace(main, flower=instance_flower(main.flower, instance), options=options)


# --- the host's record ----------------------------------------------------------------------


class RecordedInstances(FactBase):
    """The instance names in RECORD, one a line ([] without the file)."""

    def command(self) -> StringCommand:
        return StringCommand("cat", RECORD, "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


def record_text(names: list[str]) -> str:
    return "".join(f"{name}\n" for name in sorted(set(names)))


def recorded(name: str, names: list[str]) -> OperationMeta:
    return root_files(
        name,
        [RootDirectory("/var/lib/flowerbed"), RootFile(RECORD, record_text(names), mode="600")],
    )


# --- one instance ---------------------------------------------------------------------------


def instance_unit_text(run: FlowerRun, extra: tuple[str, ...] = ()) -> str:
    """The main Flower's unit for the instance, with its own journal name and its own memory
    ceiling (from its max_tasks); `extra` lines go into its [Service] section."""
    flower = run.flower
    text = unit_text(flower, None, run.auth.mode, memory_ceiling(flower, run.options))
    lines = (f"SyslogIdentifier={flower.service}", *extra)
    return text.replace("[Service]\n", "[Service]\n" + "".join(f"{x}\n" for x in lines), 1)


def host_login_names(
    main: tuple[Login, ...], instances: tuple[InstanceInputs, ...]
) -> dict[str, tuple[str, ...]]:
    """Each htpasswd of the host's Flowers and the login names it holds."""
    names = {HTPASSWD: tuple(login.user for login in main)}
    for one in instances:
        names[htpasswd_path(one.instance.name)] = tuple(login.user for login in one.logins)
    return names


def others_names(names: dict[str, tuple[str, ...]], path: str) -> tuple[str, ...]:
    """The other Flowers' login names, which get the decoy's hash in `path` (flowerbed.decoy):
    one Flower's login tried at another's path costs a bcrypt check there too."""
    return tuple(name for other, held in names.items() if other != path for name in held)


def instance_service(main: FlowerRun, inputs: InstanceInputs, installed: Installed) -> None:
    """One instance: its files and secrets, restarted on a change (its logins are the edge's:
    instances_htpasswds)."""
    mine = instance_run(main, inputs.instance)
    flower = mine.flower
    root_files(
        f"Flower {inputs.instance.name}: options, unit and directories",
        [
            RootDirectory(instances_dir(main.flower)),
            RootDirectory(flower.config_dir),
            # flowerconfig.py starts what hook_files holds
            RootFile(flower.config_file, config_text(flower, mine.options)),
            *hook_files(flower),
            RootFile(flower.unit_file, instance_unit_text(mine)),
        ],
    )
    env = checked_secret(flower, inputs.broker_url)
    login = proxy_login(flower)
    check = app_check(flower, "basic")
    restart_on_change(flower, env, installed.venv, login, app_check=check)


def checked_secret(flower: Flower, broker: Secret) -> OperationMeta:
    secrets = FlowerSecrets(broker, None, None, None, None)
    return checked_secret_file(
        name=f"Flower {flower.service}: secrets (root-only environment file)",
        path=flower.env_file,
        content=env_text(flower, secrets),
    )


def instance_names(flower: Flower, name: str) -> tuple[str, ...]:
    """The paths a new instance would make its own: its unit file in every unit directory, its
    state, runtime and options directories."""
    paths = instance_paths(flower, name)
    service = f"flower-{name}.service"
    return (*(f"{d}/{service}" for d in UNIT_DIRS), paths["state"], f"/run/flower-{name}",
            paths["config"])  # fmt: skip


def names_taken(
    flower: Flower, new: list[str], found: dict, units: dict[str, dict[str, bool]]
) -> list[str]:
    """For each new instance (not in the host's record), what of its names the host already
    has: another service's unit or directories, which the instance must not take over."""
    taken = []
    for name in new:
        unit = f"flower-{name}.service"
        held = [path for path in instance_names(flower, name) if path in found]
        state = units.get(unit, {})
        if state.get("running") or state.get("enabled"):
            held.insert(0, f"{unit} ({'running' if state.get('running') else 'enabled'})")
        if held:
            taken.append(f"instance {name!r}: {', '.join(held)}")
    return taken


@operation(is_idempotent=True)
def instance_names_free(flower: Flower, names: tuple[str, ...]):
    """Refused before any change: a new instance whose unit or directories the host already
    has (a hand-made flower-<name>.service, another service's /var/lib/flower-<name>)."""
    new = [name for name in names if name not in host.get_fact(RecordedInstances)]
    paths = tuple(path for name in new for path in instance_names(flower, name))
    units = tuple(f"flower-{name}.service" for name in new)
    found = facts.ask(PathStates, paths=paths, digests=False) if paths else {}
    states = facts.ask(UnitStates, units=units) if units else {}
    if taken := names_taken(flower, new, found, states):
        yield from refused(
            "flowerbed refuses instances whose names this host already has; nothing was "
            f"changed: {'; '.join(taken)}. Fix: rename the instance in flower_instances"
        )
        return
    host.noop("each new instance's names are free on this host")


def instances_names_checked(instances: Instances, flower: Flower) -> None:
    """The check above for flower_instances (a deploy's first operations)."""
    names = tuple(instance.name for instance in instances.instances)
    if not names:
        return
    if new := [name for name in names if name not in host.get_fact(RecordedInstances)]:
        paths = tuple(path for name in new for path in instance_names(flower, name))
        facts.expect(PathStates, paths=paths, digests=False)
        facts.expect(UnitStates, units=tuple(f"flower-{name}.service" for name in new))
    instance_names_free(
        name="Each new Flower instance's names are free on this host",
        flower=flower,
        names=names,
    )


@deploy("Flower instances")
def flower_instances(
    main: FlowerRun, inputs: tuple[InstanceInputs, ...], installed: Installed
) -> None:
    """Every instance in flower_instances, recorded on the host before it is made.
    Data keys: flower_instances (and the main Flower's flower_* keys it shares)."""
    if not inputs and not host.get_fact(RecordedInstances):
        return
    names = [i.instance.name for i in inputs]
    recorded("Flower instances recorded", [*host.get_fact(RecordedInstances), *names])
    for one in inputs:
        instance_service(main, one, installed)


def instances_htpasswds(
    instances: tuple[InstanceInputs, ...], names: dict[str, tuple[str, ...]]
) -> None:
    """Each instance's htpasswd, the other Flowers' names (`names`: host_login_names) with
    the decoy's hash; written with the main one and the users map, by the edge."""
    for one in instances:
        path = htpasswd_path(one.instance.name)
        htpasswd(f"Flower {one.instance.name}: logins (bcrypt)", path, one.logins,
                 others_names(names, path))  # fmt: skip


@deploy("Flower instances: health")
def instances_healthy(instances: Instances, main: FlowerRun) -> None:
    for instance in instances.instances:
        verify_flower(instance_run(main, instance), after_changes_only=True)


# --- dropped instances ----------------------------------------------------------------------


def backup_path(name: str, now: datetime) -> str:
    return f"{BACKUP_DIR}/flowerbed-flower-{name}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def instance_paths(flower: Flower, name: str) -> dict[str, str]:
    """What an instance named `name` put on the host (the instance's data may be gone)."""
    service = f"flower-{name}"
    return {
        "unit": f"/etc/systemd/system/{service}.service",
        "config": f"{instances_dir(flower)}/{name}",
        "state": f"/var/lib/{service}",
        "htpasswd": htpasswd_path(name),
    }


@operation()
def instance_taken_off(unit: str, paths: tuple[str, ...], state_dir: str, backup: str, keep: bool):
    """`unit` stopped and disabled, its files gone, its state in `backup` (`keep`) or gone."""
    current = facts.ask(PathStates, paths=(*paths, state_dir), digests=False)
    running = unit_state(unit)
    present = [path for path in paths if path in current]
    if not present and state_dir not in current and not (running["running"] or running["enabled"]):
        host.noop(f"{unit} is gone")
        return
    if running["running"] or running["enabled"]:
        yield command("systemctl", "disable", "--now", unit)
    if present:
        yield command("rm", "-rf", *present)
        yield command("systemctl", "daemon-reload")
    if state_dir in current:
        if keep:
            archive = command("tar", "--create", "--gzip", f"--file={backup}", "--directory=/",
                              state_dir.lstrip("/"))  # fmt: skip
            yield StringCommand("umask", "077", "&&", archive)
            yield command("chmod", "600", backup)
        yield command("rm", "-rf", state_dir)


def instance_removed(flower: Flower, name: str, keep: bool, now: datetime) -> OperationMeta:
    paths = instance_paths(flower, name)
    files = (paths["unit"], paths["config"], paths["htpasswd"])
    unit = f"flower-{name}.service"
    facts.expect(UnitStates, units=(unit,))
    facts.expect(PathStates, paths=(*files, paths["state"]), digests=False)
    backup = backup_path(name, now)
    where = f"state backed up to {backup}" if keep else "state deleted"
    return instance_taken_off(
        name=f"Flower {name} removed (dropped from flower_instances; {where})",
        unit=unit,
        paths=files,
        state_dir=paths["state"],
        backup=backup,
        keep=keep,
    )


def remove_instances(
    flower: Flower, names: list[str], keep: bool, now: datetime | None = None
) -> None:
    when = now or datetime.now(UTC)
    for name in names:
        instance_removed(flower, name, keep, when)


@deploy("Flower instances dropped")
def instances_dropped(
    instances: Instances, flower: Flower, remove: Remove, now: datetime | None = None
) -> None:
    """Each recorded instance no longer in flower_instances leaves the host (after the site
    stopped serving it); the record then names the current ones. Data keys: flower_instances,
    flower_remove_keep_state."""
    on_host = host.get_fact(RecordedInstances)
    current = [i.name for i in instances.instances]
    dropped = [name for name in on_host if name not in current]
    if not on_host:
        return
    remove_instances(flower, dropped, remove.keep_state, now)
    if current:
        recorded("Flower instances recorded (current)", current)
        return
    place = instances_dir(flower)
    facts.expect(PathStates, paths=(place,), digests=False)
    directory_gone(name=f"No Flower instances left: {place} removed", path=place)
    root_files("No Flower instances left: no record", [Absent(RECORD)])


@operation()
def directory_gone(path: str):
    if path not in facts.ask(PathStates, paths=(path,), digests=False):
        host.noop(f"no {path}")
        return
    yield command("rm", "-rf", path)
