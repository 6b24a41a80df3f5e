"""The memory ceiling (issue 21, part 3) on a fresh host: a flood with a ceiling set too low
restarts Flower cleanly, its saved state kept, and verify.py and the alert show it; the default
ceiling holds the same flood.

The flood is benchmarks/flood.py's: the events a worker sends, straight to the broker (the lab's
Redis, database DATABASE, which no other Flower reads). The lab's hosts have no memory
controller, so MemoryMax is not enforced here: the watchdog inside Flower is what restarts it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import REPO, Lab
from deploy_helpers import run_deploy
from polling import until

from flowerbed import memory
from flowerbed.probe import https_get

sys.path.insert(0, str(REPO / "benchmarks"))
from flood import Flood  # noqa: E402

pytestmark = pytest.mark.lab

DATABASE = 9  # the lab's hosts use 0, benchmarks/flood.py 7, test_instances 11
LOW = "96M"
PAYLOAD = 1024  # characters of each task's args, kwargs and result
UNIT = "flower.service"
RECORD = memory.record_path("/var/lib/flower")
WATCHDOG_LINE = re.compile(r"flowerbed memory watchdog: resident .* restarting it")
VALUE = re.compile(r"^(flowerbed_flower_[a-z_]+) ([0-9.e+]+)$", re.M)
EVENTS = re.compile(r"^flower_events_total\{[^}]*\} ([0-9.e+]+)$", re.M)


class Host:
    def __init__(self, lab: Lab, found: dict):
        self.lab, self.name, self.fqdn = lab, found["name"], found["fqdn"]
        self.ca = lab.state["acme"]["root"]
        self.env = {"FLOWERBED_BROKER_URL": self.broker}

    @property
    def broker(self) -> str:
        url = urlsplit(self.lab.secrets["FLOWERBED_BROKER_URL"])
        return urlunsplit(url._replace(path=f"/{DATABASE}"))

    def deploy(self, data: dict, **kwargs):
        return run_deploy([self.name], {"flower_healthcheck_min_workers": 0, **data},
                          env=self.env, **kwargs)  # fmt: skip

    def sh(self, script: str) -> str:
        return self.lab.ssh(self.name, script, check=True).stdout

    def main_pid(self) -> int:
        return int(self.sh(f"systemctl show --property=MainPID --value {UNIT}").strip())

    def watchdog_lines(self) -> list[str]:
        journal = self.sh(f"journalctl --unit={UNIT} --output=cat --no-pager")
        return [line for line in journal.splitlines() if WATCHDOG_LINE.search(line)]

    def metrics(self) -> dict[str, float] | None:
        """flowerbed's values on Flower's /metrics (the lab machine is a monitoring source),
        with the sum of flower_events_total as "events"."""
        answer = https_get(self.fqdn, "/metrics", ca_bundle=self.ca, timeout=30)
        if answer.status != 200:
            return None
        values = {name: float(value) for name, value in VALUE.findall(answer.body)}
        values["events"] = sum(float(value) for value in EVENTS.findall(answer.body))
        return values

    def task_ids(self) -> set[str] | None:
        answer = https_get(self.fqdn, "/api/tasks", ca_bundle=self.ca,
                           login=self.lab.dashboard_login, timeout=60)  # fmt: skip
        return set(answer.json()) if answer.status == 200 else None

    def flood(self, tasks: int) -> None:
        """`tasks` tasks' events; returns once Flower has handled them all."""
        before = (self.metrics() or {}).get("events", 0)
        Flood(self.broker, tasks, rate=1000, payload=PAYLOAD).run()
        until(lambda: ((self.metrics() or {}).get("events", 0) - before) >= 3 * tasks, 180,
              f"Flower handling the {tasks} tasks' events")  # fmt: skip


@pytest.fixture(scope="module")
def flower_host(lab: Lab, module_hosts) -> Host:
    return Host(lab, module_hosts(prefix="mem"))


def test_a_ceiling_too_low_restarts_flower_cleanly_with_its_state(flower_host: Host, tmp_path):
    host = flower_host
    deployed = host.deploy({"flower_memory_max": LOW})
    assert deployed.ok, deployed.explain()
    unit = host.sh(f"systemctl cat {UNIT}")
    limit = memory.ceiling(LOW, 100_000)
    assert f"MemoryMax={limit.max_bytes}\n" in unit and f"MemoryHigh={limit.high_bytes}\n" in unit
    before = until(host.metrics, 60, "Flower's /metrics")
    assert before["flowerbed_flower_memory_max_bytes"] == 96 * 1024**2
    assert before["flowerbed_flower_memory_restarts_total"] == 0
    first_pid = host.main_pid()

    host.flood(500)  # under the ceiling: kept, and saved at the restart
    known = host.task_ids()
    assert known and len(known) >= 500
    assert host.main_pid() == first_pid and not host.watchdog_lines()

    Flood(host.broker, 3000, rate=1000, payload=PAYLOAD).run()  # over it
    until(lambda: host.main_pid() not in (0, first_pid), 240, "Flower restarted")
    after = until(host.metrics, 120, "Flower's /metrics after the restart")
    shown = until(host.task_ids, 120, "Flower's tasks after the restart")

    lines = host.watchdog_lines()
    record = json.loads(host.sh(f"cat {RECORD}"))
    print(f"restarted at {record['at'] / 1024**2:.1f} MiB: {lines}")
    assert len(lines) == 1 and record["restarts"] == 1
    assert "status=75/TEMPFAIL" in host.sh(f"journalctl --unit={UNIT} --no-pager")
    assert host.sh(f"systemctl is-active {UNIT} || true").strip() == "active"
    assert known <= shown, f"{len(known - shown)} tasks known before the restart are lost"
    assert after["flowerbed_flower_memory_restarts_total"] == 1
    assert after["flowerbed_flower_memory_last_restart_timestamp_seconds"] == record["last"]
    assert after["flowerbed_flower_memory_max_bytes"] == 96 * 1024**2
    assert after["flowerbed_flower_resident_memory_bytes"] > 50 * 1024**2
    restart_alert_fires(host.fqdn, before, after, tmp_path)

    summary = tmp_path / "verify.json"
    verified = host.deploy({"flower_memory_max": LOW, "flower_verify_summary_file": str(summary)},
                           flags=("-y",), deploy_file="verify.py")  # fmt: skip
    layer = json.loads(summary.read_text())["hosts"][host.name]["layers"]["memory"]
    assert not layer["ok"] and "restarted Flower" in layer["problem"], verified.explain()
    assert "memory: the memory watchdog restarted Flower" in verified.stdout + verified.log

    again = host.deploy({"flower_memory_max": LOW})
    assert again.ok and again.totals["success"] == 0, again.explain()


def restart_alert_fires(fqdn: str, before: dict, after: dict, tmp_path: Path) -> None:
    """FlowerRestartedAtMemoryCeiling, in promtool, on the restart counts scraped before and
    after the flood (the rules the repository ships)."""
    counts = [before["flowerbed_flower_memory_restarts_total"],
              after["flowerbed_flower_memory_restarts_total"]]  # fmt: skip
    labels = f'job="flower", instance="{fqdn}"'
    case = {
        "rule_files": [str(REPO / "monitoring" / "flowerbed.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{
                "series": f"flowerbed_flower_memory_restarts_total{{{labels}}}",
                "values": f"{counts[0]:g}x10 {counts[1]:g}x30",
            }],
            "alert_rule_test": [{
                "eval_time": "15m",
                "alertname": "FlowerRestartedAtMemoryCeiling",
                "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "job": "flower", "instance": fqdn},
                    "exp_annotations": {
                        "summary": f"Flower on {fqdn} was restarted at its memory ceiling",
                        "description": "Its saved state was kept. Raise flower_memory_max or "
                        "lower flower_max_tasks; verify.py's memory layer shows the restart.",
                    },
                }],
            }],
        }],
    }  # fmt: skip
    cases = tmp_path / "memory.test.yml"
    cases.write_text(json.dumps(case))  # JSON is YAML
    checked = subprocess.run(["promtool", "test", "rules", str(cases)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_default_ceiling_holds_the_same_flood(flower_host: Host):
    host = flower_host
    data = {"flower_max_tasks": 8000}  # the default ceiling: 128 MiB + 24 KiB a task
    deployed = host.deploy(data)
    assert deployed.ok, deployed.explain()
    limit = memory.ceiling("", 8000)
    until(lambda: (host.metrics() or {}).get("flowerbed_flower_memory_max_bytes")
          == limit.max_bytes, 60, "the default ceiling on /metrics")  # fmt: skip
    pid, lines = host.main_pid(), host.watchdog_lines()

    host.flood(8000)
    found = host.metrics()
    resident = found["flowerbed_flower_resident_memory_bytes"]
    print(f"resident {resident / 1024**2:.1f} MiB of {limit.max_bytes / 1024**2:.1f} MiB")
    assert resident < memory.NEAR_SHARE * limit.max_bytes
    assert host.main_pid() == pid and host.watchdog_lines() == lines
    assert found["flowerbed_flower_memory_restarts_total"] == 1  # the first test's, kept
