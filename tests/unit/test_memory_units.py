"""The memory ceiling (flowerbed/memory.py) and its watchdog (flowerbed/memory_watchdog.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from settings_helpers import error_for, settings_with

from flowerbed import flower, memory, memory_watchdog
from flowerbed.verify import MemoryUse

MIB = 1024**2
WATCHDOG = Path(memory_watchdog.__file__)


def test_the_default_is_128_mib_plus_24_kib_a_task():
    assert memory.default_max(100_000) == 128 * MIB + 100_000 * 24 * 1024  # 2,472 MiB
    assert round(memory.default_max(100_000) / MIB) == 2472
    assert round(memory.default_max(10_000) / MIB) == 362
    assert memory.ceiling("", 10_000) == memory.Ceiling(memory.default_max(10_000), True)
    assert memory.ceiling("2G", 10_000) == memory.Ceiling(2 * 1024**3, False)


def test_the_unit_gets_memory_high_and_max_in_bytes():
    settings = settings_with(flower_memory_max="96M")
    unit = flower.unit_text(
        settings.flower, ceiling=flower.memory_ceiling(settings.flower, settings.options)
    )
    assert "\nMemoryHigh=95630131\nMemoryMax=100663296\n" in unit
    default = settings_with(flower_max_tasks=10_000)
    unit = flower.unit_text(
        default.flower, ceiling=flower.memory_ceiling(default.flower, default.options)
    )
    assert f"\nMemoryMax={128 * MIB + 10_000 * 24 * 1024}\n" in unit


@pytest.mark.parametrize("value", ["", "64M", "96M", "2G", "1T", "65536K"])
def test_memory_max_takes_sizes_from_64m_to_1t(value):
    assert settings_with(flower_memory_max=value).flower.memory_max == value


def test_bad_memory_max_values_are_named_with_the_fix():
    for value, problem in [
        ("32M", "below 64M"),
        ("2T", "above 1T"),
        ("1.5G", "is not a size"),
        ("512MB", "is not a size"),
        ("512m", "is not a size"),
        (" 512M", "is not a size"),
        (512, "is not a string"),
    ]:
        message = error_for(flower_memory_max=value)
        assert "flower_memory_max" in message and problem in message, message
        assert "'512M'" in message  # the fix: a size like '512M'


def test_memory_max_errors_come_with_the_others():
    message = error_for(flower_memory_max="lots", flower_max_tasks=0)
    assert "flower_memory_max" in message and "flower_max_tasks" in message


def config_for(tmp_path: Path, max_bytes: int, socket: str = "") -> Path:
    """flowerconfig.py as flowerbed renders it, with the watchdog at this checkout's file."""
    settings = settings_with()
    text = flower.config_text(settings.flower, settings.options)
    assert text.endswith(flower.hooks_block(settings.flower, settings.options))
    path = tmp_path / "flowerconfig.py"
    block = memory.config_block(
        memory.Ceiling(max_bytes, False), str(path), str(tmp_path), socket, 1
    )
    text = text.removesuffix(flower.hooks_block(settings.flower, settings.options)) + block
    text = text.replace(memory.watchdog_path(str(tmp_path)), str(WATCHDOG))
    path.write_text(text)
    return path


def read_config(path: Path) -> dict:
    """As tornado's parse_config_file reads it."""
    config = {"__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), config, config)
    return config


def test_a_tool_reading_flowerconfig_starts_nothing_and_sees_only_flowers_options(tmp_path):
    config = read_config(config_for(tmp_path, 64 * MIB))
    names = {name for name in config if not name.startswith("__")}
    assert names == {name for name, _ in flower.flower_config_values(*options())}
    assert "flowerbed_memory_watchdog" not in sys.modules


def options():
    settings = settings_with()
    return settings.flower, settings.options


# A stand-in for Flower: reads its --conf as tornado does, registers its state save at exit as
# Flower does (after the config is read), and on SIGTERM exits 0, as Flower's handler does.
# Then it leaks, up to argv[4] MiB.
FAKE_FLOWER = """
import atexit, signal, sys, time
conf = sys.argv[1].removeprefix("--conf=")
config = {"__file__": conf}
exec(compile(open(conf).read(), conf, "exec"), config, config)
def save():
    time.sleep(0.5)
    open(sys.argv[2], "w").write("saved")
atexit.register(save)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
open(sys.argv[3], "w").close()  # the socket, bound
leak = []
for _ in range(120):  # a leak: 4 MiB more every 0.25 s, up to its size
    if len(leak) < int(sys.argv[4]):
        leak += [b"x" * 1024 * 1024 for _ in range(4)]
    time.sleep(0.25)
"""


def fake_flower(tmp_path: Path, max_bytes: int, hog_mib: int) -> subprocess.CompletedProcess:
    socket, saved = tmp_path / "flower.sock", tmp_path / "saved"
    conf = config_for(tmp_path, max_bytes, str(socket))
    script = tmp_path / "fake_flower.py"
    script.write_text(textwrap.dedent(FAKE_FLOWER))
    return subprocess.run(
        [sys.executable, str(script), f"--conf={conf}", str(saved), str(socket), str(hog_mib)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_over_the_ceiling_flower_saves_its_state_then_exits_75(tmp_path):
    started = time.time()
    done = fake_flower(tmp_path, 80 * MIB, hog_mib=100)
    assert done.returncode == memory_watchdog.EXIT_RESTART, done.stderr
    assert (tmp_path / "saved").read_text() == "saved"  # Flower's save ran first
    record = json.loads((tmp_path / memory.RECORD_FILE).read_text())
    assert record["restarts"] == 1 and record["last"] >= started and record["at"] > 72 * MIB
    restarts = [line for line in done.stderr.splitlines() if "restarting it" in line]
    assert len(restarts) == 1 and "flowerbed memory watchdog: resident" in restarts[0]


def test_the_restarts_add_up_in_the_record(tmp_path):
    memory_watchdog.count_restart(str(tmp_path / "r.json"), 10, 1.0)
    assert memory_watchdog.count_restart(str(tmp_path / "r.json"), 20, 2.0) == {
        "restarts": 2, "last": 2.0, "at": 20,
    }  # fmt: skip


def test_a_flower_over_80_percent_right_after_start_is_not_restarted_in_that_run():
    dog = memory_watchdog.Watchdog(100, "/nonexistent", "", 1)
    assert dog.decide(99, bound=False) == "wait"
    assert dog.decide(85, bound=True) == "keep"
    assert dog.decide(99, bound=True) == "ok"
    armed = memory_watchdog.Watchdog(100, "/nonexistent", "", 1)
    assert [armed.decide(n, bound=True) for n in (50, 90, 91)] == ["ok", "ok", "restart"]


def test_the_memory_fact_reads_the_resident_size_and_the_record():
    fact = MemoryUse()
    found = fact.process(["resident=89300", '{"restarts": 2, "last": 1.5, "at": 9}'])
    assert found == {"resident": 89300 * 1024, "restarts": 2, "last": 1.5, "at": 9}
    assert fact.process([]) == {}


def test_verify_reports_a_recent_restart_and_memory_near_the_ceiling():
    limit = memory.Ceiling(100 * MIB, False)
    now = 10_000.0
    ok, value, problem = memory.verdict(limit, {"resident": 40 * MIB}, now)
    assert (ok, value) == (True, "40%")
    ok, value, problem = memory.verdict(
        limit, {"resident": 60 * MIB, "restarts": 1, "last": now - 60, "at": 91 * MIB}, now
    )
    assert not ok and value == "60% 1r"
    assert "the memory watchdog restarted Flower" in problem and "91.0 MiB" in problem
    ok, _, problem = memory.verdict(limit, {"resident": 85 * MIB}, now)
    assert not ok and "85%" in problem and "flower_memory_max" in problem
    assert memory.verdict(limit, {"restarts": 1, "last": now - 7200}, now)[0]
