"""The operator runs' knobs (flower_verify_*): what verify.py, and rotate.py's HTTPS check,
expect of a healthy host. The deploy validates them with every other key; the runs read them
with `operator_checks(host.data.dict())`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..resources import DEFAULTS, is_local_file
from ..validation import SettingsError
from .checks import Check, section_from, setting

VERIFY = "flower_verify_"


def amount(kind: type | tuple[type, ...], what: str) -> Check:
    """A value of `kind`, never a bool and never negative (a list becomes a tuple)."""

    def check(key: str, value: Any) -> Any:
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (isinstance(value, (int, float)) and value < 0)
        ):
            raise SettingsError(key, f"{value!r} is not {what}", f"set {key} to {what}")
        return tuple(value) if isinstance(value, list) else value

    return check


def pem_file() -> Check:
    """A CA bundle on the operator's machine ('' = the system's trust store)."""
    what = "a path to a PEM file ('' = the system's trust store)"

    def check(key: str, value: Any) -> str:
        amount(str, what)(key, value)
        if value and not is_local_file(value):
            raise SettingsError(
                key, f"{value} does not exist", "point it at a PEM file on this machine"
            )
        return value

    return check


@dataclass(frozen=True)
class Verify:
    """What verify.py (and rotate.py's HTTPS check) expect; defaults in group_data/all.py."""

    ca_bundle: str = setting(pem_file())
    summary_file: str = setting(amount(str, "a path for the JSON summary ('' = none)"))
    cert_min_days: int = setting(amount(int, "a number of days, e.g. 14"))
    exposure_max: float = setting(
        amount((int, float), "a systemd-analyze security score, e.g. 1.5")
    )
    min_workers_online: int = setting(amount(int, "a number of workers, e.g. 1"))
    max_workers_offline: int = setting(amount(int, "a number of workers, e.g. 0"))
    max_failed_tasks: int = setting(amount(int, "a number of tasks, e.g. 100"))
    max_task_seconds: int = setting(amount(int, "a number of seconds, e.g. 1800"))
    max_queue_length: int = setting(amount(int, "a number of messages, e.g. 1000"))
    expected_tasks: tuple[str, ...] = setting(
        amount(list, 'a list of task names, e.g. ["proj.tasks.add"]')
    )

    prefix = VERIFY


def operator_checks(data: Mapping[str, Any]) -> Verify:
    """The flower_verify_* knobs over their defaults, validated; the first problem raises
    (a misspelt knob included)."""
    return section_from(Verify, {**DEFAULTS, **data})
