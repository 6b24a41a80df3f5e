"""The verify run's fleet report: each host's verdict per layer, as verify.py's checks record
them (flowerbed.verify, flowerbed.monitoring_verify), and the fleet's table (stdout; stderr with
--json) and JSON summary (flower_verify_summary_file). Nothing here asks a host anything.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyinfra import host

from .probe import OperatorChecks


@dataclass
class Verdict:
    ok: bool
    value: object = None  # what was found (a score, a count, days left), for the table/JSON
    problem: str = ""


@dataclass
class HostReport:
    layers: dict[str, Verdict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(verdict.ok for verdict in self.layers.values())

    @property
    def problems(self) -> list[str]:
        return [f"{layer}: {v.problem}" for layer, v in self.layers.items() if not v.ok]


LAYERS = (
    "unit", "socket", "nginx", "nginx_config", "https", "certificate", "renewal", "firewall",
    "sandbox", "state", "memory", "workers", "failed_tasks", "stuck_tasks", "queues", "registered",
    "site_include",  # inside the operator's site only
    "targets", "rules", "delivery",  # the monitoring host only (flowerbed/monitoring_verify.py)
)  # fmt: skip
_fleet: dict[str, HostReport] = {}


def host_report(name: str) -> HostReport:
    """The verdicts recorded for host `name` (none yet: an empty report)."""
    return _fleet.get(name, HostReport())


def layer(name: str, ok: bool, value: object = None, problem: str = "") -> None:
    """The current host's verdict for layer `name`."""
    _fleet.setdefault(host.name, HostReport()).layers[name] = Verdict(ok, value, problem)


UNCHECKED = "not checked: the host failed before its checks (unreachable?)"
COLUMNS = (
    ("host", None), ("unit", "unit"), ("socket", "socket"), ("nginx", "nginx"),
    ("nginx -t", "nginx_config"), ("https", "https"), ("cert days", "certificate"),
    ("renewal", "renewal"), ("firewall", "firewall"), ("sandbox", "sandbox"),
    ("state", "state"), ("memory", "memory"), ("workers on/off", "workers"),
    ("failed 1h", "failed_tasks"), ("stuck", "stuck_tasks"), ("max queue", "queues"),
    ("registered", "registered"), ("in site", "site_include"), ("targets", "targets"),
    ("rules", "rules"), ("delivery", "delivery"), ("instances", "instances"), ("verdict", None),
)  # fmt: skip


def fleet_summary(names: list[str]) -> dict:
    hosts = {}
    for name in names:
        report = _fleet.get(name)
        if report is None:
            hosts[name] = {"ok": False, "problems": [UNCHECKED], "layers": {}}
            continue
        hosts[name] = {
            "ok": report.ok,
            "problems": report.problems,
            "layers": {
                k: {"ok": v.ok, "value": v.value, "problem": "" if v.ok else v.problem}
                for k, v in report.layers.items()
            },
        }
    return {
        "ok": all(h["ok"] for h in hosts.values()),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hosts": hosts,
    }


def fleet_table(summary: dict) -> str:
    rows = [[title for title, _ in COLUMNS]]
    for name, report in summary["hosts"].items():
        row = [name]
        for _, key in COLUMNS[1:-1]:
            verdict = report["layers"].get(key)
            if verdict is None:
                row.append("-")
                continue
            value = verdict["value"]
            if verdict["ok"]:
                shown = "ok" if value in (None, "ok", 200, "current") else value
            else:
                shown = value if value is not None and len(str(value)) <= 16 else "FAIL"
            row.append(f"{shown}{'' if verdict['ok'] else ' !'}")
        row.append("OK" if report["ok"] else "PROBLEM")
        rows.append([str(cell) for cell in row])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for name, report in summary["hosts"].items():
        lines += [f"{name}: {problem}" for problem in report["problems"]]
    return "\n".join(lines) + "\n"


def print_fleet(names: list[str], checks: OperatorChecks) -> None:
    summary = fleet_summary(names)
    table = fleet_table(summary)
    out = sys.stderr if "--json" in sys.argv else sys.stdout  # --json owns stdout
    out.write("\n" + table)
    out.flush()
    if checks.summary_file:
        path = Path(checks.summary_file)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        os.replace(staging, path)
