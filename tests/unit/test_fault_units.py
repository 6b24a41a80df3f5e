"""The facts behind the fault handling, on canned host output (no lab)."""

from __future__ import annotations

from flowerbed.flower import StaleService
from flowerbed.verify import StateSaved

STARTED = "ExecMainStartTimestamp=Mon 2026-11-23 23:27:44.848189 UTC"
BEFORE, AFTER = "1795476464.000000000", "1795476465.000000000"  # the start is at ...464.848


def stale(*lines: str) -> dict:
    return StaleService().process(list(lines))


def test_a_service_older_than_its_inputs_is_stale():
    assert stale("NeedDaemonReload=no", "MainPID=42", STARTED, BEFORE, BEFORE) == {
        "reload": False, "restart": False
    }  # fmt: skip
    assert stale("NeedDaemonReload=no", "MainPID=42", STARTED, BEFORE, AFTER)["restart"]


def test_a_unit_file_systemd_has_not_loaded_needs_a_reload_and_a_restart():
    assert stale("NeedDaemonReload=yes", "MainPID=42", STARTED, BEFORE) == {
        "reload": True, "restart": True
    }  # fmt: skip


def test_a_stopped_service_is_not_stale():
    assert stale("NeedDaemonReload=no", "MainPID=0", "ExecMainStartTimestamp=", AFTER) == {
        "reload": False, "restart": False
    }  # fmt: skip


def test_state_age_and_fill():
    saved = StateSaved().process(["now=1000", "saved=990", "used= 100%"])
    assert saved == {"age": 10, "used": "100%"}
    assert StateSaved().process(["now=1000", "used=  3%"]) == {"age": None, "used": "3%"}
