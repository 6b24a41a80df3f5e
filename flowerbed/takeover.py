"""Taking over a hand-made Flower (issue 21, part 1).

A Flower flowerbed does not manage, found on the host, fails the host before any change: a
process running `flower` that is not under flowerbed's own unit, or a unit named like
flowerbed's that flowerbed did not write (its file lacks the "Managed by flowerbed" header, so
flowerbed would overwrite it). The message names the unit or process, its port and the
settings that take it over.

Named by the operator (flower_takeover_unit, flower_takeover_db), it is taken over, in order:

1. `hand_made_flower_stopped`, before the firewall's listener check (its port is not a
   listener to keep) and before anything else changes: its unit is stopped (Flower saves its
   state on SIGTERM) and disabled;
2. `hand_made_flower_kept`, after Flower's install and before flowerbed writes its own unit
   (which may have the same name): its unit file and drop-ins move to a root-only backup,
   0600 (they may hold a plaintext password), systemd forgets it (daemon-reload), and its
   state files (every file of the dbm database: db, db.db, db.dat/.dir/.bak) are copied into
   flowerbed's state directory under flowerbed's db name, owned by Flower's user, only when
   flowerbed has no state of its own yet. A copy of that state goes to the backup too: the
   original stays where it was, but inside flowerbed's state directory flowerbed's unit drops a
   `<name>.db` whose `<name>` exists. The closing report says what was kept where.

Its port is then closed by flowerbed's firewall, which opens only what it is told to.
Nothing is deleted. A second run finds the backup and the unit gone (or flowerbed's own) and
changes nothing.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy, operation

from . import facts
from .firewall import _refuse
from .hostfiles import PathStates
from .settings import Settings
from .shell import command
from .units import UnitStates, unit_state

MANAGED = "Managed by flowerbed"
BACKUPS = "/var/backups"
# the files one dbm database may be (gdbm: the name itself; Berkeley DB: .db; dumb: .dat/.dir/.bak)
STATE_SUFFIXES = ("", ".db", ".dat", ".dir", ".bak")
FLOWER_PORT = 5555  # Flower's default
# not Flower, though their command line may name it (the run's own shell, sudo, tools)
NOT_FLOWER = frozenset(
    {"sh", "bash", "dash", "zsh", "sudo", "su", "runuser", "ps", "sed", "grep", "awk", "ssh",
     "sshd", "systemctl", "journalctl", "timeout", "env", "tail", "less", "vi", "vim", "nano"}
)  # fmt: skip
# the facts' output hides secrets (pyinfra prints facts at -vvv): URL passwords and the value of
# every option or variable whose name holds pass, secret, token or auth
REDACT = (
    r"s#(://[^:/@[:space:]]*:)[^@[:space:]]*@#\1***@#g;"
    r"s#((pass|secret|token|auth)[A-Za-z0-9_]*[=:])[^[:space:]\"']*#\1***#Ig"
)
UNIT_HEADER = re.compile(r"^# (/(etc|run|usr/lib|lib)/systemd/\S+)$")
PORT = re.compile(r"--port[= ](\d+)")
DB = re.compile(r"--db[= ](\S+)")
USERS = re.compile(r"pid=(\d+)")


def backup_dir(unit: str) -> str:
    return f"{BACKUPS}/flowerbed-takeover-{unit}"


# --- what is on the host ---------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFiles:
    """`systemctl cat UNIT`: its files (the unit file first, then drop-ins) and their text."""

    paths: tuple[str, ...] = ()
    text: str = ""
    managed: bool = False  # the unit file starts with flowerbed's header

    @property
    def exists(self) -> bool:
        return bool(self.paths)


@dataclass(frozen=True)
class Process:
    pid: int
    unit: str  # ps's unit: "x.service", a scope, or "-"
    comm: str
    args: str  # secrets redacted on the host

    @property
    def service(self) -> str:
        return self.unit if self.unit.endswith(".service") else ""


@dataclass(frozen=True)
class Found:
    units: dict[str, UnitFiles] = field(default_factory=dict)
    flowers: tuple[Process, ...] = ()
    listening: dict[int, tuple[str, ...]] = field(default_factory=dict)  # pid -> addr:port

    def unit(self, name: str) -> UnitFiles:
        return self.units.get(name, UnitFiles())


class FlowerSightings(FactBase):
    """The given units' files (`systemctl cat`), the processes running Flower and the TCP
    ports they listen on; secrets redacted on the host."""

    def command(self, units: tuple[str, ...]) -> StringCommand:
        parts: list = ["{"]
        for unit in units:
            parts += ["echo", shlex.quote(f"@@unit {unit}") + ";"]
            parts += [command("systemctl", "cat", "--", unit), "2>/dev/null;"]
        parts += ["echo", "@@ps;", "ps", "-eo", "pid=,unit=,comm=,args=", "2>/dev/null;"]
        parts += ["echo", "@@ss;", "ss", "-Htlnp", "2>/dev/null;", "true;", "}"]
        return StringCommand(*parts, "|", "sed", "-E", shlex.quote(REDACT))

    @staticmethod
    def default() -> Found:
        return Found()

    def process(self, output: list[str]) -> Found:
        return parse_sightings(output)


def parse_sightings(output: list[str]) -> Found:
    units: dict[str, list[str]] = {}
    ps: list[str] = []
    ss: list[str] = []
    current: list[str] = []
    for line in output:
        if line.startswith("@@unit "):
            current = units.setdefault(line[len("@@unit ") :], [])
        elif line == "@@ps":
            current = ps
        elif line == "@@ss":
            current = ss
        else:
            current.append(line)
    flowers = tuple(p for line in ps if (p := parse_process(line)) and is_flower(p))
    return Found(
        units={name: parse_unit(lines) for name, lines in units.items()},
        flowers=flowers,
        listening=parse_listening(ss),
    )


def parse_unit(lines: list[str]) -> UnitFiles:
    paths = [m.group(1) for line in lines if (m := UNIT_HEADER.match(line))]
    if not paths:
        return UnitFiles()
    body = lines[lines.index(f"# {paths[0]}") + 1 :]
    first = next((line for line in body if line.strip()), "")
    return UnitFiles(tuple(paths), "\n".join(lines), MANAGED in first)


def parse_process(line: str) -> Process | None:
    parts = line.split(None, 3)
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    return Process(int(parts[0]), parts[1], parts[2], parts[3])


def is_flower(process: Process) -> bool:
    """Runs Flower: `celery ... flower ...`, `flower ...` or `python -m flower`."""
    if process.comm in NOT_FLOWER:
        return False
    return any(word == "flower" or word.endswith("/flower") for word in process.args.split())


def parse_listening(lines: list[str]) -> dict[int, tuple[str, ...]]:
    """`ss -Htlnp`: pid -> the addresses:ports it listens on."""
    found: dict[int, list[str]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        for pid in USERS.findall(line):
            found.setdefault(int(pid), []).append(parts[3])
    return {pid: tuple(dict.fromkeys(addresses)) for pid, addresses in found.items()}


# --- what is not flowerbed's -----------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """A Flower flowerbed does not manage: its unit ('' = outside any service)."""

    unit: str
    pids: tuple[int, ...]
    listens: tuple[str, ...]  # addr:port
    port: int  # where it listens (or would: its unit's --port, else Flower's default)
    db: str  # its --db, if the command line or unit names one


def foreign_flowers(found: Found, own_unit: str, takeover_unit: str = "") -> list[Sighting]:
    """Flowers on the host that are neither flowerbed's (its unit, written by flowerbed) nor
    the one being taken over; and a unit of flowerbed's name that flowerbed did not write."""
    own_managed = found.unit(own_unit).managed
    by_unit: dict[str, list[Process]] = {}
    for process in found.flowers:
        unit = process.service
        if unit == takeover_unit and unit:
            continue
        if unit == own_unit and own_managed:
            continue
        by_unit.setdefault(unit or f"pid {process.pid}", []).append(process)
    own = found.unit(own_unit)
    if own.exists and not own.managed and own_unit != takeover_unit:
        by_unit.setdefault(own_unit, [])
    sightings = []
    for key, processes in by_unit.items():
        unit = "" if key.startswith("pid ") else key
        text = " ".join(p.args for p in processes) + "\n" + found.unit(unit).text
        listens = tuple(a for p in processes for a in found.listening.get(p.pid, ()))
        sightings.append(
            Sighting(
                unit=unit,
                pids=tuple(p.pid for p in processes),
                listens=listens,
                port=listened_port(listens) or port_of(text),
                db=db_of(text),
            )
        )
    return sorted(sightings, key=lambda s: (s.unit == "", s.unit, s.pids))


def listened_port(listens: tuple[str, ...]) -> int | None:
    ports = [int(port) for a in listens if (port := a.rpartition(":")[2]).isdigit()]
    return ports[0] if ports else None


def port_of(text: str) -> int:
    found = PORT.search(text)
    return int(found.group(1)) if found else FLOWER_PORT


def db_of(text: str) -> str:
    found = DB.search(text)
    return found.group(1).strip("'\"") if found else ""


def refusal(sightings: list[Sighting], own_unit: str) -> str:
    """The error for Flowers flowerbed does not manage, naming each and the way out."""
    described = []
    for s in sightings:
        where = f"listening on {', '.join(s.listens)}" if s.listens else f"port {s.port}"
        running = f"pid {', '.join(map(str, s.pids))}, {where}" if s.pids else f"stopped, {where}"
        if not s.unit:
            described.append(f"a process outside any service ({running})")
        elif s.unit == own_unit:
            described.append(
                f"unit {s.unit} ({running}), not written by flowerbed, which would overwrite it"
            )
        else:
            described.append(f"unit {s.unit} ({running})")
    fixes = []
    if with_unit := [s for s in sightings if s.unit]:
        first = with_unit[0]
        db = first.db or "/path/of/its/--db"
        fixes.append(
            f"take it over: flower_takeover_unit = {first.unit!r} and flower_takeover_db = "
            f"{db!r} (its unit is stopped, disabled and kept in a root-only backup, its state "
            f"carried into flowerbed's Flower, its port {first.port} closed)"
        )
    if any(not s.unit for s in sightings):
        fixes.append("stop the process outside a service yourself")
    return (
        f"takeover: a Flower flowerbed does not manage is on this host: "
        f"{'; '.join(described)}; nothing was changed. Fix: {'; or '.join(fixes)}"
    )


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    commands: tuple[tuple[str, ...], ...]  # argv, in order
    report: str  # '' = nothing to say


def units_to_check(settings: Settings) -> tuple[str, ...]:
    own, takeover = settings.flower.unit_name, settings.takeover.unit
    return tuple(dict.fromkeys(u for u in (own, takeover) if u))


def taken_over(found: Found, unit: str, own_unit: str) -> bool:
    """Nothing of `unit` is left to take over: no file, or flowerbed's own."""
    files = found.unit(unit)
    return not files.exists or (unit == own_unit and files.managed)


def state_files(db: str) -> tuple[str, ...]:
    return tuple(db + suffix for suffix in STATE_SUFFIXES)


def keep_plan(
    unit: str,
    files: UnitFiles,
    db: str,
    present: set[str],
    target: str,
    owner: tuple[str, str],
    persistent: bool = True,
) -> Plan:
    """How the stopped unit `unit` (its `files`) and its state `db` are kept and carried into
    flowerbed's state `target` (owned by `owner`); `present`: which of both states' files
    exist."""
    backup = backup_dir(unit)
    steps: list[tuple[str, ...]] = [("install", "-d", "-m", "700", backup)]
    kept, staying = [], []
    for path in files.paths:
        if not path.startswith("/etc/systemd/") and not path.startswith("/run/systemd/"):
            staying.append(path)  # a package's: disabled, not moved
            continue
        to = backup + path
        steps += [("install", "-d", "-m", "700", posixpath.dirname(to))]
        steps += [("mv", "-f", "--", path, to), ("chmod", "600", to)]
        kept.append(path)
    drop_in_dirs = dict.fromkeys(posixpath.dirname(p) for p in kept if p.endswith(".conf"))
    steps += [("rmdir", "--ignore-fail-on-non-empty", "--", d) for d in drop_in_dirs]
    steps.append(("systemctl", "daemon-reload"))
    lines = [
        f"takeover of {unit}: stopped and disabled; its unit files ({', '.join(kept) or 'none'}) "
        f"are kept root-only (0600) under {backup} (they may hold its password)"
    ]
    if staying:
        lines.append(f"left in place (a package's, now disabled): {', '.join(staying)}")
    if db:
        sources = [p for p in state_files(db) if p in present]
        # flowerbed's `<db>.db` may be the old state's own file (--db=.../flower.db)
        own = [p for p in state_files(target) if p in present and p not in sources]
        if not sources:
            lines.append(f"no state found at {db} (nor {db}.db/.dat/.dir/.bak): none carried over")
        elif db == target:
            steps += [("chown", f"{owner[0]}:{owner[1]}", "--", *sources)]
            lines.append(f"its state {db} already is flowerbed's: kept where it is")
        elif own:
            lines.append(
                f"its state {', '.join(sources)} was NOT copied: flowerbed's Flower has state of "
                f"its own ({', '.join(own)}), which is never overwritten"
            )
        else:
            state_backup = f"{backup}/state"
            steps.append(("install", "-d", "-m", "700", state_backup))
            state_dir = posixpath.dirname(target)
            user, group = owner
            steps.append(("install", "-d", "-m", "700", "-o", user, "-g", group, state_dir))
            for source in sources:
                steps.append(("cp", "--preserve=timestamps", "--", source, state_backup + "/"))
            clashes = [p for p in sources if target + p[len(db) :] in sources]
            for source in sources:
                if source not in clashes:  # never written over one of the old state's files
                    steps.append(("install", "-m", "600", "-o", user, "-g", group, "--", source,
                                  target + source[len(db) :]))  # fmt: skip
            lines.append(
                f"its state {', '.join(sources)} was copied to flowerbed's {target} (a copy is "
                f"kept in {state_backup}; the original stays where it was"
                + (
                    ", unless flowerbed's Flower drops it as an older backend's file of its own"
                    if posixpath.dirname(db) == state_dir
                    else ""
                )
                + ")"
            )
            if clashes:
                lines.append(
                    f"not copied (flowerbed's name for it is another of its files): "
                    f"{', '.join(clashes)}"
                )
            if not persistent:
                lines.append("flower_persistent is False: flowerbed's Flower will not load it")
    port = port_of(files.text)
    lines.append(
        f"its port {port} is no longer served; flowerbed's firewall opens only its own ports"
    )
    return Plan(tuple(steps), "; ".join(lines))


# --- the operations --------------------------------------------------------------------------


@operation()
def no_foreign_flower(own_unit: str, units: tuple[str, ...], takeover_unit: str):
    """Fails the host, before any change, when a Flower flowerbed does not manage is found and
    the operator did not name it for a takeover."""
    found = facts.ask(FlowerSightings, units=units)
    sightings = foreign_flowers(found, own_unit, takeover_unit)
    if not sightings:
        host.noop("no Flower but flowerbed's (or the one taken over) is on the host")
        return
    yield refused(refusal(sightings, own_unit))


def refused(message: str) -> FunctionCommand:
    """Fails the host with `message` (the firewall's refusal); a preview shows it now."""
    if not state.is_executing:
        host.log_styled(f"would fail: {message}", fg="red", log_func=logger.error)
    return FunctionCommand(_refuse, (message,), {})


@operation()
def stopped_and_disabled(unit: str, own_unit: str, units: tuple[str, ...]):
    found = facts.ask(FlowerSightings, units=units)
    current = unit_state(unit)
    if taken_over(found, unit, own_unit) or not (current["running"] or current["enabled"]):
        host.noop(f"{unit} is not running or enabled as a hand-made Flower")
        return
    if current["running"]:
        yield command("systemctl", "stop", unit)  # Flower saves its state on SIGTERM
    if current["enabled"]:
        yield command("systemctl", "disable", unit)


@operation()
def kept_and_carried_over(settings: Settings, units: tuple[str, ...], paths: tuple[str, ...]):
    unit, own_unit = settings.takeover.unit, settings.flower.unit_name
    found = facts.ask(FlowerSightings, units=units)
    present = set(facts.ask(PathStates, paths=paths, digests=False))
    if taken_over(found, unit, own_unit):
        host.noop(f"{unit}: nothing left to take over")
        return
    flower = settings.flower
    plan = keep_plan(
        unit,
        found.unit(unit),
        settings.takeover.db,
        present,
        f"{flower.state_dir}/{settings.options.db}",
        (flower.user, flower.group),
        settings.options.persistent,
    )
    for argv in plan.commands:
        yield command(*argv)
    yield FunctionCommand(_report, (plan.report,), {})


def _report(state, host, message: str) -> bool:
    host.log_styled(message, fg="yellow", log_func=logger.warning)
    return True


# --- the deploys -----------------------------------------------------------------------------


@deploy("Hand-made Flower: none unknown, the named one stopped")
def hand_made_flower_stopped(settings: Settings) -> None:
    """Before any change: a Flower flowerbed does not manage and the operator did not name
    fails the host; the one named (flower_takeover_unit) is stopped and disabled."""
    units = units_to_check(settings)
    own, takeover = settings.flower.unit_name, settings.takeover.unit
    facts.expect(FlowerSightings, units=units)
    no_foreign_flower(
        name="No Flower flowerbed does not manage",
        own_unit=own,
        units=units,
        takeover_unit=takeover,
    )
    if takeover:
        facts.expect(UnitStates, units=(takeover,))
        stopped_and_disabled(
            name=f"Hand-made Flower {takeover} stopped and disabled",
            unit=takeover,
            own_unit=own,
            units=units,
        )


@deploy("Hand-made Flower: kept and carried over")
def hand_made_flower_kept(settings: Settings) -> None:
    """Before flowerbed's Flower starts: the named unit's files go to a root-only backup, its
    state into flowerbed's (if flowerbed has none), and the report says what was kept where."""
    if not settings.takeover.unit:
        return
    units = units_to_check(settings)
    target = f"{settings.flower.state_dir}/{settings.options.db}"
    db = settings.takeover.db
    paths = state_files(target) + (state_files(db) if db else ())
    facts.expect(FlowerSightings, units=units)
    facts.expect(PathStates, paths=paths, digests=False)
    kept_and_carried_over(
        name=f"Hand-made Flower {settings.takeover.unit}: unit kept aside, state carried over",
        settings=settings,
        units=units,
        paths=paths,
    )
