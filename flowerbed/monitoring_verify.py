"""verify.py's layers for the monitoring host: every target up, flowerbed's rules loaded, and
Alertmanager's deliveries not failing. Read on the host from Prometheus (127.0.0.1 only), which
also scrapes Alertmanager's own counters; recorded with the host's other layers."""

from __future__ import annotations

import json

from pyinfra import host, state
from pyinfra.api import FactBase, StringCommand, operation

from .fleet_report import layer
from .monitoring import PROMETHEUS_PORT
from .shell import command
from .verify import _fact

API = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1"
DELIVERY_WINDOW = "15m"
RULE_GROUPS = ("flowerbed-celery", "flowerbed-flower")
QUERIES = (
    f"sum(increase(alertmanager_notifications_failed_total[{DELIVERY_WINDOW}]))",
    f"sum(increase(alertmanager_notifications_total[{DELIVERY_WINDOW}]))",
)


class MonitoringState(FactBase):
    """Prometheus' answers, one JSON document a line: targets, rules, then QUERIES."""

    def command(self) -> StringCommand:
        curl = ["curl", "-sS", "--max-time", "10", "-G"]
        parts = [command(*curl, f"{API}/targets", "--data-urlencode", "state=active")]
        parts.append(command(*curl, f"{API}/rules"))
        parts += [command(*curl, f"{API}/query", "--data-urlencode", f"query={q}") for q in QUERIES]
        joined = []
        for part in parts:
            joined += [part, "; echo;"]
        return StringCommand(*joined)

    def process(self, output: list[str]) -> list[dict]:
        answers = []
        for line in output:
            try:
                answers.append(json.loads(line))
            except ValueError:
                answers.append({})
        return answers


def scalar(answer: dict) -> float | None:
    result = answer.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


def monitoring_verdicts(answers: list[dict]) -> dict[str, tuple[bool, object, str]]:
    """{layer: (ok, value, problem)} from MonitoringState's answers."""
    targets_answer, rules_answer, failed_answer, sent_answer = (answers + [{}] * 4)[:4]
    targets = targets_answer.get("data", {}).get("activeTargets", [])
    down = [f"{t['labels'].get('job')}/{t['labels'].get('instance')}" for t in targets
            if t.get("health") != "up"]  # fmt: skip
    groups = {g["name"]: g for g in rules_answer.get("data", {}).get("groups", [])}
    broken = [
        rule["name"]
        for name in RULE_GROUPS
        for rule in groups.get(name, {}).get("rules", [])
        if rule.get("health") not in ("ok", "unknown")
    ]
    missing = [name for name in RULE_GROUPS if name not in groups]
    failed, sent = scalar(failed_answer), scalar(sent_answer)
    return {
        "targets": (
            bool(targets) and not down,
            f"{len(targets) - len(down)}/{len(targets)} up",
            f"down: {', '.join(down)}" if down else "Prometheus answers with no target",
        ),
        "rules": (
            bool(groups) and not missing and not broken,
            "loaded" if groups and not missing and not broken else "FAIL",
            f"rule groups not loaded: {', '.join(missing)}"
            if missing
            else f"rules failing: {', '.join(broken)}"
            if broken
            else "Prometheus does not answer",
        ),  # fmt: skip
        "delivery": (
            failed is not None and failed == 0,
            "ok" if failed == 0 else "failing" if failed else "unknown",
            f"Alertmanager failed {failed:.0f} of {sent or 0:.0f} notification(s) in the last "
            f"{DELIVERY_WINDOW} (SMTP login, TLS, the server?): see `journalctl -u "
            "prometheus-alertmanager`"
            if failed
            else "no count of Alertmanager's deliveries (is it running and scraped?)",
        ),
    }


@operation(is_idempotent=True)
def monitoring_checked():
    """The monitoring host: every target up, the rules loaded, deliveries not failing."""
    if not state.is_executing:
        host.noop("the monitoring layers are checked when the run executes")
        return
    for name, (ok, value, problem) in monitoring_verdicts(_fact(MonitoringState) or []).items():
        layer(name, ok, value, problem)
    host.noop("the monitoring layers were checked")
    yield from ()
