"""verify.py's fleet report (flowerbed/fleet_report.py): the table and JSON summary of the
verdicts the checks recorded, one row a host. No lab (the lab's run: tests/lab/test_verify.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from flowerbed import fleet_report
from flowerbed.fleet_report import UNCHECKED, HostReport, Verdict, fleet_summary, fleet_table


@pytest.fixture
def fleet(monkeypatch):
    """h1 healthy, h2 with a failed certificate layer; h3 never checked."""
    monkeypatch.setitem(fleet_report._fleet, "h1", HostReport({"unit": Verdict(True, "ok"),
                        "certificate": Verdict(True, 80)}))  # fmt: skip
    problem = "expires in 3 days"
    monkeypatch.setitem(fleet_report._fleet, "h2", HostReport({"unit": Verdict(True, "ok"),
                        "certificate": Verdict(False, 3, problem)}))  # fmt: skip
    return ["h1", "h2", "h3"]


def test_the_summary_holds_each_hosts_verdicts_and_the_unchecked(fleet):
    summary = fleet_summary(fleet)
    assert not summary["ok"]
    assert summary["hosts"]["h1"] == {
        "ok": True,
        "problems": [],
        "layers": {"unit": {"ok": True, "value": "ok", "problem": ""},
                   "certificate": {"ok": True, "value": 80, "problem": ""}},
    }  # fmt: skip
    assert summary["hosts"]["h2"]["problems"] == ["certificate: expires in 3 days"]
    assert summary["hosts"]["h3"] == {"ok": False, "problems": [UNCHECKED], "layers": {}}


def test_the_table_marks_each_failed_layer_and_lists_the_problems(fleet):
    lines = fleet_table(fleet_summary(fleet)).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert lines[0].split()[:3] == ["host", "unit", "socket"]
    assert rows["h1"][1] == "ok" and rows["h1"][-1] == "OK" and "80" in rows["h1"]
    assert "3" in rows["h2"] and "!" in rows["h2"] and rows["h2"][-1] == "PROBLEM"
    assert rows["h3"][-1] == "PROBLEM"
    assert lines[4:] == ["h2: certificate: expires in 3 days", f"h3: {UNCHECKED}"]


def test_the_summary_file_is_the_json_summary(fleet, tmp_path, capsys):
    path = tmp_path / "summary.json"
    fleet_report.print_fleet(fleet, SimpleNamespace(summary_file=str(path)))
    written = json.loads(path.read_text())
    assert written["hosts"]["h2"]["layers"]["certificate"]["value"] == 3
    assert "PROBLEM" in capsys.readouterr().out
