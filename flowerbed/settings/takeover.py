"""Taking over a hand-made Flower (flower_takeover_*): the unit the operator set up by hand
and its state file, which flowerbed stops, keeps and carries over (flowerbed/takeover.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..validation import SettingsError, shown
from .checks import Check, expect, setting


def unit_name() -> Check:
    def check(key: str, value: Any) -> str:
        expect(key, value, str, "a systemd unit name like 'flower.service' ('' = none)")
        if value == "":
            return ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,120}", value):
            raise SettingsError(
                key, f"{shown(value)} is not a unit name", f"use e.g. {key} = 'flower.service'"
            )
        return value if "." in value else f"{value}.service"

    return check


def state_path() -> Check:
    def check(key: str, value: Any) -> str:
        expect(key, value, str, "the old Flower's --db path ('' = none)")
        if value == "":
            return ""
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", value) or {".", ".."} & set(
            value.split("/")
        ):
            raise SettingsError(
                key,
                f"{shown(value)} is not an absolute file path",
                f"use the old unit's --db value, e.g. {key} = '/var/lib/flower/flower.db'",
            )
        return value

    return check


@dataclass(frozen=True)
class Takeover:
    """The hand-made Flower a deploy takes over; defaults in group_data/all.py."""

    # its systemd unit: stopped, disabled, its files kept in a root-only backup
    unit: str = setting(unit_name(), "the hand-made Flower's systemd unit")
    # its --db: copied into flowerbed's state (the original stays where it was)
    db: str = setting(state_path(), "its state file (--db), carried into flowerbed's")

    prefix = "flower_takeover_"
