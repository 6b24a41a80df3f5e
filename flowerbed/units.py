"""systemd units: enabled and running, checked with the host's other facts (flowerbed.facts).

`unit_running` is systemd.service(running=True, enabled=True) without its two round trips;
restarts and reloads stay pyinfra's own, behind `_if`, so they cost nothing when not needed.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from . import facts
from .shell import command

# what pyinfra's SystemdStatus / SystemdEnabled count as running / enabled
RUNNING = ("running", "waiting", "exited", "listening", "mounted")
ENABLED = ("enabled", "static")


class UnitStates(FactBase):
    """{unit: {"running": bool, "enabled": bool, "failed": bool}} from `systemctl show`."""

    merge_argument = "units"  # with others of its kind, one command (flowerbed.facts)

    def requires_command(self, units: tuple[str, ...]) -> str:
        return "systemctl"

    def command(self, units: tuple[str, ...]) -> StringCommand:
        properties = "--property=Id,ActiveState,SubState,UnitFileState"
        return command("systemctl", "show", properties, *units)

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, bool]]:
        states, current = {}, {}
        for line in [*output, ""]:
            if not line and current.get("Id"):
                states[current["Id"]] = {
                    "running": current.get("SubState") in RUNNING,
                    "enabled": current.get("UnitFileState") in ENABLED,
                    "failed": current.get("ActiveState") == "failed",
                }
                current = {}
            elif "=" in line:
                key, _, value = line.partition("=")
                current[key] = value
        return states


def full_name(unit: str) -> str:
    """`nginx` -> `nginx.service`: the Id systemctl shows."""
    return unit if "." in unit else f"{unit}.service"


def unit_state(unit: str) -> dict[str, bool]:
    """The unit's state on the current host (in an operation or an `_if`)."""
    unit = full_name(unit)
    absent = {"running": False, "enabled": False, "failed": False}
    return facts.ask(UnitStates, units=(unit,)).get(unit, absent)


def unit_running(name: str, unit: str, reset_failed: bool = False, **arguments) -> OperationMeta:
    """`unit` is enabled and running; `reset_failed` clears a failed unit's state (and the
    start limit that failed it) before the start."""
    facts.expect(UnitStates, units=(full_name(unit),))
    return enabled_and_running(name=name, unit=unit, reset_failed=reset_failed, **arguments)


@operation()
def enabled_and_running(unit: str, reset_failed: bool = False):
    current = unit_state(unit)
    if not current["running"]:
        # only a failed unit needs it (a start limit hit fails the unit), and a failed unit is
        # one systemd keeps loaded: reset-failed of a unit it has not loaded is an error
        if reset_failed and current["failed"]:
            yield command("systemctl", "reset-failed", unit)
        yield command("systemctl", "start", unit)
    if not current["enabled"]:
        yield command("systemctl", "enable", unit)
    if current["running"] and current["enabled"]:
        host.noop(f"{unit} is enabled and running")
