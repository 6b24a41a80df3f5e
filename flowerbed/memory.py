"""Flower's memory ceiling (flower_memory_max): its grammar, the default derived from
max_tasks, the unit's MemoryHigh/MemoryMax, the watchdog's start in flowerconfig.py, and the
verdict verify.py's `memory` layer gives.

Each function takes one Flower's values (its unit name, max_tasks, state directory, socket), so
a host with several Flowers applies them per Flower. No pyinfra here: the settings import it.

The ceiling is enforced twice. systemd's memory controller kills Flower at MemoryMax (where the
host has one: the lab's containers do not), and the watchdog inside Flower
(flowerbed/memory_watchdog.py) restarts it cleanly at RESTART_SHARE, after its state is saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .hooks import WATCHDOG_FILE, hook_block, hook_path
from .validation import SettingsError, shown

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4
# Measured with benchmarks/flood.py --payload (Flower 2.2.0, Debian 13, 20,000 tasks): 59 MiB at
# rest, 10.6 KiB a task with 500-character args, kwargs and result, 15.7 KiB with 1 KiB. The
# default leaves room above both.
BASE_BYTES = 128 * MIB
PER_TASK_BYTES = 24 * KIB
MINIMUM, MAXIMUM = 64 * MIB, TIB
HIGH_SHARE = 0.95  # MemoryHigh: the kernel reclaims harder above it
RESTART_SHARE = 0.90  # the watchdog saves the state and restarts Flower above it
NEAR_SHARE = 0.80  # the alert and verify warn above it; a Flower over it at start is kept
RECENT_SECONDS = 3600  # verify reports a restart at the ceiling this recent (the alert's window)
RECORD_FILE = "memory-restarts.json"  # in Flower's state directory (the watchdog's count)
SIZE = re.compile(r"([1-9][0-9]{0,12})([KMGT])")
UNITS = {"K": KIB, "M": MIB, "G": GIB, "T": TIB}
HINT = "'' (derived from flower_max_tasks) or a size from 64M to 1T, like '512M' or '2G'"


def parse_size(text: str) -> int:
    """'512M' -> bytes (K, M, G, T are powers of 1024, as systemd reads them)."""
    match = SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size like '512M'")
    return int(match.group(1)) * UNITS[match.group(2)]


def memory_size() -> Any:
    """'' (derived: 128 MiB + 24 KiB per flower_max_tasks) or a size from 64M to 1T like
    '512M' or '2G' (K, M, G, T: powers of 1024)."""

    def check(key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise SettingsError(key, f"{shown(value)} is not a string", f"set {key} to {HINT}")
        if value == "":
            return value
        if not SIZE.fullmatch(value):
            raise SettingsError(
                key,
                f"{shown(value)} is not a size (digits and one of K, M, G, T)",
                f"set {key} to {HINT}",
            )
        size = parse_size(value)
        if not MINIMUM <= size <= MAXIMUM:
            where = "below 64M (Flower alone takes about 60 MiB)" if size < MINIMUM else "above 1T"
            raise SettingsError(key, f"{value} is {where}", f"set {key} to {HINT}")
        return value

    return check


def default_max(max_tasks: int) -> int:
    """The derived ceiling: 128 MiB plus 24 KiB per task Flower keeps (max_tasks)."""
    return BASE_BYTES + PER_TASK_BYTES * max_tasks


@dataclass(frozen=True)
class Ceiling:
    """One Flower's ceiling, in bytes, and whether it was derived from max_tasks."""

    max_bytes: int
    derived: bool

    @property
    def high_bytes(self) -> int:
        return int(self.max_bytes * HIGH_SHARE)


def ceiling(memory_max: str, max_tasks: int) -> Ceiling:
    """flower_memory_max if set, else the default derived from `max_tasks`."""
    if memory_max:
        return Ceiling(parse_size(memory_max), derived=False)
    return Ceiling(default_max(max_tasks), derived=True)


def unit_lines(limit: Ceiling) -> list[str]:
    """The unit's [Service] lines, in bytes."""
    return [f"MemoryHigh={limit.high_bytes}", f"MemoryMax={limit.max_bytes}"]


def watchdog_path(config_dir: str) -> str:
    return hook_path(config_dir, WATCHDOG_FILE)


def record_path(state_dir: str) -> str:
    return f"{state_dir}/{RECORD_FILE}"


def config_block(
    limit: Ceiling, config_file: str, state_dir: str, socket: str, stop_timeout_sec: int
) -> str:
    """The lines that start the watchdog in `config_file` (one Flower's flowerconfig.py)."""
    return hook_block(
        WATCHDOG_FILE,
        config_file,
        max_bytes=limit.max_bytes,
        record=record_path(state_dir),
        socket=socket,
        stop_timeout_sec=stop_timeout_sec,
    )


def mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


def verdict(limit: Ceiling, found: dict, now: float) -> tuple[bool, object, str]:
    """verify.py's `memory` layer from the MemoryUse fact: (ok, value, problem). A restart at
    the ceiling in the last hour is a problem, as is resident memory over NEAR_SHARE."""
    resident, restarts, last = found.get("resident"), found.get("restarts", 0), found.get("last")
    share = resident / limit.max_bytes if resident else None
    shown_share = "n/a" if share is None else f"{share:.0%}"
    value = f"{shown_share} {restarts}r" if restarts else shown_share
    fix = "raise flower_memory_max or lower flower_max_tasks"
    if last and now - last < RECENT_SECONDS:
        when = datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        at = f" at {mib(found['at'])}" if found.get("at") else ""
        return (
            False,
            value,
            f"the memory watchdog restarted Flower at {when}{at} (ceiling {mib(limit.max_bytes)},"
            f" restart at {RESTART_SHARE:.0%}; {restarts} restart(s) in all): {fix}",
        )
    if share is not None and share > NEAR_SHARE:
        return (
            False,
            value,
            f"Flower's resident memory {mib(resident)} is {share:.0%} of its ceiling "
            f"{mib(limit.max_bytes)} (restarted at {RESTART_SHARE:.0%}): {fix}",
        )
    return True, value, ""
