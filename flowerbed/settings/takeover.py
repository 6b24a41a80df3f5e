"""The takeover's keys (flower_takeover_*): a hand-made Flower the operator hands to flowerbed
(flowerbed/takeover.py). Both empty (the default): no takeover, and another Flower found on the
host fails it before any change."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..validation import SettingsError, shown
from .checks import Check, expect, setting

# a systemd service name: what `systemctl` accepts, without templates' unfilled `@.service`
UNIT = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]+)?\.service")
# the old Flower's --db: an absolute path of plain characters (it goes to a command's argv)
STATE = re.compile(r"/[A-Za-z0-9._+@/-]+")
EXAMPLE_UNIT = "flower-legacy.service"
EXAMPLE_STATE = "/var/lib/flower/flower.db"


def unit_name() -> Check:
    hint = f"a systemd service's name like {EXAMPLE_UNIT!r}, or '' for no takeover"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if value == "":
            return ""
        if len(value) > 255 or not UNIT.fullmatch(value):
            raise SettingsError(key, f"{shown(value)} is not {hint}", f"set {key} to {hint}")
        if value.startswith("flowerbed"):
            raise SettingsError(
                key, f"{value} is flowerbed's own unit, not a hand-made Flower", f"set {key} = ''"
            )
        return value

    return check


def state_path() -> Check:
    hint = f"the old Flower's --db as an absolute path like {EXAMPLE_STATE!r}, or ''"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if value == "":
            return ""
        parts = value.split("/")
        if not STATE.fullmatch(value) or {".", ".."} & set(parts) or value.endswith("/"):
            raise SettingsError(key, f"{shown(value)} is not {hint}", f"set {key} to {hint}")
        if len(parts) < 3:
            raise SettingsError(
                key,
                f"{value} is not inside a directory of its own",
                f"give the state file's full path, e.g. {EXAMPLE_STATE}",
            )
        return value

    return check


@dataclass(frozen=True)
class Takeover:
    """A hand-made Flower to take over; defaults in group_data/all.py."""

    unit: str = setting(unit_name(), "the old Flower's systemd unit: stopped, disabled, kept")
    state: str = setting(state_path(), "the old Flower's --db: its tasks are carried over")

    prefix = "flower_takeover_"

    @property
    def wanted(self) -> bool:
        return bool(self.unit)


def check_takeover(s: Any) -> Iterator[SettingsError]:
    """Both keys or neither; the old unit is never flowerbed's own Flower's."""
    takeover: Takeover = s.takeover
    if bool(takeover.unit) != bool(takeover.state):
        missing = "flower_takeover_state" if takeover.unit else "flower_takeover_unit"
        given = "flower_takeover_unit" if takeover.unit else "flower_takeover_state"
        yield SettingsError(
            missing,
            f"empty while {given} is set: a takeover needs both",
            f"set {missing} (e.g. flower_takeover_unit = {EXAMPLE_UNIT!r}, "
            f"flower_takeover_state = {EXAMPLE_STATE!r}), or set {given} = ''",
        )
