"""Taking over a hand-made Flower (flower_takeover_unit, flower_takeover_state), and refusing
one the operator did not name.

Without the keys, the first operation of a deploy looks for another Flower: a running unit that
is not flowerbed's and whose ExecStart runs flower, or a Flower process listening on TCP. One is
found: the host fails before any change, with a message naming the unit, what it listens on and
its --db, and the fix with those values filled in. An enabled but stopped one is a warning.

With the keys, after flowerbed's venv is installed and before its Flower's state exists, the
host-side script (files/flowerbed-takeover, run from its source: nothing is left on the host):
  - stops the old unit (Flower saves its state on SIGTERM) and disables it;
  - moves its unit file, drop-ins and state files to
    /var/backups/flowerbed-takeover-<unit>-<UTC>/ (0700; files 0600 under their original paths)
    with a README; a packaged unit is masked instead of moved;
  - copies the state's records into flowerbed's new state file (Flower's user, 0600), across
    dbm backends, only while that file does not exist; written under a temporary name and
    renamed in once complete. The old files move out first: with gdbm or sqlite3 the guide's
    `--db=/var/lib/flower/flower.db` is the file `flower.db` itself, which flowerbed's unit
    would otherwise take for a stale Berkeley DB file of its own (ExecStartPre).
The firewall's listener check lets the old Flower's ports close (`ports_closing`), and the run
prints one line per host saying what was kept where.

The host's answer holds names, states, paths, ports and addresses only, never a command line:
a hand-made unit holds its password in ExecStart.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy, operation

from . import facts
from .resources import HOST_SCRIPTS
from .settings import Flower, FlowerOptions, Takeover
from .shell import command, refused

SCRIPT_SOURCE = HOST_SCRIPTS / "flowerbed-takeover"
BACKUPS = "/var/backups/flowerbed-takeover-"
NOTHING_FOUND = {"units": [], "processes": [], "backups": []}


def script(*arguments: str) -> StringCommand:
    """The host-side script run from its source by the host's python3 (never uploaded)."""
    return command("python3", "-I", "-S", "-c", SCRIPT_SOURCE.read_text(), *arguments)


class FlowersOnHost(FactBase):
    """`flowerbed-takeover find`: {"units": [...], "processes": [...], "backups": [...]}:
    the units whose files mention flower (and `unit`), the Flower processes listening on TCP
    outside them, and the takeover backups of `unit`. Names, paths, ports and addresses only."""

    def requires_command(self, unit: str) -> str:
        return "python3"

    def command(self, unit: str) -> StringCommand:
        return script("find", "--unit", unit)

    @staticmethod
    def default() -> dict:
        return dict(NOTHING_FOUND)

    def process(self, output: list[str]) -> dict:
        return json.loads("\n".join(output)) if output else dict(NOTHING_FOUND)


# --- what was found (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class TakenOver:
    """What a takeover hands to flowerbed: the names check (issue 19) records both as CREATED
    by flowerbed (so remove.py takes them off again), never as adopted."""

    unit: str
    state_dir: str


def names_taken_over(takeover: Takeover) -> TakenOver | None:
    """The hook for the names check: the old unit's name and its state's directory, or None
    without a takeover."""
    if not takeover.wanted:
        return None
    return TakenOver(unit=takeover.unit, state_dir=posixpath.dirname(takeover.state))


def takeover_names(takeover: Takeover, flower: Flower) -> tuple[str, ...]:
    """What the takeover hands the names check (flowerbed.ownership), recorded as created so
    remove.py takes it off again: the old unit or state directory where it is flowerbed's own
    name too (a hand-made `flower.service`, the guide's /var/lib/flower). Other names of the
    old Flower are not flowerbed's to record: its files move to the backup."""
    taken = names_taken_over(takeover)
    if taken is None:
        return ()
    unit = [f"unit:{taken.unit}"] if taken.unit.removesuffix(".service") == flower.service else []
    state = [f"dir:{taken.state_dir}"] if taken.state_dir == flower.state_dir else []
    return (*unit, *state)


def other_flowers(found: dict, takeover: Takeover) -> tuple[list[dict], list[dict]]:
    """The running Flowers that are neither flowerbed's nor the named one: (units, processes)."""
    units = [
        unit
        for unit in found.get("units", [])
        if unit["runs_flower"] and not unit["flowerbed"] and unit["unit"] != takeover.unit
        and unit["active"] in ("active", "activating", "reloading")
    ]  # fmt: skip
    return units, list(found.get("processes", []))


def stopped_flowers(found: dict, takeover: Takeover) -> list[dict]:
    """Enabled Flower units that are not running (a warning: they start at the next boot)."""
    return [
        unit
        for unit in found.get("units", [])
        if unit["runs_flower"] and not unit["flowerbed"] and unit["unit"] != takeover.unit
        and unit["enabled"] == "enabled" and unit["active"] not in ("active", "activating")
    ]  # fmt: skip


def listens(addresses: list[str]) -> str:
    return ", ".join(addresses) if addresses else "no TCP port"


def refusal(units: list[dict], processes: list[dict]) -> str:
    """Another Flower runs here: what it is, and the fix with its values filled in."""
    parts = []
    for unit in units:
        db = unit["db"] or "no --db"
        state = unit["db"] or "/path/of/its/--db"
        parts.append(
            f"{unit['unit']} listens on {listens(unit['listens'])} with --db {db}. Fix: to "
            f"take it over, set flower_takeover_unit = {unit['unit']!r} and "
            f"flower_takeover_state = {state!r}; or stop and disable it"
        )
    for process in processes:
        parts.append(
            f"a Flower started outside systemd, process {process['pid']} "
            f"({process['program']}, cgroup {process['cgroup'] or '?'}), listens on "
            f"{listens(process['listens'])}. Fix: stop it; or run it from a systemd unit of "
            "its own and name that unit in flower_takeover_unit"
        )
    return "another Flower runs on this host; nothing was changed: " + "; ".join(parts)


def named_unit(found: dict, takeover: Takeover) -> dict | None:
    return next((u for u in found.get("units", []) if u["unit"] == takeover.unit), None)


def takeover_plan(found: dict, takeover: Takeover) -> tuple[str, str]:
    """("take", ""), ("done", backup) when the unit is gone and a backup of it exists, or
    ("refuse", message) for a named unit that is not a hand-made Flower's."""
    unit = named_unit(found, takeover)
    backups = found.get("backups", [])
    # gone, or flowerbed's own by now (an old unit named like flowerbed's, flower.service)
    if (unit is None or unit["load"] != "loaded" or unit["flowerbed"]) and backups:
        return "done", backups[-1]
    key = "flower_takeover_unit"
    if unit is None or unit["load"] != "loaded":
        return "refuse", (
            f"{key}: {takeover.unit} is not a unit on this host and no takeover of it is "
            f"recorded; nothing was changed. Fix: name the old Flower's unit "
            f"(`systemctl list-units`), or set {key} = ''"
        )
    if unit["flowerbed"]:
        return "refuse", (
            f"{key}: {takeover.unit} is flowerbed's own Flower, not a hand-made one; nothing "
            f"was changed. Fix: set {key} = ''"
        )
    if not unit["runs_flower"]:
        return "refuse", (
            f"{key}: {takeover.unit} does not run Flower (its ExecStart runs no `flower`): it "
            f"is left running and nothing was changed. Fix: name the unit that runs the old "
            f"Flower, or set {key} = ''"
        )
    return "take", ""


def closing_line(unit: str, report: dict, target: str) -> str:
    """One line per host: what was kept where."""
    where = report["backup"]
    kept = "its unit file, drop-ins and state" if not report["masked"] else "its drop-ins and state"
    masked = " (a package's unit: masked, not moved)" if report["masked"] else ""
    return (
        f"takeover: {unit} stopped and disabled{masked}; {kept} kept in {where}/ (README "
        f"there says what came from where); its tasks: {report['note']} into {target}"
    )


def ports_closing(found: dict, takeover: Takeover) -> set[tuple[int, str]]:
    """The TCP ports the named old Flower listens on: the firewall may close them."""
    unit = named_unit(found, takeover) if takeover.wanted else None
    ports = {address.rpartition(":")[2] for address in (unit or {}).get("listens", [])}
    return {(int(port), "tcp") for port in ports if port.isdigit()}


# --- the deploy -----------------------------------------------------------------------------


@deploy("Another Flower on the host")
def other_flower_checked(takeover: Takeover) -> None:
    """Reads flower_takeover_unit, flower_takeover_state: another Flower running on the host
    (not flowerbed's, not the one named) fails the host before any change; so does a named unit
    that does not run a hand-made Flower."""
    facts.expect(FlowersOnHost, unit=takeover.unit)
    no_other_flower(name="No other Flower runs here unless named for a takeover", takeover=takeover)


@operation(is_idempotent=True)
def no_other_flower(takeover: Takeover):
    found = facts.ask(FlowersOnHost, unit=takeover.unit)
    units, processes = other_flowers(found, takeover)
    problems = [refusal(units, processes)] if units or processes else []
    if takeover.wanted and (plan := takeover_plan(found, takeover))[0] == "refuse":
        problems.append(plan[1])
    if problems:
        yield from refused("; ".join(problems))
        return
    for unit in stopped_flowers(found, takeover):
        message = (
            f"{unit['unit']} runs a Flower and is enabled but stopped: it starts at the next "
            f"boot. Stop it for good (systemctl disable {unit['unit']}) or take it over "
            f"(flower_takeover_unit = {unit['unit']!r})"
        )
        host.log_styled(message, fg="yellow", log_func=logger.warning)
    host.noop("no other Flower runs here" if not takeover.wanted else "only the named Flower")


def ports_closing_check(takeover: Takeover) -> Callable[[], set[tuple[int, str]]]:
    """For the firewall's listener check (asked when it runs): the old Flower's ports."""
    if takeover.wanted:
        facts.expect(FlowersOnHost, unit=takeover.unit)

    def closing() -> set[tuple[int, str]]:
        if not takeover.wanted:
            return set()
        return ports_closing(facts.ask(FlowersOnHost, unit=takeover.unit), takeover)

    return closing


@deploy("Take over the hand-made Flower")
def take_over(takeover: Takeover, flower: Flower, options: FlowerOptions) -> None:
    """Reads flower_takeover_unit, flower_takeover_state (and flower_service, flower_db,
    flower_user, flower_group for flowerbed's state file): the old Flower is stopped, disabled
    and kept in a dated backup; its tasks are copied into flowerbed's new state file."""
    if not takeover.wanted:
        return
    facts.expect(FlowersOnHost, unit=takeover.unit)
    taken_over(
        name=f"Take over {takeover.unit}: stopped, disabled, kept; its tasks carried over",
        takeover=takeover,
        target=f"{flower.state_dir}/{options.db}",
        owner=f"{flower.user}:{flower.group}",
    )


@operation()
def taken_over(takeover: Takeover, target: str, owner: str):
    found = facts.ask(FlowersOnHost, unit=takeover.unit)
    plan, detail = takeover_plan(found, takeover)
    if plan == "done":
        host.noop(f"{takeover.unit} was taken over before: kept in {detail}/")
        return
    if plan == "refuse":
        yield from refused(detail)
        return
    if not state.is_executing:
        host.log_styled(f"would take over {takeover.unit}", fg="yellow", log_func=logger.warning)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    argv = ("take", "--unit", takeover.unit, "--state", takeover.state, "--target", target,
            "--owner", owner, "--stamp", stamp)  # fmt: skip
    yield FunctionCommand(_take, (takeover.unit, argv, target), {})


def _take(state, host, unit: str, argv: tuple[str, ...], target: str) -> bool:
    ok, output = host.run_shell_command(script(*argv))
    lines = list(output.stdout_lines) if output else []
    if not ok or not lines:
        problem = " ".join(output.stderr_lines[-1:]) if output else "no output"
        host.log_styled(f"takeover of {unit} failed: {problem}", fg="red", log_func=logger.error)
        return False
    host.log_styled(closing_line(unit, json.loads(lines[-1]), target), fg="green",
                    log_func=logger.warning)  # fmt: skip
    return True
