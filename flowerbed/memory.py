"""Flower's memory ceiling: MemoryHigh/MemoryMax of its unit, derived from flower_max_tasks.

Flower keeps up to max_tasks tasks in memory, so its resident memory grows with them and then
stays flat; a Flower that grows past that leaks (mher/flower #57, #134, #770, #1305). The cost
per task is measured with benchmarks/flood.py (docs/benchmarks.md, "Flower under a flood of
task events"): RSS 59 MiB idle, at most 226 MiB with flower_max_tasks=20000 under a flood of
200,000 tasks (213..226 MiB over the run's last third), so (226 - 59) MiB / 20,000 tasks =
8.55 KiB a task, rounded up to 9 KiB. The flood's tasks have tiny arguments and results; Celery
cuts a task's args, kwargs and result to about 1 KiB each in its events, which the safety
factor covers: the derived ceiling is SAFETY x (IDLE + max_tasks x PER_TASK), so a Flower that
holds what it is told to never reaches it and a leak does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IDLE_MIB = 59  # Flower 2.2's RSS before any task (benchmarks/flood.py)
PER_TASK_KIB = 9  # (226 - 59) MiB / 20,000 tasks = 8.55 KiB, rounded up
SAFETY = 2  # headroom for larger args/results, the allocator, a state save's pickling
# An explicit ceiling below this kills Flower as it starts (idle RSS plus its first events)
MINIMUM_MIB = 64
HIGH_SHARE = 0.9  # MemoryHigh: the kernel reclaims and throttles from here, before MemoryMax


def derived_max_mib(max_tasks: int) -> int:
    """The default MemoryMax for flower_max_tasks, in MiB."""
    return math.ceil(SAFETY * (IDLE_MIB + max_tasks * PER_TASK_KIB / 1024))


@dataclass(frozen=True)
class Ceiling:
    """The unit's MemoryMax and MemoryHigh (MiB), and whether flower_max_tasks gave them."""

    max_mib: int
    high_mib: int
    derived: bool


def ceiling(memory_max: int, max_tasks: int) -> Ceiling:
    """flower_memory_max (0 = derived from flower_max_tasks) as the unit's ceiling."""
    max_mib = memory_max or derived_max_mib(max_tasks)
    return Ceiling(max_mib, math.floor(max_mib * HIGH_SHARE), derived=not memory_max)
