"""Flower's memory ceiling (flowerbed/memory.py): the default derived from flower_max_tasks with
the cost per task benchmarks/flood.py measured, flower_memory_max's override and its check, and
the unit that carries it (MemoryHigh/MemoryMax, OOMPolicy, Restart), checked by systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from settings_helpers import error_for, settings_with

from flowerbed.flower import flower_unit_text
from flowerbed.memory import IDLE_MIB, MINIMUM_MIB, PER_TASK_KIB, SAFETY, ceiling, derived_max_mib

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "docs" / "benchmarks.md"


def test_the_cost_per_task_is_the_flood_benchmarks():
    """The recorded run: RSS before the flood and its peak with flower_max_tasks=20000."""
    text = BENCHMARKS.read_text()
    assert "`flower_max_tasks=20000`" in text
    found = re.search(r"RSS: before ([\d.]+) MiB, peak ([\d.]+) MiB", text)
    assert found, "docs/benchmarks.md no longer records the flood's RSS"
    idle, peak = float(found[1]), float(found[2])
    measured_kib = (peak - idle) * 1024 / 20_000
    assert idle <= IDLE_MIB < idle + 1
    assert measured_kib <= PER_TASK_KIB < measured_kib + 1  # 8.55 KiB, rounded up
    # the measured peak sits at half the derived ceiling: a sane Flower never reaches it
    assert derived_max_mib(20_000) >= SAFETY * peak


@pytest.mark.parametrize(
    ("max_tasks", "max_mib", "high_mib"),
    [(1, 119, 107), (10_000, 294, 264), (20_000, 470, 423), (100_000, 1876, 1688)],
)
def test_the_derived_ceiling(max_tasks: int, max_mib: int, high_mib: int):
    found = ceiling(0, max_tasks)
    assert (found.max_mib, found.high_mib, found.derived) == (max_mib, high_mib, True)
    assert max_mib == -(-SAFETY * (IDLE_MIB * 1024 + max_tasks * PER_TASK_KIB) // 1024)


def test_the_derived_ceiling_grows_with_max_tasks():
    sizes = [derived_max_mib(n) for n in (1, 1000, 10_000, 100_000, 1_000_000)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_an_explicit_ceiling_overrides_the_derived_one():
    settings = settings_with(flower_memory_max=512, flower_max_tasks=20_000)
    unit = flower_unit_text(settings)
    assert "\nMemoryHigh=460M\nMemoryMax=512M\nMemorySwapMax=0\n" in unit
    assert "flowerbed/memory.py): set." in unit


def test_the_default_unit_carries_the_derived_ceiling():
    settings = settings_with(flower_max_tasks=10_000)
    assert settings.flower.memory_max == 0
    unit = flower_unit_text(settings)
    assert "\nMemoryHigh=264M\nMemoryMax=294M\n" in unit
    assert "derived from flower_max_tasks" in unit


def test_a_restart_at_the_ceiling_keeps_the_saved_state():
    """An OOM kill is Result=oom-kill, a failure: Restart=on-failure starts Flower again, and
    the state it loads is the last periodic save (on by default)."""
    settings = settings_with()
    unit = flower_unit_text(settings)
    assert "\nRestart=on-failure\n" in unit and "\nOOMPolicy=stop\n" in unit
    assert settings.options.persistent and 0 < settings.options.state_save_interval <= 60_000


@pytest.mark.parametrize("value", [1, 50, MINIMUM_MIB - 1])
def test_a_ceiling_below_an_idle_flower_is_refused_naming_the_key(value: int):
    message = error_for(flower_memory_max=value)
    assert "flower_memory_max" in message
    assert f"{value} MiB is below what an idle Flower uses ({IDLE_MIB} MiB" in message
    assert f"a MiB value from {MINIMUM_MIB} up" in message


@pytest.mark.parametrize("value", [-1, "512M", 1.5, None])
def test_a_ceiling_that_is_not_a_mib_count_is_refused(value):
    assert "flower_memory_max" in error_for(flower_memory_max=value)


def test_the_lowest_ceiling_allowed_loads():
    assert settings_with(flower_memory_max=MINIMUM_MIB).flower.memory_max == MINIMUM_MIB


def analyze_verify(tmp_path: Path, text: str) -> list[str]:
    """systemd-analyze verify's complaints about a rendered unit, but the one about the venv's
    celery, which exists only on a deployed host."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (package systemd)"
    path = tmp_path / "flower.service"
    path.write_text(text)
    run = subprocess.run(
        [analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, check=False
    )
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line and "bin/celery is not executable" not in line]


def test_systemd_parses_the_ceiling_of_the_rendered_unit(tmp_path: Path):
    unit = flower_unit_text(settings_with(flower_max_tasks=20_000))
    assert analyze_verify(tmp_path, unit) == []
    broken = unit.replace("MemoryMax=470M", "MemoryMax=470 MiB").replace(
        "OOMPolicy=stop", "OOMPolicy=stopp"
    )
    complaints = "\n".join(analyze_verify(tmp_path, broken))
    assert "Invalid memory limit '470 MiB'" in complaints  # the check can fail
    assert "Failed to parse OOM policy" in complaints


# --- verify.py's memory layer ------------------------------------------------------------------

MIB = 2**20


def shown(lines: list[str]):
    from flowerbed.verify import MemoryUse, memory_verdict

    return memory_verdict(MemoryUse().process(lines))


def test_the_memory_layer_reads_systemctl_and_the_journal():
    from flowerbed.verify import MemoryUse

    text = str(MemoryUse().command("flower.service"))
    assert "systemctl show flower.service --property=MemoryCurrent,MemoryMax,NRestarts" in text
    assert "journalctl --unit flower.service --since=-24h" in text
    assert "grep -cF 'Failed with result '\"'\"'oom-kill'\"'\"''" in text


def test_the_memory_layer_passes_under_the_ceiling():
    verdict = shown([f"MemoryCurrent={100 * MIB}", f"MemoryMax={470 * MIB}", "NRestarts=0",
                     "OOMKills=0"])  # fmt: skip
    assert verdict.ok and verdict.value == "100/470 MiB"


def test_the_memory_layer_fails_near_the_ceiling():
    verdict = shown([f"MemoryCurrent={430 * MIB}", f"MemoryMax={470 * MIB}", "OOMKills=0"])
    assert not verdict.ok and verdict.value == "430/470 MiB"
    assert "uses 430 of its 470 MiB ceiling" in verdict.problem


def test_the_memory_layer_reports_a_kill_at_the_ceiling():
    verdict = shown(["MemoryCurrent=[not set]", f"MemoryMax={80 * MIB}", "NRestarts=2",
                     "OOMKills=2"])  # fmt: skip
    assert not verdict.ok and verdict.value == "oom-kill x2"
    assert "killed Flower at its 80 MiB ceiling 2 time(s)" in verdict.problem
    assert "restarted it 2 time(s)" in verdict.problem


def test_the_memory_layer_fails_a_unit_without_a_ceiling():
    verdict = shown(["MemoryCurrent=1", "MemoryMax=infinity", "OOMKills=0"])
    assert not verdict.ok and "no MemoryMax: run the deploy" in verdict.problem
    assert not shown([]).ok  # a host never deployed
